"""Writes on recordings: a moderator starts and stops recording the meeting, the media service
adds a track for each stream it records, the composing job says how it went, the owner deletes.

Starting and stopping are a moderator's (signaling.moderation calls them and then has the media
server record); listing, downloading and deleting are the owner's and staff's
(selectors.room_recordings_visible_to). The files are under RECORDINGS_DIR; deleting a recording
deletes them (rooms.signals)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext

from rooms import events
from rooms.models import Participant, Recording, RecordingTrack
from rooms.selectors import recording_directory, recordings_bytes, room_recordings_visible_to
from rooms.services import ActionRefused, _moderated_room  # the moderators' rule, in one place

logger = logging.getLogger(__name__)


def recording_start(*, room_id: int, by_user: AbstractBaseUser) -> Recording:
    """A moderator starts recording the meeting; everyone in the room is told. The caller has
    the media server record every stream (signaling.media.record_room)."""
    room = _moderated_room(room_id=room_id, by_user=by_user, action="record the meeting")
    limit = settings.RECORDINGS_MAX_BYTES_PER_ROOM
    if limit and recordings_bytes(room=room) >= limit:
        raise ActionRefused(
            "quota",
            gettext("This room's recordings fill the space it has: delete some to record again."),
        )
    try:
        with transaction.atomic():
            recording = Recording.objects.create(room=room, started_by=by_user)
            recording.directory = f"{room.pk}/{recording.pk}"
            recording.save(update_fields=["directory"])
    except IntegrityError:
        raise ActionRefused(
            "conflict", gettext("This meeting is already being recorded.")
        ) from None
    _make_directory(recording_directory(recording))
    events.publish_recording_changed(room.pk, recording)
    logger.info("user %s started recording room %s (%s)", by_user.pk, room.pk, recording.pk)
    return recording


def _make_directory(directory: Path) -> None:
    """The recording's directory, made here (so that this user may later write the composed
    file in it and delete it) and writable by the media server, which may run as another user
    (KMS in its container) and writes the per-stream files in it."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)


def recording_stop(*, room_id: int, by_user: AbstractBaseUser | None = None) -> Recording | None:
    """Stop the meeting's recording: a moderator (`by_user`), or the product itself (the room
    emptied, the space ran out). Only one caller stops it; the others get None (or, a moderator,
    a refusal). The caller has the media server finish the files, then composes them."""
    if by_user is not None:
        _moderated_room(room_id=room_id, by_user=by_user, action="stop recording")
    recording = Recording.objects.filter(room_id=room_id, state=Recording.State.RECORDING).first()
    stopped = recording is not None and (
        Recording.objects.filter(pk=recording.pk, state=Recording.State.RECORDING).update(
            state=Recording.State.COMPOSING,
            ended_at=timezone.now(),
            stopped_by=by_user,
        )
        == 1
    )
    if not stopped:
        if by_user is not None:
            raise ActionRefused("not_found", gettext("This meeting is not being recorded."))
        return None
    assert recording is not None
    recording.refresh_from_db()
    events.publish_recording_changed(room_id, None)
    logger.info("recording %s of room %s stopped", recording.pk, room_id)
    return recording


def recording_track_add(
    *, recording_id: int, participant: Participant, source: str
) -> RecordingTrack | None:
    """A stream starts being recorded; None when the recording stopped meanwhile."""
    recording = Recording.objects.filter(pk=recording_id, state=Recording.State.RECORDING).first()
    if recording is None:
        return None
    label = participant.display_name
    if source == "screen":
        label = gettext("%(name)s (screen)") % {"name": label}
    elif source == "playback":
        label = gettext("%(name)s (video)") % {"name": label}
    track = RecordingTrack.objects.create(
        recording=recording,
        participant=participant,
        label=label,
        source=source,
        file="",
        started_at=timezone.now(),
    )
    track.file = f"{recording.directory}/{track.pk}-{participant.pk}-{source}.webm"
    track.save(update_fields=["file"])
    return track


def recording_track_end(*, track_id: int) -> None:
    RecordingTrack.objects.filter(pk=track_id, ended_at__isnull=True).update(
        ended_at=timezone.now()
    )


def recording_composed(*, recording_id: int, file: str, size: int, duration: float) -> None:
    """The composing job made the file people download."""
    Recording.objects.filter(pk=recording_id).update(
        state=Recording.State.READY, file=file, size=size, duration=duration, error=""
    )
    logger.info("recording %s ready: %s, %d bytes, %.1f s", recording_id, file, size, duration)


def recording_failed(*, recording_id: int, error: str, size: int = 0) -> None:
    Recording.objects.filter(pk=recording_id).update(
        state=Recording.State.FAILED, error=error[:2000], size=size
    )
    logger.error("recording %s failed: %s", recording_id, error)


def recording_delete(*, recording: Recording, by_user: AbstractBaseUser) -> None:
    """The room's owner (or staff) deletes a recording and its files. A running one is stopped
    first by the caller; here it is refused."""
    if not room_recordings_visible_to(room=recording.room, user=by_user):
        raise ActionRefused("forbidden", gettext("Only the room's owner can do that."))
    if recording.state == Recording.State.RECORDING:
        raise ActionRefused("conflict", gettext("Stop the recording before deleting it."))
    recording.delete()  # its files go too (rooms.signals)
    logger.info("user %s deleted recording %s", by_user.pk, recording.pk)


__all__ = [
    "recording_composed",
    "recording_delete",
    "recording_failed",
    "recording_start",
    "recording_stop",
    "recording_track_add",
    "recording_track_end",
]
