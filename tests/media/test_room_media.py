"""Calls through the room WebSocket (the real ASGI application), the room media service and the
embedded media server, with aiortc peers in place of browsers: publish, subscribe, trickle ICE,
every way of leaving, bad input, and a media server that is down or lost its pipeline."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from rooms import services
from rooms.models import Participant
from signaling import media
from signaling.models import MediaEndpoint, RoomPipeline
from tests.live import free_port
from tests.media.callers import Caller
from tests.mediaserver.peers import Peer

from .conftest import media_objects, pipelines

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Weekly sync")


async def _offer(*, send: bool) -> str:
    """A real offer from a peer that is closed again at once."""
    peer = Peer(send=send, receive=not send)
    try:
        return await peer.offer()
    finally:
        await peer.close()


def _without_fingerprint(sdp: str) -> str:
    return "".join(line for line in sdp.splitlines(True) if not line.startswith("a=fingerprint"))


async def _rows() -> list[MediaEndpoint]:
    return await sync_to_async(list)(MediaEndpoint.objects.all())


async def _pump_all(callers: list[Caller], seconds: float) -> None:
    await asyncio.gather(*(c.pump(seconds) for c in callers))


@pytest.mark.topology
async def test_three_people_see_each_other_and_leaving_releases_everything(join, kms, room, people):
    callers = [await join(user, room) for user in people[:3]]
    for caller in callers:
        await caller.publish()
    # Everyone now hears of everyone else's publishing; the snapshot of a late joiner says it too.
    for caller in callers:
        for other in callers:
            if other is not caller:
                await caller.subscribe(other.id)
    await _pump_all(callers, 0.5)
    for caller in callers:
        for peer in caller.viewers.values():
            await peer.wait_video(15)
            assert peer.received.non_black_frames > 0
            assert peer.received.audio_frames > 0
    assert len(pipelines(kms)) == 1
    assert len(media_objects(kms)) == 1 + 3 + 6  # pipeline, 3 publishing, 6 receiving endpoints
    published = [e for e in callers[0].events if e["type"] == "participant_published"]
    assert {e["participant_id"] for e in published} >= {callers[1].id, callers[2].id}

    late = await join(people[3], room)
    assert {p["id"] for p in late.snapshot["participants"] if p["publishing"]} == {
        c.id for c in callers
    }

    # Leaving releases the leaver's endpoints and those others held for it.
    await callers[0].socket.send({"type": "leave"})
    assert await callers[0].socket.expect_close() == 4000
    await callers[0].close_peers()
    assert len(media_objects(kms)) == 1 + 2 + 2
    rows = await _rows()
    assert all(callers[0].id not in (r.owner_id, r.publisher_id) for r in rows)

    # A dropped socket (tab closed) is cleaned up the same way.
    await callers[1].socket.close()
    await callers[1].close_peers()
    await late.socket.close()
    async with asyncio.timeout(5):
        while len(media_objects(kms)) != 1 + 1:
            await asyncio.sleep(0.02)
    # The last one out takes the pipeline with them.
    await callers[2].socket.send({"type": "leave"})
    await callers[2].socket.expect_close()
    assert media_objects(kms) == []
    assert await sync_to_async(RoomPipeline.objects.count)() == 0
    assert await _rows() == []


@pytest.mark.topology
async def test_concurrent_first_publishes_make_one_pipeline(join, kms, room, people):
    callers = [await join(user, room) for user in people]
    await asyncio.gather(*(caller.publish() for caller in callers))
    assert len(pipelines(kms)) == 1
    assert await sync_to_async(RoomPipeline.objects.count)() == 1
    for caller in callers:
        await caller.socket.close()
    async with asyncio.timeout(5):
        while media_objects(kms):
            await asyncio.sleep(0.02)


async def test_candidates_before_the_offer_are_kept(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    ada.publisher = Peer(send=True, receive=False)
    offer = await ada.publisher.offer()
    await ada.trickle(ada.publisher, "publish")  # before the endpoint exists
    reply = await ada.request({"type": "publish", "sdp": offer})
    assert reply["type"] == "published"
    await ada.publisher.accept(reply["sdp"])
    await grace.subscribe(ada.id)
    await _pump_all([ada, grace], 0.3)
    await grace.viewers[ada.id].wait_video(10)


async def test_early_candidates_are_bounded_per_connection(join, kms, room, people):
    """Found while reviewing issue 10: candidates for endpoints that do not exist yet were kept
    per target without a bound on the targets, so one connection could fill memory with ids."""
    ada = await join(people[0], room)
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    for target in range(1000, 1100):  # accepted silently; refused with an error
        await ada.socket.send(
            {"type": "ice", "target": target, "candidate": candidate, "id": target}
        )
    await ada.socket.send({"type": "ping", "id": "end"})
    refused = []
    while (reply := await ada.socket.receive())["type"] != "pong":
        assert reply["type"] == "error" and reply["code"] == "bad_candidate", reply
        refused.append(reply["id"])
    assert refused == list(range(1064, 1100))


async def test_nobody_reaches_into_another_room_or_endpoint(join, kms, room, people, make_room):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    other_room = await sync_to_async(make_room)(people[2], "Elsewhere")
    stranger = await join(people[2], other_room)
    refused = await stranger.request(
        {"type": "subscribe", "publisher": ada.id, "sdp": await _offer(send=False)}
    )
    assert refused["type"] == "error" and refused["code"] == "not_publishing"
    # Grace is not publishing: nobody can subscribe to her.
    offer = await _offer(send=False)
    refused = await ada.request({"type": "subscribe", "publisher": grace.id, "sdp": offer})
    assert refused["code"] == "not_publishing"
    refused = await ada.request({"type": "subscribe", "publisher": ada.id, "sdp": offer})
    assert refused["code"] == "invalid"
    # A stranger's candidates name Ada's endpoint in vain: they only ever reach its own.
    before = len(kms.registry.objects)
    await stranger.socket.send(
        {
            "type": "ice",
            "target": "publish",
            "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"},
        }
    )
    assert (await stranger.request({"type": "ping"}))["type"] == "pong"
    assert len(kms.registry.objects) == before
    await stranger.socket.close()


async def test_bad_media_input_gets_clear_errors_and_the_call_goes_on(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    cases = [
        ({"type": "publish", "sdp": "hello"}, "invalid"),
        ({"type": "publish"}, "invalid"),
        ({"type": "subscribe", "publisher": "ada", "sdp": "v=0"}, "invalid"),
        (
            {"type": "ice", "target": "everyone", "candidate": {"candidate": "", "sdpMid": "0"}},
            "invalid",
        ),
        ({"type": "ice", "target": "publish", "candidate": {"candidate": "x"}}, "invalid"),
        (
            {"type": "ice", "target": "publish", "candidate": {"candidate": 5, "sdpMid": "0"}},
            "invalid",
        ),
        (
            {
                "type": "ice",
                "target": "publish",
                "candidate": {"candidate": "x", "sdpMid": "0", "evil": 1},
            },
            "invalid",
        ),
        (
            {
                "type": "ice",
                "target": "publish",
                "candidate": {"candidate": "garbage", "sdpMid": "0"},
            },
            "bad_candidate",
        ),
        (
            {
                "type": "subscribe",
                "publisher": ada.id,
                "sdp": "v=0\r\nm=garbage\r\na=fingerprint:x\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n",
            },
            "bad_sdp",
        ),
        # Regression: an offer without a DTLS fingerprint made an endpoint that could never
        # connect; it is refused before the media server is asked.
        (
            {
                "type": "subscribe",
                "publisher": ada.id,
                "sdp": _without_fingerprint(await _offer(send=False)),
            },
            "invalid",
        ),
    ]
    for message, code in cases:
        reply = await grace.request(message) if message["type"] != "ice" else None
        if reply is None:
            target = message["target"]
            sender = ada if target == "publish" else grace
            reply = await sender.request(message)
        assert reply["type"] == "error" and reply["code"] == code, (message, reply)
        assert reply["message"]
    # Nothing half-made stayed behind; the call still works.
    assert len(media_objects(kms)) == 2
    await grace.subscribe(ada.id)
    await _pump_all([ada, grace], 0.3)
    await grace.viewers[ada.id].wait_video(10)
    reply = await grace.request({"type": "unsubscribe", "publisher": ada.id})
    assert (reply["type"], reply["publisher"]) == ("unsubscribed", ada.id)
    assert len(media_objects(kms)) == 2
    assert (await ada.request({"type": "unpublish"}))["type"] == "unpublished"
    assert len(media_objects(kms)) == 1  # the pipeline stays while people are in the room


async def test_a_media_server_that_is_down_gets_a_clear_message(join, kms, room, people, settings):
    ada = await join(people[0], room)
    settings.KMS_URLS = [f"ws://127.0.0.1:{free_port()}/kurento"]
    reply = await ada.request({"type": "publish", "sdp": await _offer(send=True)})
    assert reply["type"] == "error" and reply["code"] == "media_unavailable"
    assert "media server" in reply["message"]
    assert (await ada.request({"type": "ping"}))["type"] == "pong"
    settings.KMS_URLS = [kms.url]  # back up: the same connection publishes
    await ada.publish()


async def test_a_pipeline_lost_by_the_media_server_is_made_again(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    (lost,) = pipelines(kms)
    await kms.registry.objects[lost].release()  # as after a media server restart
    await grace.publish()
    (new,) = pipelines(kms)
    assert new != lost
    # Ada's old publishing connection is dead; publishing again replaces it.
    await ada.publish()
    await grace.subscribe(ada.id)
    await _pump_all([ada, grace], 0.3)
    await grace.viewers[ada.id].wait_video(10)


async def test_a_reaped_participant_and_a_deleted_room_release_their_media(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    await grace.publish()
    await grace.subscribe(ada.id)
    # Ada's worker died: her row stays "connected" until a reaper marks it dropped.
    await sync_to_async(Participant.objects.filter(pk=ada.id).update)(
        state=Participant.State.DROPPED
    )
    assert await media.sweep_room(room.pk) == 2  # her endpoint and Grace's receiving one
    assert len(media_objects(kms)) == 2
    # The room is deleted around Grace: the pipeline goes with it.
    await sync_to_async(services.room_delete)(room=room)
    assert await grace.socket.expect_close() == 4410
    await grace.socket.close()  # as daphne does once the socket closed
    async with asyncio.timeout(5):
        while media_objects(kms):
            await asyncio.sleep(0.02)
    assert await sync_to_async(RoomPipeline.objects.count)() == 0


async def test_sweep_media_cleans_up_after_a_dead_worker(join, kms, room, people):
    """Every worker of a room died: the command reaps its participants and frees their media."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    await grace.subscribe(ada.id)
    assert len(media_objects(kms)) == 3
    long_ago = timezone.now() - timedelta(hours=1)
    await sync_to_async(Participant.objects.update)(last_seen_at=long_ago)
    out = StringIO()
    # A plain thread, as from cron: the command runs its own event loop.
    await asyncio.to_thread(call_command, "sweep_media", stdout=out)
    assert "Reaped 2 stale participant(s); released 3 media object(s)." in out.getvalue()
    assert media_objects(kms) == []


async def test_switching_the_camera_or_microphone_is_told_to_the_room(join, kms, room, people):
    ada, grace = await join(people[0], room), await join(people[1], room)
    refused = await ada.request({"type": "media_state", "audio": False, "video": True})
    assert refused["code"] == "not_publishing"
    await ada.publish()
    await ada.socket.send({"type": "media_state", "audio": False, "video": True})
    await grace.pump(0.5)
    told = [e for e in grace.events if e["type"] == "participant_media"]
    assert told[-1] == {
        "type": "participant_media",
        "participant_id": ada.id,
        "audio": False,
        "video": True,
    }
    late = await join(people[2], room)
    (shown,) = [p for p in late.snapshot["participants"] if p["id"] == ada.id]
    assert (shown["publishing"], shown["audio"], shown["video"]) == (True, False, True)
    bad = await ada.request({"type": "media_state", "audio": "off", "video": True})
    assert bad["code"] == "invalid"


async def test_a_resuming_tab_releases_what_its_old_connection_held(join, kms, room, people):
    """Regression: after a daphne restart, a tab reconnecting with `?resume=` ended its old
    participant but not the endpoints it held (4 -> 8 -> 12 on the media server across
    restarts, until somebody left)."""
    ada, grace = await join(people[0], room), await join(people[1], room)
    await ada.publish()
    await grace.publish()
    await grace.subscribe(ada.id)
    await ada.subscribe(grace.id)
    assert len(media_objects(kms)) == 1 + 4
    # Ada's worker restarted: her tab comes back on a new connection that replaces the old one.
    again = await join(people[0], f"{room.slug}/?resume={ada.id}")
    assert again.id != ada.id
    # Only Grace's publishing endpoint is left, on the media server and then (each endpoint is
    # released there first, its row deleted after) in the database.
    left = [(grace.id, None)]
    async with asyncio.timeout(5):
        while len(media_objects(kms)) != 1 + 1:
            await asyncio.sleep(0.02)
        while [(r.owner_id, r.publisher_id) for r in await _rows()] != left:
            await asyncio.sleep(0.02)
    await again.publish()
    await grace.subscribe(again.id)
    await _pump_all([again, grace], 0.3)
    await grace.viewers[again.id].wait_video(10)


async def test_no_lock_is_held_while_the_media_server_makes_a_pipeline(join, kms, room, people):
    """Regression: the room's row lock (and the worker's database thread) was held across the
    round trip that created the pipeline (up to KMS_REQUEST_TIMEOUT), so nobody could join the
    room, or do anything with the database on that worker, until the media server answered."""
    create = kms._handlers["create"]
    pipeline_made = asyncio.Event()

    async def slow_create(conn, session, params):
        if params.get("type") == "MediaPipeline":
            await asyncio.sleep(2)  # a busy media server
        try:
            return await create(conn, session, params)
        finally:
            pipeline_made.set()

    kms._handlers["create"] = slow_create
    ada = await join(people[0], room)
    publishing = asyncio.create_task(ada.publish())
    await asyncio.sleep(0.3)  # the pipeline is being made
    grace = await join(people[1], room)  # joining takes the room's lock
    assert not pipeline_made.is_set(), "the join waited for the media server"
    assert grace.id
    await publishing
    assert len(pipelines(kms)) == 1


async def test_nothing_of_a_participant_outlives_its_connection(join, kms, room, people):
    """Regression: per-process caches (endpoints, early candidates) outlived dropped
    participants; now they belong to the connection and go with it."""
    import gc

    from signaling.media import ParticipantMedia

    ada = await join(people[0], room)
    await ada.publish()
    await ada.socket.send(
        {"type": "ice", "target": 999, "candidate": {"candidate": "x", "sdpMid": "0"}}
    )
    await ada.socket.close()
    await ada.close_peers()
    async with asyncio.timeout(5):
        while media_objects(kms):
            await asyncio.sleep(0.02)
    gc.collect()
    alive = [
        o
        for o in gc.get_objects()
        if isinstance(o, ParticipantMedia) and o.participant.pk == ada.id
    ]
    assert alive == []


def _video_sinks(kms, publisher_endpoint: str) -> set[str]:
    """The endpoints the media server sends a publisher's video to."""
    return {sink.id for sink in kms.registry.objects[publisher_endpoint].sinks["VIDEO"]}


def _audio_sinks(kms, publisher_endpoint: str) -> set[str]:
    return {sink.id for sink in kms.registry.objects[publisher_endpoint].sinks["AUDIO"]}


async def test_video_of_a_tile_off_screen_is_not_carried(join, kms, room, people):
    """`video {publisher, on}` disconnects and reconnects the VIDEO media type between the
    publisher's endpoint and the viewer's on the media server: nothing is forwarded for an
    unseen tile, the sound goes on, and the picture comes back (from a keyframe) when seen."""
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    await ada.publish()
    await grace.subscribe(ada.id)
    await alan.subscribe(ada.id, video=False)  # his tile starts off screen
    await _pump_all([ada, grace, alan], 0.3)
    await grace.viewers[ada.id].wait_video(10)
    rows = {(r.owner_id, r.publisher_id): r.endpoint_id for r in await _rows()}
    source = rows[(ada.id, None)]
    grace_sink, alan_sink = rows[(grace.id, ada.id)], rows[(alan.id, ada.id)]
    assert _video_sinks(kms, source) == {grace_sink}
    assert _audio_sinks(kms, source) == {grace_sink, alan_sink}

    reply = await grace.request({"type": "video", "publisher": ada.id, "on": False})
    assert reply == {
        "type": "video_set",
        "publisher": ada.id,
        "on": False,
        "source": "camera",
        "id": reply["id"],
    }
    assert _video_sinks(kms, source) == set()
    viewer = grace.viewers[ada.id]
    await _pump_all([ada, grace, alan], 0.5)
    frames, sound = viewer.received.video_frames, viewer.received.audio_frames
    await _pump_all([ada, grace, alan], 1.0)
    assert viewer.received.video_frames <= frames + 2  # at most what was in flight
    assert viewer.received.audio_frames > sound + 20  # the sound goes on

    for caller in (grace, alan):
        reply = await caller.request({"type": "video", "publisher": ada.id, "on": True})
        assert reply["type"] == "video_set" and reply["on"] is True
    assert _video_sinks(kms, source) == {grace_sink, alan_sink}
    await _pump_all([ada, grace, alan], 0.3)
    await alan.viewers[ada.id].wait_video(10)
    await grace.viewers[ada.id].wait_video(frames + 30)

    refused = await grace.request({"type": "video", "publisher": alan.id, "on": True})
    assert refused["type"] == "error" and refused["code"] == "not_subscribed"
