"""The room WebSocket through the real ASGI application: access rules, presence, bad input."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from rooms import services
from rooms.invites import invite_token
from rooms.models import Participant, Room
from signaling import protocol
from tests.conftest import record_participant

pytestmark = pytest.mark.django_db(transaction=True)


async def _refresh(obj):
    await sync_to_async(obj.refresh_from_db)()
    return obj


@pytest.mark.topology
async def test_two_clients_see_each_other_join_and_leave(room_client, room, ada, grace):
    first = await room_client(ada, room)
    snapshot = await first.receive()
    assert snapshot["type"] == "snapshot"
    assert [p["name"] for p in snapshot["participants"]] == ["Ada Lovelace"]
    assert snapshot["participants"][0]["id"] == snapshot["you"]
    assert snapshot["participants"][0]["is_owner"] is True
    assert snapshot["room"]["slug"] == room.slug

    second = await room_client(grace, room)
    second_snapshot = await second.receive()
    assert [p["name"] for p in second_snapshot["participants"]] == ["Ada Lovelace", "Grace Hopper"]

    joined = await first.receive()
    assert joined["type"] == "participant_joined"
    assert joined["participant"]["name"] == "Grace Hopper"
    assert joined["participant"]["id"] == second_snapshot["you"]
    assert joined["participant"]["is_owner"] is False

    await second.send({"type": "leave"})
    assert await second.expect_close() == protocol.CLOSE_LEFT
    assert await second.nothing_more(0.5)  # not even its own departure: nothing after the close
    left = await first.receive()
    assert left == {
        "type": "participant_left",
        "participant_id": second_snapshot["you"],
        "reason": "left",
    }
    record = await sync_to_async(Participant.objects.get)(pk=second_snapshot["you"])
    assert record.state == Participant.State.LEFT
    assert record.left_at is not None


@pytest.mark.topology
async def test_socket_vanishing_without_goodbye_is_recorded_as_dropped(
    room_client, room, ada, grace
):
    first = await room_client(ada, room)
    await first.receive()
    second = await room_client(grace, room)
    you = (await second.receive())["you"]
    await first.receive_until("participant_joined")

    await second.close()  # no leave message: the tab was closed or the network went away
    left = await first.receive_until("participant_left")
    assert left["participant_id"] == you
    assert left["reason"] == "dropped"
    record = await sync_to_async(Participant.objects.get)(pk=you)
    assert record.state == Participant.State.DROPPED


async def test_anonymous_is_refused(room_client, room):
    client = await room_client(None, room)
    refused = await client.receive()
    assert refused["type"] == "refused"
    assert refused["reason"] == "login_required"
    assert await client.expect_close() == 4401
    assert await sync_to_async(Participant.objects.count)() == 0


async def test_foreign_origin_is_rejected_at_the_handshake(room_client, room, ada):
    client = await room_client(ada, room, origin="https://evil.example")
    assert client.accepted is False


async def test_unknown_room_is_refused(room_client, ada):
    client = await room_client(ada, "no-such-room")
    refused = await client.receive()
    assert refused["reason"] == "not_found"
    assert await client.expect_close() == 4404


async def test_private_room_needs_an_invite(room_client, make_room, ada, grace):
    private = await sync_to_async(make_room)(ada, "Secret", visibility=Room.Visibility.PRIVATE)
    refused_client = await room_client(grace, private)
    refused = await refused_client.receive()
    assert refused["reason"] == "private"
    assert "invite" in refused["message"]
    assert await refused_client.expect_close() == 4403

    forged = await room_client(grace, private, invite="not-a-real-token")
    assert (await forged.receive())["reason"] == "private"

    token = await sync_to_async(invite_token)(private)
    invited = await room_client(grace, private, invite=token)
    snapshot = await invited.receive()
    assert snapshot["type"] == "snapshot"
    assert [p["name"] for p in snapshot["participants"]] == ["Grace Hopper"]

    owner = await room_client(ada, private)
    assert (await owner.receive())["type"] == "snapshot"


async def test_reset_invite_invalidates_old_links(room_client, make_room, ada, grace):
    private = await sync_to_async(make_room)(ada, "Secret", visibility=Room.Visibility.PRIVATE)
    old_token = await sync_to_async(invite_token)(private)
    await sync_to_async(services.room_reset_invite)(room=private)
    client = await room_client(grace, private, invite=old_token)
    assert (await client.receive())["reason"] == "private"


async def test_full_room_is_refused(room_client, make_room, ada, grace, alan):
    small = await sync_to_async(make_room)(ada, "Pair", max_participants=2)
    one = await room_client(ada, small)
    await one.receive()
    two = await room_client(grace, small)
    await two.receive()
    third = await room_client(alan, small)
    refused = await third.receive()
    assert refused["reason"] == "full"
    assert "full" in refused["message"]
    assert await third.expect_close() == 4409

    # A seat frees up when someone leaves.
    await two.send({"type": "leave"})
    await two.expect_close()
    again = await room_client(alan, small)
    assert (await again.receive())["type"] == "snapshot"


async def test_locked_room_refuses_everyone_but_its_owner(room_client, make_room, ada, grace):
    locked = await sync_to_async(make_room)(ada, "Board", locked=True)
    guest = await room_client(grace, locked)
    refused = await guest.receive()
    assert refused["reason"] == "locked"
    assert await guest.expect_close() == 4423
    owner = await room_client(ada, locked)
    assert (await owner.receive())["type"] == "snapshot"


async def test_closed_room_is_refused(room_client, room, grace):
    await sync_to_async(services.room_close)(room=room)
    client = await room_client(grace, room)
    assert (await client.receive())["reason"] == "closed"
    assert await client.expect_close() == 4410


async def test_closing_a_room_disconnects_everyone_in_it(room_client, room, ada, grace):
    first = await room_client(ada, room)
    await first.receive()
    second = await room_client(grace, room)
    await second.receive()
    await first.receive_until("participant_joined")

    removed = await sync_to_async(services.room_close)(room=room, message="Closed by an admin.")
    assert removed == 2
    for client in (first, second):
        closed = await client.receive_until("room_closed")
        assert closed["message"] == "Closed by an admin."
        assert await client.expect_close() == 4410
    states = await sync_to_async(
        lambda: set(Participant.objects.filter(room=room).values_list("state", flat=True))
    )()
    assert states == {Participant.State.REMOVED}


async def test_owner_changes_reach_everyone(room_client, room, ada, grace):
    guest = await room_client(grace, room)
    await guest.receive()
    await sync_to_async(services.room_update)(room=room, locked=True, name="Renamed")
    updated = await guest.receive()
    assert updated["type"] == "room_updated"
    assert updated["room"]["locked"] is True
    assert updated["room"]["name"] == "Renamed"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "bad_json"),
        ("[1, 2, 3]", "invalid"),
        ('{"no_type": true}', "invalid"),
        ('{"type": 5}', "invalid"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "ping", "extra": 1}', "invalid"),
        ('{"type": "ping", "id": {"nested": true}}', "invalid"),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', "invalid"),
        ("[" * 100_000 + "]" * 100_000, "too_large"),
    ],
)
async def test_malformed_messages_get_an_error_and_the_socket_stays_open(
    room_client, room, ada, frame, code
):
    client = await room_client(ada, room)
    await client.receive()
    await client.send_text(frame)
    error = await client.receive()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    await client.send({"type": "ping", "id": "after"})
    assert await client.receive() == {"type": "pong", "id": "after"}


async def test_deeply_nested_json_within_size_is_refused_cleanly(room_client, room, ada):
    client = await room_client(ada, room)
    await client.receive()
    await client.send_text("[" * 20_000 + "]" * 20_000)
    assert (await client.receive())["code"] in {"bad_json", "invalid"}
    await client.send({"type": "ping"})
    assert (await client.receive())["type"] == "pong"


async def test_binary_frames_are_refused(room_client, room, ada):
    client = await room_client(ada, room)
    await client.receive()
    await client.communicator.send_to(bytes_data=b"\x00\x01")
    error = await client.receive()
    assert error["code"] == "invalid"
    assert "Binary" in error["message"]


async def test_error_replies_echo_the_request_id(room_client, room, ada):
    client = await room_client(ada, room)
    await client.receive()
    await client.send({"type": "dance", "id": 7})
    error = await client.receive()
    assert error["id"] == 7
    assert "ping" in error["message"]  # lists the known types


@override_settings(SIGNALING_RATE_BURST=5, SIGNALING_RATE_PER_SECOND=1)
async def test_a_flood_is_rate_limited_and_the_room_keeps_working(room_client, room, ada, grace):
    flooder = await room_client(ada, room)
    await flooder.receive()
    bystander = await room_client(grace, room)
    await bystander.receive()
    for n in range(30):
        await flooder.send({"type": "ping", "id": n})
    replies = []
    while not await flooder.nothing_more(0.3):
        replies.append(await flooder.receive())
    pongs = [r for r in replies if r["type"] == "pong"]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert len(pongs) == 5
    assert len(limited) == 1
    await bystander.send({"type": "ping"})
    assert (await bystander.receive())["type"] == "pong"


async def test_sync_returns_a_fresh_snapshot(room_client, room, ada, grace):
    first = await room_client(ada, room)
    await first.receive()
    second = await room_client(grace, room)
    await second.receive()
    await first.receive_until("participant_joined")
    await first.send({"type": "sync", "id": "s1"})
    snapshot = await first.receive()
    assert snapshot["type"] == "snapshot"
    assert snapshot["id"] == "s1"
    assert len(snapshot["participants"]) == 2


@override_settings(PRESENCE_HEARTBEAT_SECONDS=0.1, PRESENCE_STALE_SECONDS=30)
async def test_heartbeat_reaps_participants_of_a_crashed_worker(room_client, room, ada, grace):
    # A participant whose worker died: its row says connected but nobody refreshes it.
    ghost = await sync_to_async(record_participant)(room, grace, seen_ago=120)
    live = await room_client(ada, room)
    snapshot = await live.receive()
    assert [p["id"] for p in snapshot["participants"]] == [snapshot["you"]]  # ghost not counted
    # The join reaped it already, or the next heartbeat does; either way it is recorded.
    await ghost_state_becomes(ghost, Participant.State.DROPPED)
    me = await sync_to_async(Participant.objects.get)(pk=snapshot["you"])
    before = me.last_seen_at
    await live.nothing_more(0.4)
    me = await _refresh(me)
    assert me.last_seen_at > before  # this connection keeps itself present


async def ghost_state_becomes(ghost: Participant, state: str) -> None:
    ghost = await _refresh(ghost)
    assert ghost.state == state
    assert ghost.left_at == ghost.last_seen_at


@override_settings(PRESENCE_HEARTBEAT_SECONDS=0.1, PRESENCE_STALE_SECONDS=0.3)
async def test_stale_peer_is_announced_as_dropped_to_the_room(room_client, room, ada, grace):
    watcher = await room_client(ada, room)
    await watcher.receive()
    ghost = await sync_to_async(record_participant)(room, grace)
    left = await watcher.receive_until("participant_left", timeout=5)
    assert left == {"type": "participant_left", "participant_id": ghost.pk, "reason": "dropped"}


@override_settings(PRESENCE_HEARTBEAT_SECONDS=0.1)
async def test_connection_reaped_while_alive_is_told_to_reconnect(room_client, room, ada):
    client = await room_client(ada, room)
    you = (await client.receive())["you"]
    await sync_to_async(services.participant_leave)(
        participant_id=you, state=Participant.State.DROPPED
    )
    assert await client.expect_close(timeout=5) == protocol.CLOSE_STALE


async def test_reconnecting_tab_replaces_its_own_ghost(room_client, room, ada, grace):
    watcher = await room_client(grace, room)
    await watcher.receive()
    # Ada's previous connection still counts as present (say its worker died a moment ago).
    first = await room_client(ada, room)
    old_id = (await first.receive())["you"]
    await watcher.receive_until("participant_joined")

    again = await room_client(ada, f"{room.slug}/?resume={old_id}")
    snapshot = await again.receive()
    assert old_id not in [p["id"] for p in snapshot["participants"]]
    left = await watcher.receive_until("participant_left")
    assert left == {"type": "participant_left", "participant_id": old_id, "reason": "dropped"}
    old = await sync_to_async(Participant.objects.get)(pk=old_id)
    assert old.state == Participant.State.DROPPED


async def test_resume_cannot_end_someone_elses_connection(room_client, room, ada, grace):
    victim = await room_client(grace, room)
    victim_id = (await victim.receive())["you"]
    await room_client(ada, f"{room.slug}/?resume={victim_id}")
    record = await sync_to_async(Participant.objects.get)(pk=victim_id)
    assert record.state == Participant.State.CONNECTED
    await victim.send({"type": "ping"})
    assert (await victim.receive_until("pong"))["type"] == "pong"


@pytest.mark.parametrize("resume", ["%C2%B2", "9" * 30, "-3", "abc"])
async def test_a_malformed_resume_id_is_ignored(room_client, room, ada, resume):
    client = await room_client(ada, f"{room.slug}/?resume={resume}")
    snapshot = await client.receive()
    assert snapshot["type"] == "snapshot"
    assert [p["name"] for p in snapshot["participants"]] == ["Ada Lovelace"]


@override_settings(TURN_URLS=["turn:127.0.0.1:3478"], TURN_SECRET="s3cret", TURN_CREDENTIAL_TTL=2)
async def test_join_carries_turn_credentials_and_fresh_ones_come_before_expiry(
    room_client, room, ada
):
    client = await room_client(ada, room)
    snapshot = await client.receive()
    ice = snapshot["ice"]
    username = ice["iceServers"][0]["username"]
    assert username.endswith(f":{snapshot['you']}")
    assert ice["expiresAt"] == int(username.split(":")[0])
    refreshed = await client.receive_until("ice_servers", timeout=5)
    assert refreshed["ice"]["expiresAt"] > ice["expiresAt"]
    assert refreshed["ice"]["iceServers"][0]["credential"] != ice["iceServers"][0]["credential"]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "unsubscribe", "publisher": 9223372036854775808},
        {"type": "subscribe", "publisher": 2**64, "sdp": "v=0\r\n"},
        {
            "type": "ice",
            "target": 9223372036854775808,
            "candidate": {"candidate": "x", "sdpMid": "0"},
        },
        {"type": "unsubscribe", "publisher": 0},
        {"type": "unsubscribe", "publisher": -1},
        {"type": "ping", "id": 2**70},
    ],
)
async def test_numbers_out_of_range_are_refused_and_leave_no_ghost(
    room_client, make_room, ada, grace, message
):
    """Regression: an id beyond a bigint crashed the consumer (OverflowError in SQLite's driver,
    close 1011) without running its disconnect handler, leaving a 'connected' ghost that held
    a seat; three of them filled a room of three."""
    room = await sync_to_async(make_room)(ada, "Small", max_participants=2)
    client = await room_client(grace, room)
    await client.receive()
    await client.send(message)
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "invalid", error
    await client.send({"type": "ping", "id": "after"})
    assert await client.receive() == {"type": "pong", "id": "after"}
    await client.close()
    owner = await room_client(ada, room)  # the seat Grace held is free again
    assert (await owner.receive())["type"] == "snapshot"
    assert (
        await sync_to_async(Participant.objects.filter(state=Participant.State.CONNECTED).count)()
        == 1
    )


async def test_an_unexpected_error_ends_the_participant_instead_of_leaving_a_ghost(
    room_client, room, ada, grace, monkeypatch
):
    """Whatever goes wrong inside the consumer, the participant ends (and its media is swept):
    the room is told it left, and its seat is free."""
    from signaling import consumers

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug in a service")

    bystander = await room_client(ada, room)
    await bystander.receive()
    victim = await room_client(grace, room)
    victim_id = (await victim.receive())["you"]
    monkeypatch.setattr(consumers.media, "unpublish", broken)
    await victim.send({"type": "unpublish"})
    assert await victim.expect_close() == 1011
    left = await bystander.receive_until("participant_left")
    assert left["participant_id"] == victim_id
    participant = await sync_to_async(Participant.objects.get)(pk=victim_id)
    assert participant.state == Participant.State.DROPPED
    await bystander.send({"type": "ping"})
    assert (await bystander.receive())["type"] == "pong"


@override_settings(SIGNALING_RATE_BURST=50, SIGNALING_RATE_PER_SECOND=20)
async def test_a_flood_is_cut_as_it_arrives_even_while_the_server_is_busy(
    room_client, room, ada, grace, monkeypatch
):
    """Regression: the limits applied when a message was handled, not when it arrived, so a
    flood behind a slow request sat in memory unlimited (2,000 x 60 KB: daphne from 80 to
    199 MB) and a ping behind it was answered a minute later."""
    from signaling import consumers

    async def slow_unpublish(**kwargs):
        await asyncio.sleep(3)  # a media server that takes its time
        return False

    monkeypatch.setattr(consumers.media, "unpublish", slow_unpublish)
    flooder = await room_client(ada, room)
    await flooder.receive()
    bystander = await room_client(grace, room)
    await bystander.receive()
    await flooder.send({"type": "unpublish", "id": "slow"})
    big = json.dumps({"type": "sync", "pad": "y" * 60_000})
    started = asyncio.get_running_loop().time()
    for _ in range(2000):
        await flooder.send_text(big)
    # Told at once, while the slow request still holds the consumer.
    codes = set()
    while not {"busy", "rate_limited"} <= codes:
        reply = await flooder.receive(timeout=2)
        assert reply.get("id") != "slow", "the flood was not cut before the slow request ended"
        codes.add(reply.get("code"))
    assert asyncio.get_running_loop().time() - started < 2.5
    # Only what fits the buffer waits; the slow request's reply and a ping come soon after.
    assert (await flooder.receive_until("unpublished", timeout=5))["id"] == "slow"
    replies = []
    while not await flooder.nothing_more(0.3):
        replies.append(await flooder.receive())
    assert len(replies) <= 1024 * 1024 // 60_000 + 2
    await flooder.send({"type": "ping", "id": "after"})
    assert (await flooder.receive_until("pong", timeout=2))["id"] == "after"
    await bystander.send({"type": "ping"})
    assert (await bystander.receive())["type"] == "pong"


async def test_a_closed_socket_ends_its_participant_without_working_through_its_backlog(
    room_client, room, ada, grace, monkeypatch
):
    """Found by bench/fuzz.py: a socket closed with requests still waiting (each a slow media
    server round trip) stayed a 'connected' ghost, holding its endpoints, until every one of
    them had been handled for nobody. The backlog is dropped; a `leave` in it is kept."""
    from signaling import consumers

    async def slow_unpublish(**kwargs):
        await asyncio.sleep(0.5)
        return False

    async def vanish(client) -> None:  # the socket closes; nobody waits for the server
        await client.communicator.send_input({"type": "websocket.disconnect", "code": 1001})

    monkeypatch.setattr(consumers.media, "unpublish", slow_unpublish)
    bystander = await room_client(grace, room)
    await bystander.receive()
    client = await room_client(ada, room)
    you = (await client.receive())["you"]
    for _ in range(20):
        await client.send({"type": "unpublish"})
    await vanish(client)
    left = await bystander.receive_until("participant_left", timeout=3)  # not after 10 s
    assert left["participant_id"] == you and left["reason"] == "dropped"

    # A goodbye behind the backlog still counts as leaving.
    client = await room_client(ada, room)
    you = (await client.receive())["you"]
    for _ in range(5):
        await client.send({"type": "unpublish"})
    await client.send({"type": "leave"})
    await vanish(client)
    left = await bystander.receive_until("participant_left", timeout=3)
    assert left["participant_id"] == you and left["reason"] == "left"
