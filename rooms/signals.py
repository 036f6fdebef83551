"""A recording's files (and an uploaded video's file) go with its row, however the row goes:
deleted by its owner, in the admin, or with its room or its owner's account (a cascade calls no
service)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from rooms.models import Recording, RoomVideo
from rooms.selectors import recording_directory

logger = logging.getLogger(__name__)


@receiver(post_delete, sender=Recording)
def delete_recording_files(sender: type[Recording], instance: Recording, **kwargs: Any) -> None:
    if not instance.directory:
        return
    directory = recording_directory(instance)

    def remove() -> None:
        shutil.rmtree(directory, ignore_errors=True)
        logger.info("recording %s: files deleted (%s)", instance.pk, directory)

    transaction.on_commit(remove)  # not if the deletion is rolled back


@receiver(post_delete, sender=RoomVideo)
def delete_video_file(sender: type[RoomVideo], instance: RoomVideo, **kwargs: Any) -> None:
    if not instance.file:
        return
    path = Path(settings.RECORDINGS_DIR) / instance.file
    transaction.on_commit(lambda: path.unlink(missing_ok=True))
