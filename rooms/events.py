"""Room events: the one place that puts messages on the channel layer.

Services call these after their writes commit. Each room has a group; every connection in the
room is a member and forwards the event, as is, to its browser (the wire format is in
docs/protocol.md); `room_closed` ends their connections, `participant_removed` the removed one's.
The connections of people waiting to be let in (`Room.ask_to_join`) are in the room's waiting
group instead: they hear the moderators' decisions (`join_decided`) and `room_closed`.
"""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from rooms.models import ChatMessage, JoinRequest, Participant, Recording, Room

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room-{room_id}"


def waiting_group(room_id: int) -> str:
    return f"room-{room_id}-waiting"


def participant_payload(participant: Participant) -> dict[str, Any]:
    return {
        "id": participant.pk,
        "name": participant.display_name,
        "user_id": participant.user_id,
        "is_owner": participant.user_id == participant.room.owner_id,
        "joined_at": participant.joined_at.isoformat(),
        # What a moderator blocked ("everyone joins muted" blocks the microphone on joining).
        "audio_blocked": participant.muted_audio_by_moderator,
        "video_blocked": participant.muted_video_by_moderator,
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
        "screen_sharing": room.screen_sharing,
        "ask_to_join": room.ask_to_join,
        "join_muted": room.join_muted,
        "self_unmute": room.self_unmute,
    }


def recording_payload(recording: Recording | None) -> dict[str, Any] | None:
    """The meeting's running recording as everyone in the room sees it (null: none)."""
    if recording is None:
        return None
    by = recording.started_by
    return {
        "id": recording.pk,
        "started_at": recording.started_at.isoformat(),
        "started_by": by.shown_name if by is not None else "",
    }


def chat_message_payload(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "participant_id": message.participant_id,
        "user_id": message.author_id,
        "name": message.author_name,
        "text": message.text,
        "sent_at": message.created_at.isoformat(),
    }


def hand_payload(participant: Participant) -> dict[str, Any]:
    """A raised hand, as the snapshot lists them."""
    assert participant.hand_raised_at is not None
    return {"participant_id": participant.pk, "raised_at": participant.hand_raised_at.isoformat()}


def join_request_payload(request: JoinRequest) -> dict[str, Any]:
    """Someone waiting to be let in, as moderators see them."""
    return {
        "user_id": request.user_id,
        "name": request.display_name,
        "asked_at": request.asked_at.isoformat(),
    }


def _publish(room_id: int, event: dict[str, Any], *, waiting: bool = False) -> None:
    """After the transaction commits: to the room's group, or to its waiting group."""
    group = waiting_group(room_id) if waiting else room_group(room_id)
    message: dict[str, Any] = {"type": "waiting.event" if waiting else "room.event", "event": event}

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, message)
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
    event = {"type": "room_closed", "reason": reason, "message": message}
    _publish(room_id, event)
    if reason != "ended":  # a meeting that ended leaves the room: those waiting go on waiting
        _publish(room_id, event, waiting=True)


def publish_chat_message(message: ChatMessage) -> None:
    _publish(message.room_id, {"type": "chat_message", "message": chat_message_payload(message)})


def publish_chat_deleted(room_id: int, message_id: int) -> None:
    _publish(room_id, {"type": "chat_deleted", "message_id": message_id})


def publish_hand_changed(participant: Participant) -> None:
    raised_at = participant.hand_raised_at
    _publish(
        participant.room_id,
        {
            "type": "hand_changed",
            "participant_id": participant.pk,
            "raised": raised_at is not None,
            "raised_at": None if raised_at is None else raised_at.isoformat(),
        },
    )


async def apublish_reaction(*, room_id: int, participant_id: int, emoji: str) -> None:
    """A reaction is not stored: it goes out at once, from the socket that sent it."""
    await apublish_room_event(
        room_id, {"type": "reaction", "participant_id": participant_id, "emoji": emoji}
    )


def publish_moderators_changed(room_id: int, user_ids: set[int]) -> None:
    _publish(room_id, {"type": "moderators_changed", "user_ids": sorted(user_ids)})


def publish_media_blocked(participant: Participant, *, kind: str, blocked: bool) -> None:
    _publish(
        participant.room_id,
        {
            "type": "media_blocked",
            "participant_id": participant.pk,
            "kind": kind,
            "blocked": blocked,
        },
    )


def publish_participant_removed(participant: Participant, *, message: str) -> None:
    """`message` is in English (gettext_noop): the removed person's connection translates it."""
    _publish(
        participant.room_id,
        {"type": "participant_removed", "participant_id": participant.pk, "message": message},
    )


def publish_waiting_changed(room_id: int, waiting: list[JoinRequest]) -> None:
    """Who waits to be let in now (each connection passes it on to moderators only)."""
    _publish(
        room_id,
        {"type": "waiting_changed", "waiting": [join_request_payload(r) for r in waiting]},
    )


def publish_join_decided(room_id: int, *, user_ids: list[int], admitted: bool) -> None:
    """A moderator let these waiting users in, or turned them away."""
    _publish(
        room_id,
        {"type": "join_decided", "user_ids": user_ids, "admitted": admitted},
        waiting=True,
    )


def publish_waiting_refresh(room_id: int) -> None:
    """Tell whoever waits again what they are waiting for (a moderator arrived, or the last
    one left)."""
    _publish(room_id, {"type": "waiting_refresh"}, waiting=True)


def publish_recording_changed(room_id: int, recording: Recording | None) -> None:
    """The meeting started being recorded (`recording`), or stopped (None)."""
    _publish(room_id, {"type": "recording_changed", "recording": recording_payload(recording)})
