"""What one connection knows of its own media: the endpoints it made and the ICE candidates its
browser sent too early. It lives and dies with the connection (the consumer holds it), so
nothing of a participant outlives it in this process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooms.models import Participant

# Candidates a browser may send for an endpoint that does not exist yet: per endpoint, and the
# endpoints it may send them for (a room's worth), so that a connection's memory stays bounded.
EARLY_CANDIDATE_LIMIT = 64
EARLY_TARGET_LIMIT = 64

# Whose media an endpoint carries: None for the participant's own (publishing), else the id
# of the publisher it receives.
Target = int | None
# Which of it: "camera" (camera and microphone), "screen" (a shared screen), or "playback" (a
# video the participant plays into the room: a PlayerEndpoint, see signaling.media.playback).
Source = str
CAMERA: Source = "camera"
SCREEN: Source = "screen"
PLAYBACK: Source = "playback"
# One endpoint of a connection: whose media, and which source.
Stream = tuple[Target, Source]


@dataclass(frozen=True)
class KnownEndpoint:
    server_url: str
    endpoint_id: str


@dataclass(eq=False)
class ParticipantMedia:
    participant: Participant
    endpoints: dict[Stream, KnownEndpoint] = field(default_factory=dict)
    early_candidates: dict[Stream, list[dict[str, Any]]] = field(default_factory=dict)

    def remember(self, stream: Stream, endpoint: KnownEndpoint) -> None:
        self.endpoints[stream] = endpoint

    def forget(self, stream: Stream, endpoint_id: str | None = None) -> None:
        """Forget the endpoint for `stream` (only if it is `endpoint_id`, when given) and the
        candidates kept for it."""
        known = self.endpoints.get(stream)
        if known is not None and endpoint_id in (None, known.endpoint_id):
            del self.endpoints[stream]
        if endpoint_id is None:
            self.early_candidates.pop(stream, None)

    def forget_all(self) -> None:
        self.endpoints.clear()
        self.early_candidates.clear()
