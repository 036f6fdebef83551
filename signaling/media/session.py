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


@dataclass(frozen=True)
class KnownEndpoint:
    server_url: str
    endpoint_id: str


@dataclass(eq=False)
class ParticipantMedia:
    participant: Participant
    endpoints: dict[Target, KnownEndpoint] = field(default_factory=dict)
    early_candidates: dict[Target, list[dict[str, Any]]] = field(default_factory=dict)

    def remember(self, target: Target, endpoint: KnownEndpoint) -> None:
        self.endpoints[target] = endpoint

    def forget(self, target: Target, endpoint_id: str | None = None) -> None:
        """Forget the endpoint for `target` (only if it is `endpoint_id`, when given) and the
        candidates kept for it."""
        known = self.endpoints.get(target)
        if known is not None and endpoint_id in (None, known.endpoint_id):
            del self.endpoints[target]
        if endpoint_id is None:
            self.early_candidates.pop(target, None)

    def forget_all(self) -> None:
        self.endpoints.clear()
        self.early_candidates.clear()
