"""The job that turns a stopped recording's per-stream files into the one file its owner
downloads (`rooms.composition` does the pictures and the sound), and says how it went.

It runs in a thread of the worker that stopped the recording (signaling.media.recording); a
recording left `composing` by a worker that died is composed again by
`manage.py compose_recordings`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from rooms import services
from rooms.models import Recording
from rooms.selectors import directory_bytes, recording_directory

logger = logging.getLogger(__name__)

OUTPUT_NAME = "meeting.mp4"


def compose_recording(recording_id: int) -> None:
    from rooms import composition  # PyAV and numpy: loaded by the job, not by every page

    recording = Recording.objects.filter(pk=recording_id).first()
    if recording is None or recording.state != Recording.State.COMPOSING:
        return  # deleted meanwhile, or composed by someone else
    root = Path(settings.RECORDINGS_DIR)
    tracks = [
        composition.Track(
            path=root / track.file,
            offset=max(0.0, (track.started_at - recording.started_at).total_seconds()),
            label=track.label,
            screen=track.source in ("screen", "playback"),  # the largest cells
        )
        for track in recording.tracks.all()
        if (root / track.file).is_file()
    ]
    directory = recording_directory(recording)
    try:
        if not tracks:
            raise composition.CompositionError("Nothing was recorded.")
        composed = composition.compose(tracks, directory / OUTPUT_NAME)
    except composition.CompositionError as error:
        services.recording_failed(
            recording_id=recording_id, error=str(error), size=directory_bytes(directory)
        )
        return
    # Readable by the web server that sends it (nginx runs as another user).
    composed.path.chmod(0o644)
    # The composed file is what people keep: the per-stream files would double the space.
    for track in tracks:
        track.path.unlink(missing_ok=True)
    services.recording_composed(
        recording_id=recording_id,
        file=f"{recording.directory}/{OUTPUT_NAME}",
        size=directory_bytes(directory),
        duration=composed.duration,
    )


def compose_pending() -> int:
    """Compose every recording left `composing` (its worker died); returns how many."""
    pending = list(
        Recording.objects.filter(state=Recording.State.COMPOSING).values_list("pk", flat=True)
    )
    for recording_id in pending:
        logger.info("composing recording %s", recording_id)
        compose_recording(recording_id)
    return len(pending)
