"""The waiting room on the room socket, through the real ASGI application: a room that asks people
to wait keeps their connection open until a moderator lets them in (they join on it, without
reconnecting) or turns them away; moderators, and only they, see who waits; the queue follows
pages that close, reconnect or were let in before; and the meeting's end forgets the decisions.
tests/test_workers.py runs it across two daphne workers on PostgreSQL and Redis in Chromium."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from rooms import services
from rooms.models import JoinRequest, Participant, RoomModerator
from signaling import protocol
from tests.conftest import RoomClient, enter_room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asking_room(make_room, ada):
    return make_room(ada, "Office hours", ask_to_join=True)


async def _wait_in(room_client, user, room) -> tuple[RoomClient, dict]:
    client = await room_client(user, room)
    waiting = await client.receive()
    assert waiting["type"] == "waiting", waiting
    return client, waiting


def _waiting_names(message: dict) -> list[str]:
    return [w["name"] for w in message["waiting"]]


async def test_a_moderator_lets_people_in_and_turns_them_away(
    room_client, asking_room, ada, grace, alan, edsger
):
    # Nobody to let them in yet: Grace waits, and is told so.
    grace_socket, waiting = await _wait_in(room_client, grace, asking_room)
    assert waiting["moderator_present"] is False
    assert "no moderator" in waiting["message"]
    # Waiting is not being in: no media, no snapshot.
    refused = await grace_socket.ask({"type": "hand", "id": "p", "raised": True})
    assert refused["type"] == "error" and refused["code"] == "waiting"
    assert await grace_socket.ask({"type": "ping", "id": "ok"}) == {"type": "pong", "id": "ok"}

    # The owner joins straight in and sees who waits; Grace is told someone can let her in.
    ada_socket, snapshot = await enter_room(room_client, ada, asking_room)
    assert [w["user_id"] for w in snapshot["waiting"]] == [grace.pk]
    waiting = await grace_socket.receive()
    assert waiting["type"] == "waiting" and waiting["moderator_present"] is True
    alan_socket, waiting = await _wait_in(room_client, alan, asking_room)
    assert waiting["moderator_present"] is True
    changed = await ada_socket.receive_until("waiting_changed")
    assert _waiting_names(changed) == ["Grace Hopper", "Alan Turing"]  # first come first

    # Grace is let in: she joins on the same connection, and the room sees her arrive.
    reply = await ada_socket.ask({"type": "admit", "id": 1, "user_id": grace.pk})
    assert reply == {"type": "join_decided", "user_ids": [grace.pk], "admitted": True, "id": 1}
    assert (await grace_socket.receive())["type"] == "admitted"
    grace_snapshot = await grace_socket.receive()
    assert grace_snapshot["type"] == "snapshot"
    assert grace_snapshot["waiting"] == []  # not a moderator: who waits is not hers to see
    joined = await ada_socket.receive_until("participant_joined")
    assert joined["participant"]["id"] == grace_snapshot["you"]
    # (the list's change went out before the reply: the snapshot of now shows it)
    assert _waiting_names(await ada_socket.ask({"type": "sync", "id": "s"})) == ["Alan Turing"]

    # Alan is turned away: told, and closed; Grace, a plain participant, never heard of him.
    reply = await ada_socket.ask({"type": "deny", "id": 2, "user_id": alan.pk})
    assert reply == {"type": "join_decided", "user_ids": [alan.pk], "admitted": False, "id": 2}
    denied = await alan_socket.receive()
    assert denied["type"] == "refused" and denied["reason"] == "denied"
    assert await alan_socket.expect_close() == protocol.CLOSE_FOR_REFUSAL["denied"]
    await grace_socket.send({"type": "ping", "id": "g"})
    while (message := await grace_socket.receive())["type"] != "pong":
        assert message["type"] != "waiting_changed", message
    # Asked again: he waits again (a person may ask again, a few times per meeting).
    alan_socket, _ = await _wait_in(room_client, alan, asking_room)
    reply = await ada_socket.ask({"type": "deny", "id": 3, "user_id": alan.pk})
    assert reply["user_ids"] == [alan.pk]
    assert (await alan_socket.receive())["reason"] == "denied"
    await alan_socket.expect_close()
    await sync_to_async(JoinRequest.objects.filter(user=alan).update)(denials=services.MAX_DENIALS)
    refused_now = await room_client(alan, asking_room)
    assert (await refused_now.receive())["reason"] == "denied"

    # Grace's second tab, and her reconnect after a drop, do not wait: she was let in.
    again, snapshot = await enter_room(room_client, grace, asking_room)
    assert snapshot["type"] == "snapshot"
    await again.close()

    # Deciding for someone who is not waiting: not_found; a plain participant: forbidden.
    reply = await ada_socket.ask({"type": "admit", "id": 4, "user_id": edsger.pk})
    assert reply["type"] == "error" and reply["code"] == "not_found"
    reply = await grace_socket.ask({"type": "admit", "id": 5, "user_id": None})
    assert reply["type"] == "error" and reply["code"] == "forbidden"


async def test_everyone_at_once_and_the_room_setting(
    room_client, asking_room, ada, grace, alan, edsger
):
    ada_socket, _ = await enter_room(room_client, ada, asking_room)
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    alan_socket, _ = await _wait_in(room_client, alan, asking_room)
    reply = await ada_socket.ask({"type": "admit", "id": "all", "user_id": None})
    assert sorted(reply["user_ids"]) == sorted([grace.pk, alan.pk])
    for socket in (grace_socket, alan_socket):
        assert (await socket.receive())["type"] == "admitted"
        assert (await socket.receive())["type"] == "snapshot"

    # Turning "ask to join" off lets in whoever waits.
    edsger_socket, _ = await _wait_in(room_client, edsger, asking_room)
    await sync_to_async(services.room_update)(room=asking_room, ask_to_join=False)
    assert (await edsger_socket.receive())["type"] == "admitted"
    assert (await edsger_socket.receive())["type"] == "snapshot"


async def test_the_queue_follows_the_pages(room_client, asking_room, ada, grace, alan):
    ada_socket, _ = await enter_room(room_client, ada, asking_room)
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == ["Grace Hopper"]
    first_asked = await sync_to_async(JoinRequest.objects.get)(user=grace)

    # Her tab closes: she leaves the list; the page comes back and she asks again.
    await grace_socket.close()
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == []
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == ["Grace Hopper"]
    alan_socket, _ = await _wait_in(room_client, alan, asking_room)
    await ada_socket.receive_until("waiting_changed")
    # Her worker dies under her (no disconnect handler runs: the request stays) and her page
    # reconnects through another: she keeps her place, ahead of Alan.
    asked = await sync_to_async(JoinRequest.objects.get)(user=grace)
    await sync_to_async(JoinRequest.objects.filter(user=grace).update)(connection_id="dead")
    await grace_socket.close()  # (this connection no longer owns the request)
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    again = await sync_to_async(JoinRequest.objects.get)(user=grace)
    assert (again.pk, again.asked_at) == (asked.pk, asked.asked_at)
    assert again.asked_at > first_asked.asked_at  # (closing the tab had given up the first)
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == [
        "Grace Hopper",
        "Alan Turing",
    ]

    # Alan's tab goes away without a word (its worker died): once stale, he leaves the list.
    await sync_to_async(JoinRequest.objects.filter(user=alan).update)(
        last_seen_at=timezone.now() - timedelta(minutes=5), connection_id="gone"
    )
    await alan_socket.close()  # (this connection no longer owns the request)
    assert await sync_to_async(services.join_requests_reap_stale)(room_id=asking_room.pk) == 1
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == ["Grace Hopper"]

    # Cancelling (`leave`) withdraws at once.
    await grace_socket.send({"type": "leave"})
    assert await grace_socket.expect_close() == protocol.CLOSE_LEFT
    assert _waiting_names(await ada_socket.receive_until("waiting_changed")) == []
    assert not await sync_to_async(JoinRequest.objects.filter(state="waiting").exists)()


async def test_a_decision_missed_on_the_channel_layer_is_found_on_the_heartbeat(
    room_client, asking_room, ada, grace, settings
):
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.2
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    # Decided behind the layer's back (as if its message was lost between workers).
    await sync_to_async(JoinRequest.objects.filter(user=grace).update)(
        state=JoinRequest.State.ADMITTED
    )
    assert (await grace_socket.receive())["type"] == "admitted"
    assert (await grace_socket.receive())["type"] == "snapshot"


async def test_moderators_see_the_queue_and_the_meeting_end_forgets_decisions(
    room_client, asking_room, ada, grace, alan, edsger
):
    ada_socket, _ = await enter_room(room_client, ada, asking_room)
    grace_socket, _ = await _wait_in(room_client, grace, asking_room)
    await ada_socket.ask({"type": "admit", "id": 1, "user_id": grace.pk})
    await grace_socket.receive_until("snapshot")
    alan_socket, _ = await _wait_in(room_client, alan, asking_room)

    # Grace made a moderator: she is shown who waits at once, then every change.
    await ada_socket.ask({"type": "moderator", "id": 2, "user_id": grace.pk, "on": True})
    shown = await grace_socket.receive_until("waiting_changed")
    assert _waiting_names(shown) == ["Alan Turing"]
    edsger_socket, _ = await _wait_in(room_client, edsger, asking_room)
    shown = await grace_socket.receive_until("waiting_changed")
    assert _waiting_names(shown) == ["Alan Turing", "Edsger Dijkstra"]
    await grace_socket.ask({"type": "deny", "id": 3, "user_id": edsger.pk})
    await edsger_socket.expect_close()

    # The room closes: whoever waits is told, and the connection ends.
    await sync_to_async(RoomModerator.objects.filter(user=grace).delete)()
    await ada_socket.ask({"type": "end_meeting", "id": 4})
    # The meeting ended, not the room: Alan goes on waiting; the decisions are forgotten.
    assert await alan_socket.nothing_more(0.5)
    assert await sync_to_async(
        lambda: sorted(JoinRequest.objects.values_list("user__username", "state"))
    )() == [("alan", "waiting")]
    grace_again, _ = await _wait_in(room_client, grace, asking_room)  # let in last meeting only
    await sync_to_async(services.room_close)(room=asking_room)
    for socket in (alan_socket, grace_again):
        closed = await socket.receive()
        assert closed["type"] == "room_closed"
        assert await socket.expect_close() == protocol.CLOSE_ROOM_CLOSED
    assert not await sync_to_async(
        Participant.objects.filter(state=Participant.State.CONNECTED).exists
    )()


async def test_those_waiting_hear_when_someone_who_can_let_them_in_comes_and_goes(
    room_client, asking_room, ada, grace
):
    grace_socket, waiting = await _wait_in(room_client, grace, asking_room)
    assert waiting["moderator_present"] is False
    ada_socket, _ = await enter_room(room_client, ada, asking_room)
    waiting = await grace_socket.receive()
    assert (waiting["type"], waiting["moderator_present"]) == ("waiting", True)
    await ada_socket.send({"type": "leave"})
    await ada_socket.expect_close()
    waiting = await grace_socket.receive()
    assert (waiting["type"], waiting["moderator_present"]) == ("waiting", False)
    assert "no moderator" in waiting["message"]
