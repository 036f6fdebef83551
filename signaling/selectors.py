"""Reads of the realtime layer: what the room's participants send."""

from __future__ import annotations

from django.db.models import QuerySet

from rooms.models import Participant
from signaling.models import MediaEndpoint


def _publishing(room_id: int, source: str) -> QuerySet[MediaEndpoint]:
    return MediaEndpoint.objects.filter(
        pipeline__room_id=room_id,
        publisher__isnull=True,
        source=source,
        owner__state=Participant.State.CONNECTED,
    )


def publishing_sync(room_id: int) -> dict[int, dict[str, bool]]:
    """Participants of the room that publish their camera and microphone, with whether their
    audio and video are on."""
    rows = _publishing(room_id, MediaEndpoint.Source.CAMERA).values_list(
        "owner_id", "audio_on", "video_on"
    )
    return {owner: {"audio": audio, "video": video} for owner, audio, video in rows}


def sharing_sync(room_id: int) -> set[int]:
    """Participants of the room that share a screen."""
    return set(_publishing(room_id, MediaEndpoint.Source.SCREEN).values_list("owner_id", flat=True))


def playing_sync(room_id: int) -> dict[int, str]:
    """Participants of the room that play a video into it, with its title."""
    rows = _publishing(room_id, MediaEndpoint.Source.PLAYBACK).values_list("owner_id", "label")
    return dict(rows)
