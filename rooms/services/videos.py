"""Writes on the videos a room's owner uploads to play into its meetings (WebM or MP4).

Only the room's owner and staff upload and delete them (selectors.room_recordings_visible_to,
the rule for recordings). An upload is checked with PyAV before it is kept: a container PyAV
reads as WebM/Matroska or MP4, with a video stream. Files live under RECORDINGS_DIR, in the
room's `videos/` directory, so that the media server reads them where it reads recordings;
they count against the room's space (RECORDINGS_MAX_BYTES_PER_ROOM).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import av
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext

from rooms.models import Room, RoomVideo
from rooms.selectors import recordings_bytes, room_recordings_visible_to
from rooms.services import ActionRefused

logger = logging.getLogger(__name__)

# PyAV's names for the containers a PlayerEndpoint plays here, and the extension kept.
_CONTAINERS = {"matroska,webm": ".webm", "mov,mp4,m4a,3gp,3g2,mj2": ".mp4"}


def _probe(path: Path) -> tuple[float, str]:
    """The video's duration in seconds and the extension its file gets; ActionRefused if it is
    not a WebM/MP4 video."""
    refused = ActionRefused(
        "invalid", gettext("That file is not a video this product can play: upload WebM or MP4.")
    )
    try:
        with av.open(str(path)) as container:
            if container.format.name not in _CONTAINERS or not container.streams.video:
                raise refused
            extension = _CONTAINERS[container.format.name]
            if container.duration is not None:
                return container.duration / 1_000_000, extension
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base), extension
            return 0.0, extension
    except (av.FFmpegError, OSError, ValueError):
        raise refused from None


def video_add(
    *, room: Room, by_user: AbstractBaseUser, upload: UploadedFile, title: str = ""
) -> RoomVideo:
    """The room's owner (or staff) uploads a video. Refused if they may not, if it is no WebM
    or MP4 video, if it is larger than ROOM_VIDEO_MAX_BYTES or the room's space is full."""
    if not room_recordings_visible_to(room=room, user=by_user):
        raise ActionRefused("forbidden", gettext("Only the room's owner can do that."))
    if upload.size is not None and upload.size > settings.ROOM_VIDEO_MAX_BYTES:
        raise ActionRefused("too_large", gettext("That video is too large."))
    limit = settings.RECORDINGS_MAX_BYTES_PER_ROOM
    if limit and recordings_bytes(room=room) + (upload.size or 0) > limit:
        raise ActionRefused(
            "quota",
            gettext("This room's recordings and videos fill the space it has: delete some first."),
        )
    directory = Path(settings.RECORDINGS_DIR) / str(room.pk) / "videos"
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".upload-{secrets.token_hex(8)}"
    try:
        with staged.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        duration, extension = _probe(staged)
        name = f"{secrets.token_hex(8)}{extension}"
        staged.rename(directory / name)
    finally:
        staged.unlink(missing_ok=True)
    (directory / name).chmod(0o644)  # the media server may run as another user (KMS)
    shown = (title or Path(upload.name or "").stem or gettext("Video")).strip()[:100]
    video = RoomVideo.objects.create(
        room=room,
        uploaded_by=by_user,
        title=shown,
        file=f"{room.pk}/videos/{name}",
        size=(directory / name).stat().st_size,
        duration=duration,
    )
    logger.info("user %s uploaded video %s to room %s", by_user.pk, video.pk, room.pk)
    return video


def video_delete(*, video: RoomVideo, by_user: AbstractBaseUser) -> None:
    """The room's owner (or staff) deletes an uploaded video and its file."""
    if not room_recordings_visible_to(room=video.room, user=by_user):
        raise ActionRefused("forbidden", gettext("Only the room's owner can do that."))
    video.delete()  # its file goes too (rooms.signals)
    logger.info("user %s deleted video %s", by_user.pk, video.pk)


def video_path(video: RoomVideo) -> Path:
    return Path(settings.RECORDINGS_DIR) / video.file


__all__ = ["video_add", "video_delete", "video_path"]
