"""Messages of working together in a call, both ways: chat, raised hands and reactions.

They register into the same registries as the room socket's other messages (`client._message`
for what browsers send, `server._message` for what the server sends), so the one parser and the
one check of outgoing events know them. docs/protocol.md ("Working together") describes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from signaling.protocol import client, server

# The reactions a browser may send: a fixed few, so a reaction is never a way to put
# arbitrary text over someone's picture.
REACTION_EMOJI = ("👍", "👏", "😂", "😮", "❤️", "🎉")

# A frame bound only: the chat service refuses anything over its own limit (1000 characters,
# after trimming) with `too_long`, a clearer answer than `invalid` for someone who typed a lot.
_MAX_CHAT_FRAME_TEXT = 4000


@dataclass(frozen=True)
class CollaborationMessage(client.ClientMessage):
    """What a browser sends about chat, hands and reactions (signaling.collaboration acts on
    them)."""


# --- from the browser ---------------------------------------------------------------------------
@client.message
class ChatSend(CollaborationMessage):
    """Post a chat message to everyone in the room; the reply is `chat_sent`."""

    type_name: ClassVar[str] = "chat_send"
    text: str = dataclasses.field(metadata={"max_length": _MAX_CHAT_FRAME_TEXT})


@client.message
class ChatDelete(CollaborationMessage):
    """Delete a message of the room's chat for everyone (the room's owner); the reply is
    `chat_deleted`."""

    type_name: ClassVar[str] = "chat_delete"
    message_id: int


@client.message
class Hand(CollaborationMessage):
    """Raise (`raised`: true) or lower your hand; the reply is `hand_set`."""

    type_name: ClassVar[str] = "hand"
    raised: bool


@client.message
class HandLower(CollaborationMessage):
    """Lower someone's hand (the room's owner); the reply is `hand_lowered`."""

    type_name: ClassVar[str] = "hand_lower"
    participant_id: int


@client.message
class Reaction(CollaborationMessage):
    """Show an emoji over your tile for everyone (one of REACTION_EMOJI); no reply."""

    type_name: ClassVar[str] = "reaction"
    emoji: str = dataclasses.field(metadata={"max_length": 16})

    def problem(self) -> str | None:
        if self.emoji not in REACTION_EMOJI:
            return f"'emoji' in 'reaction' must be one of {' '.join(REACTION_EMOJI)}."
        return None


# --- replies --------------------------------------------------------------------------------------
@server.message
class ChatSent(server.Reply):
    """Your chat message was posted, as everyone gets it (`chat_message` follows, for you too)."""

    type_name: ClassVar[str] = "chat_sent"
    message: dict


@server.message
class HandSet(server.Reply):
    """Your hand is now up (since `raised_at`) or down."""

    type_name: ClassVar[str] = "hand_set"
    raised: bool
    raised_at: str | None


@server.message
class HandLowered(server.Reply):
    """The hand of `participant_id` is down (it may have been down already)."""

    type_name: ClassVar[str] = "hand_lowered"
    participant_id: int


# --- to everyone in the room ---------------------------------------------------------------------
@server.message
class ChatMessagePosted(server.ServerMessage):
    type_name: ClassVar[str] = "chat_message"
    message: dict  # {id, participant_id, user_id, name, text, sent_at}


@server.message
class ChatDeleted(server.Reply):
    """A chat message was deleted for everyone. Also the reply to `chat_delete` (with its id)."""

    type_name: ClassVar[str] = "chat_deleted"
    message_id: int


@server.message
class HandChanged(server.ServerMessage):
    type_name: ClassVar[str] = "hand_changed"
    participant_id: int
    raised: bool
    raised_at: str | None


@server.message
class ReactionShown(server.ServerMessage):
    type_name: ClassVar[str] = "reaction"
    participant_id: int
    emoji: str
