"""Reads of the realtime layer: what the room's participants send."""

from __future__ import annotations

from rooms.models import Participant
from signaling.models import MediaEndpoint


def publishing_sync(room_id: int) -> dict[int, dict[str, bool]]:
    """Participants of the room that publish, with whether their audio and video are on."""
    rows = MediaEndpoint.objects.filter(
        pipeline__room_id=room_id,
        publisher__isnull=True,
        owner__state=Participant.State.CONNECTED,
    ).values_list("owner_id", "audio_on", "video_on")
    return {owner: {"audio": audio, "video": video} for owner, audio, video in rows}
