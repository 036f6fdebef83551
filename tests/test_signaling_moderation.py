"""Running a meeting on the room socket, through the real ASGI application (no media here:
tests/media/test_moderation.py has the media server): who may do what, in which room, what
everyone and late joiners are told, removal and its refused rejoin, ending the meeting; and
every refusal a clean `error` reply after which the socket goes on working."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async

from rooms import selectors, services
from rooms.models import Participant, Room, RoomModerator, RoomRemoval
from signaling import protocol
from signaling.moderation import Moderation
from tests.conftest import RoomClient, enter_room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_room(make_room, alan):
    return make_room(alan, "Alan's room")


async def _still_works(client: RoomClient) -> None:
    await client.send({"type": "ping", "id": "alive"})
    assert await client.receive_until("pong") == {"type": "pong", "id": "alive"}


def _state() -> tuple:
    """Everything a moderator's action could change."""
    return (
        sorted(
            Participant.objects.values_list(
                "pk", "state", "muted_audio_by_moderator", "muted_video_by_moderator"
            )
        ),
        sorted(RoomModerator.objects.values_list("room_id", "user_id")),
        sorted(RoomRemoval.objects.values_list("room_id", "user_id")),
        sorted(Room.objects.values_list("pk", "closed_at")),
    )


async def test_the_owner_grants_and_revokes_moderation_and_late_joiners_see_it(
    room_client, room, ada, grace, alan
):
    ada_socket, ada_snapshot = await enter_room(room_client, ada, room)
    grace_socket, grace_snapshot = await enter_room(room_client, grace, room)
    assert ada_snapshot["moderators"] == [ada.pk]
    shown = {p["id"]: p for p in grace_snapshot["participants"]}
    assert shown[grace_snapshot["you"]]["audio_blocked"] is False
    assert shown[grace_snapshot["you"]]["video_blocked"] is False

    reply = await ada_socket.ask({"type": "moderator", "id": 1, "user_id": grace.pk, "on": True})
    assert reply == {"type": "moderator_set", "user_id": grace.pk, "on": True, "id": 1}
    changed = await grace_socket.receive_until("moderators_changed")
    assert changed == {"type": "moderators_changed", "user_ids": sorted([ada.pk, grace.pk])}
    _, alan_snapshot = await enter_room(room_client, alan, room)
    assert alan_snapshot["moderators"] == sorted([ada.pk, grace.pk])

    # Grace, a moderator now, blocks Alan's microphone: the room is told, and a late joiner.
    reply = await grace_socket.ask(
        {
            "type": "moderate_media",
            "id": "m",
            "participant_id": alan_snapshot["you"],
            "kind": "audio",
            "blocked": True,
        },
    )
    assert reply == {
        "type": "media_moderated",
        "participant_id": alan_snapshot["you"],
        "kind": "audio",
        "blocked": True,
        "id": "m",
    }
    blocked = await ada_socket.receive_until("media_blocked")
    assert blocked == {
        "type": "media_blocked",
        "participant_id": alan_snapshot["you"],
        "kind": "audio",
        "blocked": True,
    }
    ada_again, snapshot = await enter_room(room_client, ada, room)
    shown = {p["id"]: p for p in snapshot["participants"]}
    assert (
        shown[alan_snapshot["you"]]["audio_blocked"],
        shown[alan_snapshot["you"]]["video_blocked"],
    ) == (True, False)
    await ada_again.close()

    # Moderation is kept with the room (another meeting too) until the owner takes it back.
    reply = await ada_socket.ask({"type": "moderator", "id": 2, "user_id": grace.pk, "on": False})
    assert reply == {"type": "moderator_set", "user_id": grace.pk, "on": False, "id": 2}
    changed = await grace_socket.receive_until("moderators_changed")
    assert changed["user_ids"] == [ada.pk]
    refused = await grace_socket.ask(
        {
            "type": "moderate_media",
            "id": "m2",
            "participant_id": alan_snapshot["you"],
            "kind": "audio",
            "blocked": False,
        },
    )
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    await _still_works(grace_socket)


async def test_the_authorisation_matrix(
    room_client, room, other_room, ada, grace, alan, edsger, caplog, monkeypatch
):
    """A plain participant, and a moderator (the owner, even) of another room, are refused every
    action; nobody reaches a participant of another room; nothing changes."""
    monkeypatch.setitem(Moderation.RATES, "moderation", (1000.0, 1000))
    ada_socket, ada_snapshot = await enter_room(room_client, ada, room)
    grace_socket, grace_snapshot = await enter_room(room_client, grace, room)
    alan_socket, alan_snapshot = await enter_room(room_client, alan, room)
    other_socket, _ = await enter_room(room_client, edsger, other_room)
    alan_home, alan_home_snapshot = await enter_room(room_client, alan, other_room)
    await sync_to_async(RoomModerator.objects.create)(room=other_room, user=edsger)
    ada_id, alan_id = ada_snapshot["you"], alan_snapshot["you"]
    before = await sync_to_async(_state)()

    def actions(target: int, user_id: int) -> list[dict]:
        return [
            {"type": "moderator", "user_id": user_id, "on": True},
            {"type": "moderator", "user_id": user_id, "on": False},
            {"type": "moderate_media", "participant_id": target, "kind": "audio", "blocked": True},
            {"type": "moderate_media", "participant_id": target, "kind": "video", "blocked": True},
            {"type": "remove", "participant_id": target},
            {"type": "readmit", "user_id": user_id},
            {"type": "end_meeting"},
            {"type": "remove", "participant_id": target, "ban": True},
            {"type": "mute_all", "kind": "audio"},
            {"type": "admit", "user_id": user_id},
            {"type": "deny", "user_id": None},
        ]

    caplog.set_level(logging.WARNING, logger="rooms.services")
    # Grace, a plain participant: forbidden, whatever the target; Alan, the owner of another
    # room (in this one a plain participant): the same.
    for socket, target, user_id in (
        (grace_socket, alan_id, alan.pk),
        (grace_socket, ada_id, ada.pk),
        (alan_socket, grace_snapshot["you"], grace.pk),
    ):
        for n, action in enumerate(actions(target, user_id)):
            reply = await socket.ask({**action, "id": n})
            assert reply["type"] == "error" and reply["code"] == "forbidden", (action, reply)
        await _still_works(socket)
    assert "not a moderator" in caplog.text and "not its owner" in caplog.text
    # The moderator of another room, in that room, cannot reach into this one.
    for n, action in enumerate(actions(alan_id, alan.pk)[2:5]):
        reply = await other_socket.ask({**action, "id": n})
        assert reply["type"] == "error" and reply["code"] == "not_found", (action, reply)
    # Nor can this room's owner reach into the other room, where she is nobody.
    for n, action in enumerate(actions(alan_home_snapshot["you"], alan.pk)[2:5]):
        reply = await ada_socket.ask({**action, "id": n})
        assert reply["type"] == "error" and reply["code"] == "not_found", (action, reply)
    reply = await ada_socket.ask({"type": "moderator", "id": "x", "user_id": edsger.pk, "on": True})
    assert reply["code"] == "not_found"
    # Nobody mutes or removes the owner; a moderator does not remove themselves.
    await sync_to_async(RoomModerator.objects.create)(room=room, user=grace)
    for action in actions(ada_id, ada.pk)[2:5]:
        reply = await grace_socket.ask({**action, "id": "o"})
        assert reply["type"] == "error" and reply["code"] == "forbidden", (action, reply)
    reply = await grace_socket.ask(
        {"type": "remove", "id": "s", "participant_id": grace_snapshot["you"]}
    )
    assert reply["code"] == "invalid"
    await sync_to_async(RoomModerator.objects.filter(user=grace).delete)()

    # Bad fields: `invalid`, acting on nothing.
    for bad in (
        {"type": "moderate_media", "participant_id": alan_id, "kind": "screen", "blocked": True},
        {"type": "moderate_media", "participant_id": alan_id, "kind": "audio"},
        {"type": "moderate_media", "participant_id": alan_id, "kind": "audio", "blocked": 1},
        {"type": "remove", "participant_id": "7"},
        {"type": "remove", "participant_id": 0},
        {"type": "moderator", "user_id": grace.pk},
        {"type": "end_meeting", "everyone": True},
        {"type": "readmit"},
        {"type": "admit"},
        {"type": "mute_all", "kind": "screen"},
        {"type": "remove", "participant_id": alan_id, "ban": "yes"},
    ):
        reply = await ada_socket.ask({**bad, "id": "bad"})
        assert reply["type"] == "error" and reply["code"] == "invalid", (bad, reply)
    assert await sync_to_async(_state)() == before
    for socket in (ada_socket, grace_socket, alan_socket, other_socket, alan_home):
        await _still_works(socket)


async def test_a_removed_participant_is_told_closed_and_kept_out_until_the_room_empties(
    room_client, room, ada, grace, alan
):
    ada_socket, _ = await enter_room(room_client, ada, room)
    grace_socket, _ = await enter_room(room_client, grace, room)
    alan_socket, alan_snapshot = await enter_room(room_client, alan, room)
    alan_id = alan_snapshot["you"]

    reply = await ada_socket.ask({"type": "remove", "id": "r", "participant_id": alan_id})
    assert reply == {"type": "removed", "participant_id": alan_id, "id": "r"}
    told = await alan_socket.receive_until("participant_removed")
    assert told == {
        "type": "participant_removed",
        "participant_id": alan_id,
        "message": "A moderator removed you from this meeting.",
    }
    assert await alan_socket.expect_close() == protocol.CLOSE_REMOVED == 4406
    left = await grace_socket.receive_until("participant_left")
    assert left == {"type": "participant_left", "participant_id": alan_id, "reason": "removed"}
    state = await sync_to_async(Participant.objects.values_list("state", flat=True).get)(pk=alan_id)
    assert state == Participant.State.REMOVED

    # A rejoin (a new tab, a reconnect) is refused, with a reason the page will not retry.
    again = await room_client(alan, room)
    refused = await again.receive()
    assert refused["type"] == "refused" and refused["reason"] == "removed"
    assert await again.expect_close() == 4406
    assert 4406 in protocol.close_codes.for_browser()["final"]

    # A moderator lets him back in.
    reply = await ada_socket.ask({"type": "readmit", "id": "b", "user_id": alan.pk})
    assert reply == {"type": "readmitted", "user_id": alan.pk, "id": "b"}
    back, back_snapshot = await enter_room(room_client, alan, room)
    reply = await ada_socket.ask(
        {"type": "remove", "id": "r2", "participant_id": back_snapshot["you"]}
    )
    assert reply["type"] == "removed"
    assert await back.expect_close() == 4406

    # Once everybody has left, the meeting is over: he may join the next one.
    for socket in (ada_socket, grace_socket):
        await socket.send({"type": "leave"})
        assert await socket.expect_close() == protocol.CLOSE_LEFT
    assert not await sync_to_async(RoomRemoval.objects.exists)()
    await enter_room(room_client, alan, room)


async def test_a_tab_that_reconnects_keeps_what_a_moderator_blocked(room_client, room, ada, grace):
    ada_socket, _ = await enter_room(room_client, ada, room)
    _, grace_snapshot = await enter_room(room_client, grace, room)
    grace_id = grace_snapshot["you"]
    for kind in ("audio", "video"):
        payload = {"type": "moderate_media", "participant_id": grace_id, "kind": kind}
        reply = await ada_socket.ask({**payload, "blocked": True, "id": kind})
        assert reply["type"] == "media_moderated"
    _, snapshot = await enter_room(room_client, grace, f"{room.slug}/?resume={grace_id}")
    shown = {p["id"]: p for p in snapshot["participants"]}
    assert grace_id not in shown
    assert (shown[snapshot["you"]]["audio_blocked"], shown[snapshot["you"]]["video_blocked"]) == (
        True,
        True,
    )


async def test_ending_the_meeting_tells_everyone_and_the_room_stays_open(
    room_client, room, ada, grace, alan
):
    ada_socket, _ = await enter_room(room_client, ada, room)
    grace_socket, _ = await enter_room(room_client, grace, room)
    _, alan_snapshot = await enter_room(room_client, alan, room)
    await sync_to_async(RoomModerator.objects.create)(room=room, user=grace)
    reply = await ada_socket.ask(
        {"type": "remove", "id": "r", "participant_id": alan_snapshot["you"]}
    )
    assert reply["type"] == "removed"

    reply = await grace_socket.ask({"type": "end_meeting", "id": "end"})
    assert reply == {"type": "meeting_ended", "id": "end"}
    for socket in (ada_socket, grace_socket):
        closed = await socket.receive_until("room_closed")
        assert closed == {
            "type": "room_closed",
            "reason": "ended",
            "message": "A moderator ended the meeting.",
        }
        assert await socket.expect_close() == protocol.CLOSE_ROOM_CLOSED
    connected = Participant.objects.filter(state=Participant.State.CONNECTED)
    assert not await sync_to_async(connected.exists)()
    fresh = await sync_to_async(Room.objects.get)(pk=room.pk)
    assert fresh.closed_at is None
    # The next meeting: anyone may join, the one removed from the last too; moderators stay.
    _, snapshot = await enter_room(room_client, alan, room)
    assert snapshot["moderators"] == sorted([ada.pk, grace.pk])


async def test_staff_moderate_any_room(room_client, edsger, room, grace):
    staff = edsger
    staff.is_staff = True
    await sync_to_async(staff.save)(update_fields=["is_staff"])
    assert await sync_to_async(selectors.room_moderates)(room=room, user=staff)
    assert not await sync_to_async(selectors.room_moderates)(room=room, user=grace)
    staff_socket, _ = await enter_room(room_client, staff, room)
    _, grace_snapshot = await enter_room(room_client, grace, room)
    reply = await staff_socket.ask(
        {
            "type": "moderate_media",
            "id": 1,
            "participant_id": grace_snapshot["you"],
            "kind": "video",
            "blocked": True,
        },
    )
    assert reply["type"] == "media_moderated"
    with pytest.raises(services.ActionRefused) as refused:
        await sync_to_async(services.moderator_grant)(
            room_id=room.pk, user_id=grace.pk, by_user=staff
        )
    assert refused.value.code == "forbidden"  # making moderators is the owner's


async def test_moderator_actions_have_a_rate_limit(room_client, room, ada, grace):
    ada_socket, _ = await enter_room(room_client, ada, room)
    _, grace_snapshot = await enter_room(room_client, grace, room)
    codes = []
    for n in range(14):
        payload = {
            "type": "moderate_media",
            "participant_id": grace_snapshot["you"],
            "kind": "audio",
        }
        reply = await ada_socket.ask({**payload, "blocked": n % 2 == 0, "id": n})
        codes.append(reply.get("code", reply["type"]))
    assert "rate_limited" in codes and codes[:10] == ["media_moderated"] * 10
    await _still_works(ada_socket)


async def test_mute_everyone_joining_muted_unmuting_yourself_and_banning(
    room_client, room, ada, grace, alan
):
    ada_socket, _ = await enter_room(room_client, ada, room)
    grace_socket, _ = await enter_room(room_client, grace, room)
    await ada_socket.ask({"type": "moderator", "id": 0, "user_id": grace.pk, "on": True})
    alan_socket, alan_snapshot = await enter_room(room_client, alan, room)
    alan_id = alan_snapshot["you"]

    # Everyone who is not a moderator: Alan only (Grace moderates, Ada owns the room).
    reply = await ada_socket.ask({"type": "mute_all", "id": 1, "kind": "audio"})
    assert reply == {"type": "muted_all", "kind": "audio", "participant_ids": [alan_id], "id": 1}
    told = await alan_socket.receive_until("media_blocked")
    assert (told["participant_id"], told["kind"], told["blocked"]) == (alan_id, "audio", True)
    # Again: nobody is newly muted.
    reply = await ada_socket.ask({"type": "mute_all", "id": 2, "kind": "audio"})
    assert reply["participant_ids"] == []

    # The room lets people unmute themselves (the default): Alan does.
    reply = await alan_socket.ask({"type": "unblock_self", "id": 3, "kind": "audio"})
    assert reply == {
        "type": "media_moderated",
        "participant_id": alan_id,
        "kind": "audio",
        "blocked": False,
        "id": 3,
    }
    # Not any more: muted again, he must ask (raise his hand).
    await sync_to_async(services.room_update)(room=room, self_unmute=False)
    await ada_socket.ask({"type": "mute_all", "id": 4, "kind": "audio"})
    reply = await alan_socket.ask({"type": "unblock_self", "id": 5, "kind": "audio"})
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    assert await sync_to_async(
        Participant.objects.filter(pk=alan_id, muted_audio_by_moderator=True).exists
    )()
    # A new tab of his starts as muted as the first (no escape by opening another).
    second_tab, snapshot = await enter_room(room_client, alan, room)
    assert {p["id"]: p["audio_blocked"] for p in snapshot["participants"]}[snapshot["you"]]
    await second_tab.close()

    # "Everyone joins muted": a newcomer starts muted by a moderator; a moderator does not.
    await sync_to_async(services.room_update)(room=room, join_muted=True)
    grace_again, snapshot = await enter_room(room_client, grace, room)
    assert not {p["id"]: p["audio_blocked"] for p in snapshot["participants"]}[snapshot["you"]]
    await grace_again.close()

    # Removed and banned: refused after the meeting too, until readmitted.
    reply = await ada_socket.ask(
        {"type": "remove", "id": 6, "participant_id": alan_id, "ban": True}
    )
    assert reply["type"] == "removed"
    await alan_socket.expect_close()
    for socket in (ada_socket, grace_socket):
        await socket.send({"type": "leave"})
        await socket.expect_close()
    refused = await room_client(alan, room)
    assert (await refused.receive())["reason"] == "banned"
    assert await sync_to_async(RoomRemoval.objects.filter(user=alan, banned=True).exists)()
    ada_socket, _ = await enter_room(room_client, ada, room)
    await ada_socket.ask({"type": "readmit", "id": 7, "user_id": alan.pk})
    _, snapshot = await enter_room(room_client, alan, room)
    # (everyone joins muted now: him too)
    assert {p["id"]: p["audio_blocked"] for p in snapshot["participants"]}[snapshot["you"]]
