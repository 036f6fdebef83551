"""Screen sharing through the room WebSocket, the room media service and the embedded media
server, with aiortc peers in place of browsers: a participant's screen is a second source with a
publishing endpoint of its own, which everyone (late joiners too) receives like a camera, and
which is released when it stops, when its sharer leaves, and never made when the room forbids
it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from rooms.models import Room
from signaling.models import MediaEndpoint
from tests.mediaserver.peers import Peer

from .conftest import media_objects

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Design review")


async def _sources() -> list[tuple[int, int | None, str]]:
    rows = MediaEndpoint.objects.values_list("owner_id", "publisher_id", "source")
    return sorted(await sync_to_async(list)(rows), key=str)


async def _wait_objects(kms, count: int) -> None:
    async with asyncio.timeout(5):
        while len(media_objects(kms)) != count:
            await asyncio.sleep(0.02)


@pytest.mark.topology
async def test_a_shared_screen_reaches_everyone_and_stops_cleanly(join, kms, room, people):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    await grace.subscribe(ada.id)  # Grace also sees Ada's camera: the share must not touch it

    reply = await ada.share()
    assert reply["type"] == "published", reply
    for viewer in (grace, alan):
        await viewer.wait_event("participant_published", participant_id=ada.id, source="screen")
        assert (await viewer.watch_screen(ada.id))["type"] == "subscribed"
    await asyncio.gather(*(c.pump(0.5) for c in (ada, grace, alan)))
    for viewer in (grace, alan):
        await viewer.screens[ada.id].wait_video(15)
        assert viewer.screens[ada.id].received.non_black_frames > 0
    # pipeline, 3 cameras, Grace's view of Ada's camera, Ada's screen and its 2 viewers
    assert len(media_objects(kms)) == 1 + 3 + 1 + 1 + 2
    assert (ada.id, None, "screen") in await _sources()

    # A late joiner learns from the snapshot who shares.
    edsger = await join(people[3], room)
    sharing = {p["id"]: p["sharing"] for p in edsger.snapshot["participants"]}
    assert sharing == {ada.id: True, grace.id: False, alan.id: False, edsger.id: False}
    assert (await edsger.watch_screen(ada.id))["type"] == "subscribed"
    await edsger.socket.close()
    await edsger.close_peers()
    await _wait_objects(kms, 1 + 3 + 1 + 1 + 2)

    # Ada stops sharing: her screen and everything it fed go; her camera stays, and so does
    # Grace's view of it.
    reply = await ada.request({"type": "unpublish", "source": "screen"})
    assert reply == {"type": "unpublished", "source": "screen", "id": reply["id"]}
    for viewer in (grace, alan):
        event = await viewer.wait_event("participant_unpublished", source="screen")
        assert event == {
            "type": "participant_unpublished",
            "participant_id": ada.id,
            "source": "screen",
        }
    assert len(media_objects(kms)) == 1 + 3 + 1
    assert all(source == "camera" for *_, source in await _sources())
    await grace.viewers[ada.id].wait_video(10)

    for caller in (ada, grace, alan):
        await caller.socket.close()
    await _wait_objects(kms, 0)


async def test_the_sharer_leaving_takes_the_share_with_it(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    assert (await ada.share())["type"] == "published"  # a screen without a camera
    assert (await grace.watch_screen(ada.id))["type"] == "subscribed"
    assert len(media_objects(kms)) == 1 + 1 + 1
    await ada.socket.close()  # the tab closed
    left = await grace.wait_event("participant_left")
    assert left["participant_id"] == ada.id
    await _wait_objects(kms, 1)  # the room's pipeline, while Grace is still in
    assert await _sources() == []
    await grace.socket.close()
    await _wait_objects(kms, 0)


async def test_camera_and_screen_are_separate_sources(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    await ada.share()
    await grace.subscribe(ada.id)
    await grace.watch_screen(ada.id)
    # Stopping the camera leaves the screen, and the other way round.
    reply = await ada.request({"type": "unpublish"})
    assert reply["source"] == "camera"
    assert {(o, p, s) for o, p, s in await _sources()} == {
        (ada.id, None, "screen"),
        (grace.id, ada.id, "screen"),
    }
    await grace.screens[ada.id].wait_video(15)
    # Video of a screen off screen can be switched off like a camera's.
    reply = await grace.request(
        {"type": "video", "publisher": ada.id, "source": "screen", "on": False}
    )
    assert reply["type"] == "video_set" and reply["source"] == "screen"
    for caller in (ada, grace):
        await caller.socket.close()
    await _wait_objects(kms, 0)


async def test_a_room_for_the_owners_screen_only_refuses_the_others(join, kms, room, people):
    await sync_to_async(Room.objects.filter(pk=room.pk).update)(
        screen_sharing=Room.ScreenSharing.OWNER
    )
    ada, grace = await join(people[0], room), await join(people[1], room)
    refused = await grace.share()
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    assert media_objects(kms) == [] and await _sources() == []
    # The connection goes on: Grace can still publish her camera; Ada, the owner, can share.
    await grace.publish()
    assert (await ada.share())["type"] == "published"
    for caller in (ada, grace):
        await caller.socket.close()
    await _wait_objects(kms, 0)


async def test_bad_screen_requests_get_clear_errors(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()  # a camera, no screen
    peer = Peer(send=False, receive=True)
    offer = await peer.offer()
    await peer.close()
    cases = [
        ({"type": "publish", "source": "window", "sdp": offer}, "invalid"),
        ({"type": "subscribe", "publisher": ada.id, "source": "screen", "sdp": offer}, None),
        ({"type": "subscribe", "publisher": grace.id, "source": "screen", "sdp": offer}, None),
        ({"type": "unsubscribe", "publisher": ada.id, "source": 3}, "invalid"),
        ({"type": "video", "publisher": ada.id, "source": "screen", "on": False}, None),
        # Only your own share can be stopped: the message names no one else.
        ({"type": "unpublish", "source": "screen", "publisher": ada.id}, "invalid"),
    ]
    codes = []
    for message, code in cases:
        reply = await grace.request(message)
        assert reply["type"] == "error", (message, reply)
        codes.append(reply["code"])
        if code is not None:
            assert reply["code"] == code, (message, reply)
    assert codes[1] == "not_publishing"  # Ada shares no screen
    assert codes[2] == "invalid"  # your own screen: you have it already
    assert codes[4] == "not_subscribed"
    assert "'source'" in (await grace.request(cases[0][0]))["message"]
    # Nothing was made, and the connection still works.
    assert (await grace.request({"type": "ping"}))["type"] == "pong"
    for caller in (ada, grace):
        await caller.socket.close()
    await _wait_objects(kms, 0)


async def test_two_people_share_at_once(join, kms, room, people):
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for sharer in (ada, grace):
        assert (await sharer.share())["type"] == "published"
    for sharer in (ada, grace):
        await alan.wait_event("participant_published", participant_id=sharer.id, source="screen")
        assert (await alan.watch_screen(sharer.id))["type"] == "subscribed"
    await asyncio.gather(*(c.pump(0.5) for c in (ada, grace, alan)))
    for sharer in (ada, grace):
        await alan.screens[sharer.id].wait_video(15)
    # Ada shares again (another window): the same source negotiated afresh. Her old endpoint
    # goes; Alan hears of it again and his new view replaces the old one.
    alan.events.clear()
    assert (await ada.share())["type"] == "published"
    await alan.wait_event("participant_published", participant_id=ada.id, source="screen")
    assert (await alan.watch_screen(ada.id))["type"] == "subscribed"
    assert len(media_objects(kms)) == 1 + 2 + 2  # pipeline, two screens, Alan's two views
    await asyncio.gather(*(c.pump(0.5) for c in (ada, alan)))
    await alan.screens[ada.id].wait_video(15)
    for caller in (ada, grace, alan):
        await caller.socket.close()
    await _wait_objects(kms, 0)
