"""Chat, raised hands and reactions on the room socket, through the real ASGI application: what
everyone sees, what a late joiner's snapshot holds, the limits, and the refusals (each a clean
`error` reply after which the socket goes on working)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from rooms import services
from rooms.models import ChatMessage, Participant
from signaling import collaboration
from signaling.collaboration import CHAT_RATE, HAND_RATE, REACTION_RATE
from tests.conftest import RoomClient, enter_room

pytestmark = pytest.mark.django_db(transaction=True)


async def _still_works(client: RoomClient) -> None:
    await client.send({"type": "ping", "id": "alive"})
    assert await client.receive_until("pong") == {"type": "pong", "id": "alive"}


async def _error(client: RoomClient, payload: dict) -> dict:
    await client.send(payload)
    error = await client.receive_until("error")
    assert error["id"] == payload["id"], error
    return error


@pytest.mark.topology
async def test_a_chat_message_reaches_everyone_and_a_late_joiner_sees_the_history(
    room_client, room, ada, grace, alan, make_user
):
    ada_socket, _ = await enter_room(room_client, ada, room)
    grace_socket, grace_snapshot = await enter_room(room_client, grace, room)
    alan_socket, alan_snapshot = await enter_room(room_client, alan, room)
    assert grace_snapshot["chat"] == [] and grace_snapshot["hands"] == []

    await grace_socket.send({"type": "chat_send", "id": "c1", "text": "  Agenda: https://x.org \n"})
    sent = await grace_socket.receive_until("chat_sent")
    message = sent["message"]
    assert sent["id"] == "c1"
    assert message == {
        "id": message["id"],
        "participant_id": grace_snapshot["you"],
        "user_id": grace.pk,
        "name": "Grace Hopper",
        "text": "Agenda: https://x.org",
        "sent_at": message["sent_at"],
    }
    assert message["sent_at"].endswith("+00:00")
    for socket in (ada_socket, grace_socket, alan_socket):  # the sender too
        assert await socket.receive_until("chat_message") == {
            "type": "chat_message",
            "message": message,
        }

    # Hands go up in an order; a late joiner's snapshot has both, and the chat so far.
    await alan_socket.send({"type": "hand", "id": "h1", "raised": True})
    alan_hand = await alan_socket.receive_until("hand_set")
    assert alan_hand["raised"] is True and alan_hand["id"] == "h1"
    await ada_socket.send({"type": "hand", "raised": True})
    await ada_socket.receive_until("hand_set")
    changed = await grace_socket.receive_until("hand_changed")
    assert changed == {
        "type": "hand_changed",
        "participant_id": alan_snapshot["you"],
        "raised": True,
        "raised_at": alan_hand["raised_at"],
    }
    katherine_user = await sync_to_async(make_user)("katherine")
    katherine, snapshot = await enter_room(room_client, katherine_user, room)
    assert snapshot["chat"] == [message]
    ids = {p["user_id"]: p["id"] for p in snapshot["participants"]}
    assert [h["participant_id"] for h in snapshot["hands"]] == [ids[alan.pk], ids[ada.pk]]
    assert snapshot["hands"][0]["raised_at"] == alan_hand["raised_at"]
    await katherine.close()


async def test_history_is_the_last_hundred_oldest_first(room_client, room, ada):
    speaker = await sync_to_async(services.participant_join)(
        room_id=room.pk, user=ada, connection_id="earlier-tab"
    )
    for n in range(103):
        await sync_to_async(services.chat_post)(participant_id=speaker.pk, text=f"line {n}")
    await sync_to_async(services.participant_leave)(participant_id=speaker.pk)
    _, snapshot = await enter_room(room_client, ada, room)
    assert [m["text"] for m in snapshot["chat"]] == [f"line {n}" for n in range(3, 103)]
    # A participant that has left keeps its messages; its hand is down.
    assert snapshot["chat"][0]["participant_id"] == speaker.pk
    assert snapshot["hands"] == []


async def test_leaving_lowers_the_hand(room_client, room, ada, grace):
    ada_socket, _ = await enter_room(room_client, ada, room)
    grace_socket, _ = await enter_room(room_client, grace, room)
    await grace_socket.send({"type": "hand", "raised": True})
    await ada_socket.receive_until("hand_changed")
    await grace_socket.send({"type": "leave"})
    await grace_socket.expect_close()
    await ada_socket.send({"type": "sync", "id": "s"})
    assert (await ada_socket.receive_until("snapshot"))["hands"] == []


async def test_limits_and_refusals_are_clean_errors(room_client, room, ada, grace):
    owner, _ = await enter_room(room_client, ada, room)
    socket, snapshot = await enter_room(room_client, grace, room)

    too_long = await _error(socket, {"type": "chat_send", "id": 1, "text": "x" * 1001})
    assert too_long["code"] == "too_long" and "1000" in too_long["message"]
    assert (await _error(socket, {"type": "chat_send", "id": 2, "text": " \n "}))["code"] == (
        "invalid"
    )
    assert (await _error(socket, {"type": "reaction", "id": 3, "emoji": "💩"}))["code"] == "invalid"

    # Only the owner deletes messages and lowers others' hands; the socket goes on working.
    await owner.send({"type": "chat_send", "id": "o", "text": "Welcome"})
    welcome = (await owner.receive_until("chat_sent"))["message"]
    refused = await _error(socket, {"type": "chat_delete", "id": 4, "message_id": welcome["id"]})
    assert refused["code"] == "forbidden"
    owner_id = next(p["id"] for p in snapshot["participants"] if p["user_id"] == ada.pk)
    await owner.send({"type": "hand", "raised": True})
    await owner.receive_until("hand_set")
    refused = await _error(socket, {"type": "hand_lower", "id": 5, "participant_id": owner_id})
    assert refused["code"] == "forbidden"
    assert await sync_to_async(ChatMessage.objects.filter(pk=welcome["id"]).exists)()
    await _still_works(socket)

    # The owner can: deleted for everyone, hands lowered for everyone.
    await socket.send({"type": "hand", "raised": True})
    await socket.receive_until("hand_set")
    await owner.send({"type": "hand_lower", "id": "l", "participant_id": snapshot["you"]})
    assert await owner.receive_until("hand_lowered") == {
        "type": "hand_lowered",
        "participant_id": snapshot["you"],
        "id": "l",
    }
    lowered = await socket.receive_until("hand_changed")
    while lowered["raised"]:  # the owner's own hand and Grace's went up before
        lowered = await socket.receive_until("hand_changed")
    assert lowered == {
        "type": "hand_changed",
        "participant_id": snapshot["you"],
        "raised": False,
        "raised_at": None,
    }
    await owner.send({"type": "chat_delete", "id": "d", "message_id": welcome["id"]})
    assert await owner.receive_until("chat_deleted") == {
        "type": "chat_deleted",
        "message_id": welcome["id"],
        "id": "d",
    }
    assert await socket.receive_until("chat_deleted") == {
        "type": "chat_deleted",
        "message_id": welcome["id"],
    }
    gone = await _error(owner, {"type": "chat_delete", "id": "d2", "message_id": welcome["id"]})
    assert gone["code"] == "not_found"
    await _still_works(owner)


async def test_chat_and_reactions_are_rate_limited_per_connection(
    room_client, room, ada, grace, monkeypatch
):
    # The bursts as configured; refills slowed down, so that a slow machine cannot refill a
    # token while the test sends its burst.
    rates = collaboration.Collaboration.RATES
    monkeypatch.setitem(rates, "chat", (0.001, CHAT_RATE[1]))
    monkeypatch.setitem(rates, "reaction", (0.001, REACTION_RATE[1]))
    monkeypatch.setitem(rates, "hand", (0.001, HAND_RATE[1]))
    socket, snapshot = await enter_room(room_client, ada, room)
    other, _ = await enter_room(room_client, grace, room)
    burst = CHAT_RATE[1]
    for n in range(burst):
        await socket.send({"type": "chat_send", "id": f"c{n}", "text": f"message {n}"})
        assert (await socket.receive_until("chat_sent"))["id"] == f"c{n}"
    limited = await _error(socket, {"type": "chat_send", "id": "over", "text": "one more"})
    assert limited["code"] == "rate_limited"
    assert await sync_to_async(ChatMessage.objects.count)() == burst

    # Reactions: everyone (the sender too) sees each one, up to the burst; then a refusal.
    for _ in range(REACTION_RATE[1]):
        await socket.send({"type": "reaction", "emoji": "🎉"})
        assert await other.receive_until("reaction") == {
            "type": "reaction",
            "participant_id": snapshot["you"],
            "emoji": "🎉",
        }
        assert (await socket.receive_until("reaction"))["emoji"] == "🎉"
    limited = await _error(socket, {"type": "reaction", "id": "r", "emoji": "👍"})
    assert limited["code"] == "rate_limited"
    # The other person's buckets are their own.
    await other.send({"type": "reaction", "emoji": "❤️"})
    assert (await socket.receive_until("reaction"))["emoji"] == "❤️"

    # Hands: up and down, as often as the burst allows; chat and reactions did not use it up.
    for n in range(HAND_RATE[1]):
        await socket.send({"type": "hand", "id": f"h{n}", "raised": n % 2 == 0})
        assert (await socket.receive_until("hand_set"))["raised"] is (n % 2 == 0)
    limited = await _error(socket, {"type": "hand", "id": "h", "raised": True})
    assert limited["code"] == "rate_limited"
    await _still_works(socket)


async def test_a_participant_acts_only_in_its_own_room(room_client, make_room, ada, grace, alan):
    room_a = await sync_to_async(make_room)(ada, "Room A")
    room_b = await sync_to_async(make_room)(ada, "Room B")
    ada_in_a, _ = await enter_room(room_client, ada, room_a)
    grace_in_a, _ = await enter_room(room_client, grace, room_a)
    alan_in_b, snapshot_b = await enter_room(room_client, alan, room_b)

    await alan_in_b.send({"type": "chat_send", "id": 1, "text": "Only for room B"})
    message_b = (await alan_in_b.receive_until("chat_sent"))["message"]
    await alan_in_b.send({"type": "hand", "raised": True})
    await alan_in_b.receive_until("hand_set")
    await alan_in_b.send({"type": "reaction", "emoji": "👍"})
    await alan_in_b.receive_until("reaction")
    assert await grace_in_a.nothing_more(0.5)  # nothing of room B reaches room A

    # Ada owns both rooms, but her socket in room A acts in room A only.
    refused = await _error(
        ada_in_a, {"type": "chat_delete", "id": 2, "message_id": message_b["id"]}
    )
    assert refused["code"] == "not_found"
    refused = await _error(
        ada_in_a, {"type": "hand_lower", "id": 3, "participant_id": snapshot_b["you"]}
    )
    assert refused["code"] == "not_found"
    assert await sync_to_async(ChatMessage.objects.filter(pk=message_b["id"]).exists)()
    alan_record = await sync_to_async(Participant.objects.get)(pk=snapshot_b["you"])
    assert alan_record.hand_raised_at is not None
    assert await alan_in_b.nothing_more(0.3)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "chat_send"},
        {"type": "chat_send", "text": 5},
        {"type": "chat_send", "text": ["hi"]},
        {"type": "chat_send", "text": "x" * 5000},
        {"type": "chat_send", "text": "hi", "html": "<b>"},
        {"type": "chat_delete", "message_id": 2**70},
        {"type": "chat_delete", "message_id": 0},
        {"type": "chat_delete", "message_id": "7"},
        {"type": "chat_delete", "message_id": 1.5},
        {"type": "hand", "raised": 1},
        {"type": "hand", "raised": "yes"},
        {"type": "hand"},
        {"type": "hand_lower", "participant_id": -4},
        {"type": "hand_lower", "participant_id": True},
        {"type": "hand_lower", "participant_id": 2**63},
        {"type": "reaction", "emoji": "👍" * 20},
        {"type": "reaction", "emoji": "❤"},  # without its variation selector
        {"type": "reaction", "emoji": None},
    ],
)
async def test_hostile_values_are_invalid(room_client, room, ada, payload):
    socket, _ = await enter_room(room_client, ada, room)
    error = await _error(socket, {**payload, "id": "bad"})
    assert error["code"] == "invalid", error
    await _still_works(socket)
    assert await sync_to_async(ChatMessage.objects.count)() == 0


async def test_the_largest_ids_are_simply_not_found(room_client, room, ada):
    socket, _ = await enter_room(room_client, ada, room)
    for payload in (
        {"type": "chat_delete", "id": 1, "message_id": 2**63 - 1},
        {"type": "hand_lower", "id": 2, "participant_id": 2**63 - 1},
    ):
        assert (await _error(socket, payload))["code"] == "not_found"
    await socket.send_text(json.dumps({"type": "chat_send", "id": 3, "text": "\x00"}))
    assert (await socket.receive_until("error"))["code"] == "invalid"
    await _still_works(socket)
