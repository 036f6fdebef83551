"""Recording a room's meeting on the media server: one RecorderEndpoint per published stream
(someone's camera and microphone, a shared screen), connected from the publisher's endpoint, so
nothing is decoded or encoded while the meeting runs. Each writes a WebM under
RECORDINGS_MEDIA_DIR (the same directory as RECORDINGS_DIR, as the media server sees it); when
the recording stops, `rooms.composer` makes the one file people download.

The same Kurento calls work on KMS. A stream that starts while the meeting is recorded is
recorded from then on; a stream that ends (its publisher left, stopped sharing, renegotiated)
has its file finished. What a moderator blocked is not recorded either (moderation.block_media
disconnects recorders as it does viewers). Recorder ids are in the database (MediaRecorder), so
any worker can finish any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError
from django.db.models import Exists, OuterRef

from rooms import composer, selectors, services
from rooms.models import Participant, Recording, RecordingTrack
from signaling.kurento import (
    KurentoError,
    MediaPipeline,
    MediaServerUnavailable,
    RecorderEndpoint,
    WebRtcEndpoint,
)
from signaling.media import clients
from signaling.media.session import PLAYBACK, SCREEN, Source
from signaling.models import MediaEndpoint, MediaRecorder

logger = logging.getLogger(__name__)

CONNECTED = Participant.State.CONNECTED

# Composing jobs running in this process, kept referenced until they end.
_composing: set[asyncio.Task[None]] = set()


def _publishing_rows_sync(room_id: int) -> list[MediaEndpoint]:
    return list(
        MediaEndpoint.objects.select_related("pipeline", "owner").filter(
            pipeline__room_id=room_id, publisher__isnull=True, owner__state=CONNECTED
        )
    )


def _publishing_row_sync(participant_id: int, source: Source) -> MediaEndpoint | None:
    return (
        MediaEndpoint.objects.select_related("pipeline", "owner")
        .filter(owner_id=participant_id, publisher__isnull=True, source=source)
        .first()
    )


def _recorder_of_sync(publisher_id: int, source: Source) -> MediaRecorder | None:
    return (
        MediaRecorder.objects.select_related("pipeline")
        .filter(publisher_id=publisher_id, source=source)
        .first()
    )


def _save_recorder_sync(
    row: MediaEndpoint, track: RecordingTrack, recorder_id: str
) -> MediaRecorder | None:
    try:
        return MediaRecorder.objects.create(
            pipeline=row.pipeline,
            track=track,
            publisher=row.owner,
            source=row.source,
            recorder_id=recorder_id,
        )
    except IntegrityError:  # recorded already (another worker was quicker)
        return None


def _forget_recorder_sync(recorder: MediaRecorder) -> None:
    MediaRecorder.objects.filter(pk=recorder.pk).delete()
    services.recording_track_end(track_id=recorder.track_id)


def _blocked(row: MediaEndpoint) -> frozenset[str]:
    """What a moderator blocked of this stream: a screen's sound goes with the microphone."""
    from signaling.media.negotiation import moderator_blocked

    if row.source == PLAYBACK:  # a played video is not its player's camera
        return frozenset()
    blocked = moderator_blocked(row.owner)
    return blocked & {"AUDIO"} if row.source == SCREEN else blocked


async def record_room(*, recording: Recording) -> int:
    """Record every stream published in the room now; returns how many."""
    rows = await database_sync_to_async(_publishing_rows_sync)(recording.room_id)
    recorded = await asyncio.gather(*(_record(recording.pk, row) for row in rows))
    return sum(recorded)


async def record_published(*, participant: Participant, source: Source) -> bool:
    """A participant (re)published a stream: record it if the meeting is being recorded."""
    recording = await database_sync_to_async(selectors.recording_running)(
        room_id=participant.room_id
    )
    if recording is None:
        return False
    row = await database_sync_to_async(_publishing_row_sync)(participant.pk, source)
    return row is not None and await _record(recording.pk, row)


async def _record(recording_id: int, row: MediaEndpoint) -> bool:
    previous = await database_sync_to_async(_recorder_of_sync)(row.owner_id, row.source)
    if previous is not None:  # from an endpoint the publisher replaced: that file is complete
        await _finish(previous)
    track = await database_sync_to_async(services.recording_track_add)(
        recording_id=recording_id, participant=row.owner, source=row.source
    )
    if track is None:  # the recording stopped meanwhile
        return False
    client = clients.media_client(row.pipeline.server_url)
    uri = f"file://{settings.RECORDINGS_MEDIA_DIR.rstrip('/')}/{track.file}"
    try:
        recorder = await MediaPipeline(client, row.pipeline.pipeline_id).create_recorder_endpoint(
            uri=uri
        )
    except (KurentoError, MediaServerUnavailable):
        logger.exception("could not record %s's %s", row.owner_id, row.source)
        await database_sync_to_async(services.recording_track_end)(track_id=track.pk)
        return False
    saved = await database_sync_to_async(_save_recorder_sync)(row, track, recorder.id)
    if saved is None:
        await clients.release_quietly(row.pipeline.server_url, recorder.id)
        await database_sync_to_async(services.recording_track_end)(track_id=track.pk)
        return False
    sender = WebRtcEndpoint(client, row.endpoint_id)
    blocked = await database_sync_to_async(_blocked)(row)
    try:
        for media_type in sorted({"AUDIO", "VIDEO"} - blocked):
            await sender.connect(recorder, media_type)
        await recorder.record()
    except (KurentoError, MediaServerUnavailable):
        logger.exception("could not start recording %s's %s", row.owner_id, row.source)
        await _finish(saved)
        return False
    logger.info("recording %s: %s's %s -> %s", recording_id, row.owner_id, row.source, track.file)
    return True


async def _finish(recorder: MediaRecorder) -> None:
    """Finish a recorder's file and release it (release alone would finish it too, on KMS and
    here; stopAndWait first makes the file complete before anyone reads it)."""
    url = recorder.pipeline.server_url
    # Gone with its pipeline or its server: what it wrote stays playable.
    with contextlib.suppress(KurentoError, MediaServerUnavailable):
        await RecorderEndpoint(clients.media_client(url), recorder.recorder_id).stop_and_wait()
    await clients.release_quietly(url, recorder.recorder_id)
    await database_sync_to_async(_forget_recorder_sync)(recorder)


async def finish_stream(*, publisher_id: int, source: Source) -> None:
    """The publisher stopped sending this stream: its file is complete."""
    recorder = await database_sync_to_async(_recorder_of_sync)(publisher_id, source)
    if recorder is not None:
        await _finish(recorder)


def _recorders_of_sync(recording_id: int) -> list[MediaRecorder]:
    return list(
        MediaRecorder.objects.select_related("pipeline").filter(track__recording_id=recording_id)
    )


def _end_open_tracks_sync(recording_id: int) -> None:
    for track_id in RecordingTrack.objects.filter(
        recording_id=recording_id, ended_at__isnull=True
    ).values_list("pk", flat=True):
        services.recording_track_end(track_id=track_id)


async def stop_recording(*, recording: Recording) -> None:
    """Finish every file of a recording that `services.recording_stop` stopped, then compose
    them in the background (the recording is `composing` until then)."""
    recorders = await database_sync_to_async(_recorders_of_sync)(recording.pk)
    await asyncio.gather(*(_finish(recorder) for recorder in recorders))
    await database_sync_to_async(_end_open_tracks_sync)(recording.pk)
    task = asyncio.create_task(_compose(recording.pk))
    _composing.add(task)
    task.add_done_callback(_composing.discard)


async def _compose(recording_id: int) -> None:
    try:
        await asyncio.to_thread(composer.compose_recording, recording_id)
    except Exception:
        logger.exception("composing recording %s failed", recording_id)


async def composing_done() -> None:
    """Wait for this process's composing jobs (tests, and a clean shutdown)."""
    while _composing:
        await asyncio.gather(*tuple(_composing), return_exceptions=True)


def _departed_recorders_sync(room_id: int) -> list[MediaRecorder]:
    """Recorders whose publisher left, or no longer publishes that source."""
    publishing = MediaEndpoint.objects.filter(
        owner_id=OuterRef("publisher_id"),
        publisher__isnull=True,
        source=OuterRef("source"),
        owner__state=CONNECTED,
    )
    return list(
        MediaRecorder.objects.select_related("pipeline")
        .filter(pipeline__room_id=room_id)
        .exclude(Exists(publishing))
    )


async def finish_departed(room_id: int) -> int:
    """Finish the files of streams whose publisher left however it left (sweeping calls it)."""
    recorders = await database_sync_to_async(_departed_recorders_sync)(room_id)
    for recorder in recorders:
        await _finish(recorder)
    return len(recorders)


def _stop_if_empty_sync(room_id: int) -> Recording | None:
    if Participant.objects.filter(room_id=room_id, state=CONNECTED).exists():
        return None
    return services.recording_stop(room_id=room_id)


async def stop_if_empty(room_id: int) -> None:
    """Nobody is left in the room: its recording stops (sweeping calls it before letting the
    pipeline go)."""
    recording = await database_sync_to_async(_stop_if_empty_sync)(room_id)
    if recording is not None:
        await stop_recording(recording=recording)


def _over_quota_sync(room_id: int) -> Recording | None:
    limit = settings.RECORDINGS_MAX_BYTES_PER_ROOM
    room = selectors.room_by_id(room_id=room_id)
    if not limit or room is None or selectors.recordings_bytes(room=room) < limit:
        return None
    logger.warning("room %s: recordings reached %d bytes; recording stops", room_id, limit)
    return services.recording_stop(room_id=room_id)


async def enforce_quota(room_id: int) -> None:
    """Stop the room's recording once its recordings fill RECORDINGS_MAX_BYTES_PER_ROOM (a
    moderator's connection checks it on its heartbeat)."""
    recording = await database_sync_to_async(_over_quota_sync)(room_id)
    if recording is not None:
        await stop_recording(recording=recording)
