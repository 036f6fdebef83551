"""A moderator's actions, enforced on the media server, with aiortc peers in place of browsers
(through the room WebSocket, the room media service and the embedded media server): a blocked
microphone or camera stops reaching anyone although the publisher's peer keeps sending (it never
obeys anything), late subscribers too; allowing it brings it back; a removed participant holds
nothing on the media server and cannot rejoin until the room empties; an ended meeting leaves no
pipeline and the room open."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Q

from rooms.models import Room
from signaling import protocol
from signaling.models import MediaEndpoint, RoomPipeline
from tests.media.callers import Caller

from .conftest import media_objects

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Board meeting")


async def _pump_all(callers: list[Caller], seconds: float) -> None:
    await asyncio.gather(*(c.pump(seconds) for c in callers))


async def _endpoint(owner: int, publisher: int | None) -> str:
    row = MediaEndpoint.objects.filter(owner_id=owner, publisher_id=publisher, source="camera")
    return await sync_to_async(row.values_list("endpoint_id", flat=True).get)()


def _sinks(kms, publisher_endpoint: str, media_type: str) -> set[str]:
    """The endpoints the media server sends that media type of a publisher to."""
    return {sink.id for sink in kms.registry.objects[publisher_endpoint].sinks[media_type]}


async def _wait_objects(kms, count: int) -> None:
    async with asyncio.timeout(5):
        while len(media_objects(kms)) != count:
            await asyncio.sleep(0.02)


def _moderate(participant_id: int, kind: str, blocked: bool) -> dict:
    return {
        "type": "moderate_media",
        "participant_id": participant_id,
        "kind": kind,
        "blocked": blocked,
    }


async def test_a_blocked_microphone_or_camera_reaches_nobody_until_allowed(join, kms, room, people):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    await alan.subscribe(grace.id)
    everyone = [ada, grace, alan]
    await _pump_all(everyone, 0.3)
    viewer = alan.viewers[grace.id]
    await viewer.wait_video(10)
    source, alan_sink = await _endpoint(grace.id, None), await _endpoint(alan.id, grace.id)

    # Ada mutes Grace: the media server stops forwarding her sound, her picture goes on; Grace's
    # peer keeps sending sound all along.
    reply = await ada.request(_moderate(grace.id, "audio", True))
    assert reply == {
        **_moderate(grace.id, "audio", True),
        "type": "media_moderated",
        "id": reply["id"],
    }
    assert _sinks(kms, source, "AUDIO") == set()
    assert _sinks(kms, source, "VIDEO") == {alan_sink}
    blocked = await alan.wait_event("media_blocked", participant_id=grace.id)
    assert (blocked["kind"], blocked["blocked"]) == ("audio", True)
    await _pump_all(everyone, 0.5)
    frames, sound = viewer.received.video_frames, viewer.received.audio_frames
    await _pump_all(everyone, 1.0)
    assert viewer.received.audio_frames <= sound + 2  # at most what was in flight
    assert viewer.received.video_frames > frames + 10

    # A late subscriber gets her picture but not her sound.
    edsger = await join(people[3], room)
    shown = {p["id"]: p for p in edsger.snapshot["participants"]}
    assert (shown[grace.id]["audio_blocked"], shown[grace.id]["video_blocked"]) == (True, False)
    assert edsger.snapshot["moderators"] == [people[0].pk]
    await edsger.subscribe(grace.id)
    everyone.append(edsger)
    await _pump_all(everyone, 0.3)
    await edsger.viewers[grace.id].wait_video(10)
    edsger_sink = await _endpoint(edsger.id, grace.id)
    assert _sinks(kms, source, "AUDIO") == set()
    assert _sinks(kms, source, "VIDEO") == {alan_sink, edsger_sink}
    await _pump_all(everyone, 0.5)
    assert edsger.viewers[grace.id].received.audio_frames == 0

    # Allowed again: her sound reaches both.
    reply = await ada.request(_moderate(grace.id, "audio", False))
    assert reply["type"] == "media_moderated" and reply["blocked"] is False
    assert _sinks(kms, source, "AUDIO") == {alan_sink, edsger_sink}
    sound = viewer.received.audio_frames
    await _pump_all(everyone, 1.0)
    assert viewer.received.audio_frames > sound + 20
    assert edsger.viewers[grace.id].received.audio_frames > 20

    # The camera: the same, and the viewer's own `video on` does not bring it back.
    reply = await ada.request(_moderate(grace.id, "video", True))
    assert reply["type"] == "media_moderated"
    assert _sinks(kms, source, "VIDEO") == set()
    reply = await alan.request({"type": "video", "publisher": grace.id, "on": True})
    assert reply["type"] == "video_set"
    assert _sinks(kms, source, "VIDEO") == set()
    await _pump_all(everyone, 0.5)
    frames, sound = viewer.received.video_frames, viewer.received.audio_frames
    await _pump_all(everyone, 1.0)
    assert viewer.received.video_frames <= frames + 2
    assert viewer.received.audio_frames > sound + 20
    # Grace's own `media_state` changes nothing of it.
    await grace.socket.send({"type": "media_state", "audio": True, "video": True})
    await _pump_all(everyone, 0.2)
    assert _sinks(kms, source, "VIDEO") == set()
    reply = await ada.request(_moderate(grace.id, "video", False))
    assert _sinks(kms, source, "VIDEO") == {alan_sink, edsger_sink}
    await _pump_all(everyone, 0.3)
    await viewer.wait_video(frames + 30)

    # Both blocked: a new subscriber is connected to nothing, and gets both once allowed.
    for kind in ("audio", "video"):
        assert (await ada.request(_moderate(alan.id, kind, True)))["type"] == "media_moderated"
    await grace.subscribe(alan.id)
    alan_source, grace_sink = await _endpoint(alan.id, None), await _endpoint(grace.id, alan.id)
    assert grace_sink not in _sinks(kms, alan_source, "AUDIO") | _sinks(kms, alan_source, "VIDEO")
    for kind in ("audio", "video"):
        assert (await ada.request(_moderate(alan.id, kind, False)))["type"] == "media_moderated"
    assert grace_sink in _sinks(kms, alan_source, "AUDIO") & _sinks(kms, alan_source, "VIDEO")
    await _pump_all(everyone, 0.3)
    await grace.viewers[alan.id].wait_video(10)


async def test_moderators_remove_and_the_removed_cannot_rejoin_until_the_room_empties(
    join, kms, room, people, room_client
):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    await alan.subscribe(grace.id)
    await grace.subscribe(alan.id)
    await ada.subscribe(alan.id)

    # Ada makes Grace a moderator: Grace mutes Alan. Taken back, Grace is refused.
    reply = await ada.request({"type": "moderator", "user_id": people[1].pk, "on": True})
    assert reply["type"] == "moderator_set" and reply["on"] is True
    reply = await grace.request(_moderate(alan.id, "audio", True))
    assert reply["type"] == "media_moderated"
    alan_source = await _endpoint(alan.id, None)
    assert _sinks(kms, alan_source, "AUDIO") == set()
    reply = await ada.request({"type": "moderator", "user_id": people[1].pk, "on": False})
    assert reply["type"] == "moderator_set" and reply["on"] is False
    refused = await grace.request(_moderate(alan.id, "audio", False))
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    assert _sinks(kms, alan_source, "AUDIO") == set()

    # Ada removes Alan: he is told and closed, and nothing of his is left on the media server.
    alans = Q(owner_id=alan.id) | Q(publisher_id=alan.id)
    held = await sync_to_async(list)(
        MediaEndpoint.objects.filter(alans).values_list("endpoint_id", flat=True)
    )
    assert len(held) == 4  # his camera, his view of Grace, Grace's and Ada's views of him
    reply = await ada.request({"type": "remove", "participant_id": alan.id})
    assert reply["type"] == "removed" and reply["participant_id"] == alan.id
    told = await alan.socket.receive_until("participant_removed")
    assert told["participant_id"] == alan.id and told["message"]
    assert await alan.socket.expect_close() == protocol.CLOSE_REMOVED
    left = await grace.wait_event("participant_left", participant_id=alan.id)
    assert left["reason"] == "removed"
    assert not await sync_to_async(MediaEndpoint.objects.filter(alans).exists)()
    assert not set(held) & set(media_objects(kms))
    await _wait_objects(kms, 1 + 2)  # the pipeline, Ada's and Grace's cameras

    # He cannot come back into this meeting.
    again = await room_client(people[2], room)
    refused = await again.receive()
    assert refused["type"] == "refused" and refused["reason"] == "removed"
    assert await again.expect_close() == 4406

    # Once everybody has left, the meeting is over: he may join the next one.
    for caller in (ada, grace):
        await caller.socket.close()
    await _wait_objects(kms, 0)
    alan_again = await join(people[2], room)
    assert alan_again.snapshot["type"] == "snapshot"
    await alan_again.socket.close()


async def test_ending_the_meeting_releases_its_media_and_keeps_the_room(join, kms, room, people):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    await grace.subscribe(ada.id)
    await alan.subscribe(grace.id)
    assert len(media_objects(kms)) == 1 + 3 + 2

    reply = await ada.request({"type": "end_meeting"})
    assert reply == {"type": "meeting_ended", "id": reply["id"]}
    for caller in (ada, grace, alan):
        closed = await caller.socket.receive_until("room_closed")
        assert closed["reason"] == "ended"
        assert await caller.socket.expect_close() == protocol.CLOSE_ROOM_CLOSED
    assert media_objects(kms) == []
    assert not await sync_to_async(RoomPipeline.objects.exists)()
    assert not await sync_to_async(MediaEndpoint.objects.exists)()
    assert (await sync_to_async(Room.objects.get)(pk=room.pk)).closed_at is None

    # The room stays for the next meeting.
    grace_again = await join(people[1], room)
    await grace_again.publish()
    assert len(media_objects(kms)) == 1 + 1
    await grace_again.socket.close()
    await _wait_objects(kms, 0)


async def _screen_endpoint(owner: int, publisher: int | None) -> str:
    row = MediaEndpoint.objects.filter(owner_id=owner, publisher_id=publisher, source="screen")
    return await sync_to_async(row.values_list("endpoint_id", flat=True).get)()


async def test_mute_everyone_a_shared_screens_sound_and_what_viewers_turned_off(
    join, kms, room, people, monkeypatch
):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    await alan.subscribe(grace.id)
    await ada.subscribe(grace.id)
    assert (await grace.share())["type"] == "published"
    assert (await alan.watch_screen(grace.id))["type"] == "subscribed"
    camera, screen = await _endpoint(grace.id, None), await _screen_endpoint(grace.id, None)
    alan_sink, ada_sink = await _endpoint(alan.id, grace.id), await _endpoint(ada.id, grace.id)
    alan_screen = await _screen_endpoint(alan.id, grace.id)
    assert _sinks(kms, screen, "AUDIO") == {alan_screen}

    # Everyone but moderators: Grace and Alan; the sound of Grace's screen goes with her
    # microphone, its picture stays.
    reply = await ada.request({"type": "mute_all", "kind": "audio"})
    assert sorted(reply["participant_ids"]) == sorted([grace.id, alan.id])
    assert _sinks(kms, camera, "AUDIO") == set()
    assert _sinks(kms, screen, "AUDIO") == set()
    assert _sinks(kms, screen, "VIDEO") == {alan_screen}
    # A new viewer of her screen gets its picture, not its sound.
    assert (await ada.watch_screen(grace.id))["type"] == "subscribed"
    ada_screen = await _screen_endpoint(ada.id, grace.id)
    assert _sinks(kms, screen, "AUDIO") == set()
    assert _sinks(kms, screen, "VIDEO") == {alan_screen, ada_screen}
    # She unmutes herself (the room lets people): both come back.
    reply = await grace.request({"type": "unblock_self", "kind": "audio"})
    assert reply["type"] == "media_moderated" and reply["blocked"] is False
    assert _sinks(kms, camera, "AUDIO") == {alan_sink, ada_sink}
    assert _sinks(kms, screen, "AUDIO") == {alan_screen, ada_screen}

    # Alan's tile of Grace is off his screen (video off): a moderator stopping and allowing her
    # camera again does not send it to him.
    assert (await alan.request({"type": "video", "publisher": grace.id, "on": False}))[
        "on"
    ] is False
    assert _sinks(kms, camera, "VIDEO") == {ada_sink}
    for blocked in (True, False):
        assert (await ada.request(_moderate(grace.id, "video", blocked)))[
            "type"
        ] == "media_moderated"
    assert _sinks(kms, camera, "VIDEO") == {ada_sink}
    assert (await alan.request({"type": "video", "publisher": grace.id, "on": True}))["on"] is True
    assert _sinks(kms, camera, "VIDEO") == {ada_sink, alan_sink}

    # A block that lands while a subscription is being negotiated (its plan read the flags
    # before; the block went round the receivers before it was recorded) still holds.
    from signaling.media import negotiation

    real_plan = negotiation._plan_sync

    def stale_plan(participant, publisher_id, kind):
        plan = real_plan(participant, publisher_id, kind)
        if publisher_id == grace.id:  # the block commits just after the flags were read
            from rooms.models import Participant

            Participant.objects.filter(pk=grace.id).update(muted_audio_by_moderator=True)
        return plan

    monkeypatch.setattr(negotiation, "_plan_sync", stale_plan)
    edsger = await join(people[3], room)
    await edsger.subscribe(grace.id)
    edsger_sink = await _endpoint(edsger.id, grace.id)
    assert edsger_sink not in _sinks(kms, camera, "AUDIO")
    assert edsger_sink in _sinks(kms, camera, "VIDEO")
