"""Room events: the one place that puts messages on the channel layer.

Services call these after their writes commit. Each room has a group; every connection in the
room is a member and forwards the event, as is, to its browser (the wire format is in
docs/protocol.md); `room_closed` ends their connections.
"""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from rooms.models import Participant, Room

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room-{room_id}"


def participant_payload(participant: Participant) -> dict[str, Any]:
    return {
        "id": participant.pk,
        "name": participant.display_name,
        "user_id": participant.user_id,
        "is_owner": participant.user_id == participant.room.owner_id,
        "joined_at": participant.joined_at.isoformat(),
    }


def room_payload(room: Room) -> dict[str, Any]:
    return {
        "slug": room.slug,
        "name": room.name,
        "description": room.description,
        "visibility": room.visibility,
        "locked": room.locked,
        "max_participants": room.max_participants,
        "owner_id": room.owner_id,
    }


def _publish(room_id: int, event: dict[str, Any]) -> None:
    message: dict[str, Any] = {"type": "room.event", "event": event}

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(room_group(room_id), message)
        except Exception:
            # The write already happened; a dead layer must not turn it into an error page.
            logger.exception("could not publish %s to room %s", event.get("type"), room_id)

    transaction.on_commit(send)


async def apublish_room_event(room_id: int, event: dict[str, Any]) -> None:
    """Send an event of another part of the product (media, say) to everyone in the room, from
    async code outside any transaction: it goes out at once."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(room_group(room_id), {"type": "room.event", "event": event})
    except Exception:
        logger.exception("could not publish %s to room %s", event.get("type"), room_id)


def publish_participant_joined(participant: Participant) -> None:
    _publish(
        participant.room_id,
        {"type": "participant_joined", "participant": participant_payload(participant)},
    )


def publish_participant_left(participant: Participant) -> None:
    _publish(
        participant.room_id,
        {"type": "participant_left", "participant_id": participant.pk, "reason": participant.state},
    )


def publish_room_updated(room: Room) -> None:
    _publish(room.pk, {"type": "room_updated", "room": room_payload(room)})


def publish_room_closed(room_id: int, *, reason: str, message: str) -> None:
    _publish(room_id, {"type": "room_closed", "reason": reason, "message": message})
