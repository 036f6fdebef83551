"""Reads of the realtime layer: what the room's participants send."""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.models import Participant
from signaling.models import MediaEndpoint


@dataclass
class Published:
    """What the room's connected participants send, by participant id."""

    # Their camera and microphone, with whether each is on.
    cameras: dict[int, dict[str, bool]] = field(default_factory=dict)
    sharing: set[int] = field(default_factory=set)  # a screen
    playing: dict[int, str] = field(default_factory=dict)  # a video, by its title


def published_sync(room_id: int) -> Published:
    """What the room's participants publish now, in one query."""
    rows = MediaEndpoint.objects.filter(
        pipeline__room_id=room_id,
        publisher__isnull=True,
        owner__state=Participant.State.CONNECTED,
    ).values_list("owner_id", "source", "audio_on", "video_on", "label")
    published = Published()
    for owner, source, audio, video, label in rows:
        if source == MediaEndpoint.Source.CAMERA:
            published.cameras[owner] = {"audio": audio, "video": video}
        elif source == MediaEndpoint.Source.SCREEN:
            published.sharing.add(owner)
        elif source == MediaEndpoint.Source.PLAYBACK:
            published.playing[owner] = label
    return published
