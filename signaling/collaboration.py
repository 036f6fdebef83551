"""Chat, raised hands and reactions on the room socket: one connection's side of them (the
rate limits, the service calls and the replies; signaling.actions has the common part)."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.utils.translation import gettext

from rooms import events, services
from rooms.models import Participant
from signaling import protocol
from signaling.actions import RoomActions

logger = logging.getLogger(__name__)

# Per connection: (tokens a second on average, burst). A person typing fast or clicking
# reactions in a row stays well inside; a script flooding the room does not.
CHAT_RATE = (1.0, 5)
REACTION_RATE = (0.5, 4)
HAND_RATE = (0.5, 6)  # raising and lowering your own
MODERATION_RATE = (2.0, 10)  # the owner deleting messages and lowering others' hands


class Collaboration(RoomActions[protocol.CollaborationMessage]):
    RATES = {
        "chat": CHAT_RATE,
        "reaction": REACTION_RATE,
        "hand": HAND_RATE,
        "moderation": MODERATION_RATE,
    }

    def limit_of(self, message: protocol.CollaborationMessage) -> tuple[str, str]:
        match message:
            case protocol.ChatSend():
                kind, text = "chat", gettext("You are sending messages too fast; wait a moment.")
            case protocol.Reaction():
                kind, text = "reaction", gettext("Too many reactions; wait a moment.")
            case protocol.Hand():
                kind, text = "hand", gettext("Too many hand changes; wait a moment.")
            case _:
                kind, text = "moderation", gettext("Too many changes at once; wait a moment.")
        return kind, text

    async def act(
        self, participant: Participant, message: protocol.CollaborationMessage
    ) -> protocol.ServerMessage | None:
        match message:
            case protocol.ChatSend(text=text):
                posted = await database_sync_to_async(services.chat_post)(
                    participant_id=participant.pk, text=text
                )
                return protocol.ChatSent(message=events.chat_message_payload(posted), id=message.id)
            case protocol.ChatDelete(message_id=message_id):
                deleted = await database_sync_to_async(services.chat_delete)(
                    room_id=participant.room_id, message_id=message_id, by_user=participant.user
                )
                if not deleted:
                    raise services.ActionRefused(
                        "not_found", gettext("That message is not in this room's chat.")
                    )
                return protocol.ChatDeleted(message_id=message_id, id=message.id)
            case protocol.Hand(raised=raised):
                raised_at = await database_sync_to_async(services.hand_set)(
                    participant_id=participant.pk, raised=raised
                )
                return protocol.HandSet(
                    raised=raised_at is not None,
                    raised_at=None if raised_at is None else raised_at.isoformat(),
                    id=message.id,
                )
            case protocol.HandLower(participant_id=other):
                await database_sync_to_async(services.hand_lower_for)(
                    room_id=participant.room_id, participant_id=other, by_user=participant.user
                )
                return protocol.HandLowered(participant_id=other, id=message.id)
            case protocol.Reaction(emoji=emoji):
                await events.apublish_reaction(
                    room_id=participant.room_id, participant_id=participant.pk, emoji=emoji
                )
                return None
        raise AssertionError(f"no handler for {message.type_name}")  # a message added, not here
