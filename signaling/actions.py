"""One connection's side of a family of actions on the room socket (chat, hands and reactions in
signaling.collaboration; a moderator's in signaling.moderation).

The consumer hands such a message to the connection's `RoomActions`, which takes a token from
the rate limit of the message's kind, asks the services to act (they check who may, store, and
publish to the room), and replies. What the sender may not do comes back as an `error` reply
with a clear code (`invalid`, `too_long`, `forbidden`, `not_found`, `rate_limited`); the socket
stays open.
"""

from __future__ import annotations

from typing import ClassVar, Generic, Protocol, TypeVar

from rooms import services
from rooms.models import Participant
from signaling import protocol
from signaling.ratelimit import TokenBucket

M = TypeVar("M", bound=protocol.ClientMessage)


class Connection(Protocol):
    """What of the room socket's consumer the actions need."""

    participant: Participant | None

    async def send_message(self, message: protocol.ServerMessage) -> None: ...

    async def reply_error(self, error: protocol.ProtocolError) -> None: ...


class RoomActions(Generic[M]):
    # Per connection and kind: (tokens a second on average, burst).
    RATES: ClassVar[dict[str, tuple[float, int]]]

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.limits = {kind: TokenBucket(*rate) for kind, rate in self.RATES.items()}

    async def handle(self, message: M) -> None:
        participant = self.connection.participant
        if participant is None:  # ended meanwhile: nobody to act for
            return
        try:
            kind, too_fast = self.limit_of(message)
            if not self.limits[kind].take():
                raise services.ActionRefused("rate_limited", too_fast)
            reply = await self.act(participant, message)
        except services.ActionRefused as refused:
            await self.connection.reply_error(
                protocol.ProtocolError(refused.code, refused.message, message.id)
            )
            return
        if reply is not None:
            await self.connection.send_message(reply)

    def limit_of(self, message: M) -> tuple[str, str]:
        """The rate limit the message counts against, and what to say when it is spent."""
        raise NotImplementedError

    async def act(self, participant: Participant, message: M) -> protocol.ServerMessage | None:
        """Act on the message for this connection's participant, in its own room only; the
        reply, if any."""
        raise NotImplementedError
