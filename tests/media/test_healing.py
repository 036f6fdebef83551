"""Rooms heal when their media server lets them down: restarted (every object lost), or gone for
good (the room moves to another configured server), with the room WebSocket, the room media
service and in-process media servers that the tests crash and start again; aiortc peers stand
in for browsers and do what the page does when it hears `media_reset`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async

from conference import metrics
from mediaserver.config import Config
from mediaserver.server import MediaServer
from signaling import media
from signaling.models import MediaEndpoint, RoomPipeline
from tests.live import free_port
from tests.media.callers import Caller
from tests.mediaserver.peers import Peer

from .conftest import media_objects, pipelines

pytestmark = pytest.mark.django_db(transaction=True)


class CrashableServer:
    """An embedded media server on a port of its own that can crash and start again: a new
    process on the same port, which knows no session and holds no object."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/kurento"
        self.server: MediaServer | None = None

    async def start(self) -> MediaServer:
        self.server = MediaServer(Config(port=self.port, session_grace=240))
        await self.server.start()
        return self.server

    async def crash(self) -> None:
        assert self.server is not None
        for conn in tuple(self.server.connections):
            conn.ws.transport.abort()  # no close frame, as when the process dies
        await self.server.stop()
        self.server = None


@pytest.fixture
async def servers(settings) -> AsyncIterator[list[CrashableServer]]:
    made = [CrashableServer(), CrashableServer()]
    settings.KMS_CONNECT_TIMEOUT = 1.0
    settings.KMS_REQUEST_TIMEOUT = 5.0
    settings.KMS_FAILOVER_SECONDS = 30.0
    yield made
    await media.close_clients()
    for crashable in made:
        if crashable.server is not None:
            leftovers = media_objects(crashable.server)
            await crashable.server.stop()
            assert leftovers == [], "the room media service left media objects behind"


@pytest.fixture
def people(make_user):
    return [make_user(name) for name in ("ada", "grace")]


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Weekly sync")


@pytest.fixture
async def join(room_client) -> AsyncIterator:
    callers: list[Caller] = []

    async def join_as(user, target) -> Caller:
        socket = await room_client(user, target)
        callers.append(Caller(socket, await socket.receive_until("snapshot")))
        return callers[-1]

    yield join_as
    for caller in callers:
        await caller.socket.close()
        await caller.close_peers()
    await asyncio.sleep(0.2)  # their disconnect handlers release what they held


async def _rebuilds(reason: str) -> float:
    # The registry's collection reads the database too: off the event loop.
    value = await sync_to_async(metrics.REGISTRY.get_sample_value)(
        "conference_room_media_rebuilds_total", {"reason": reason}
    )
    return value or 0.0


async def _offer() -> str:
    peer = Peer(send=True, receive=False)
    try:
        return await peer.offer()
    finally:
        await peer.close()


async def _call(ada: Caller, grace: Caller) -> None:
    """Both publish and receive each other, until video flows both ways."""
    await ada.publish()
    await grace.publish()
    await grace.subscribe(ada.id)
    await ada.subscribe(grace.id)
    await asyncio.gather(ada.pump(0.3), grace.pump(0.3))
    for caller in (ada, grace):
        for peer in caller.viewers.values():
            await peer.wait_video(15)


async def _leave(*callers: Caller) -> None:
    for caller in callers:
        await caller.socket.send({"type": "leave"})
        await caller.socket.expect_close()
        await caller.close_peers()


async def test_a_restarted_media_server_rebuilds_the_room_at_once(
    servers, settings, join, room, people
):
    (crashable, _) = servers
    await crashable.start()
    settings.KMS_URLS = [crashable.url]
    ada, grace = await join(people[0], room), await join(people[1], room)
    await _call(ada, grace)
    (lost,) = pipelines(crashable.server)

    rebuilt_before = await _rebuilds("session_lost")
    await crashable.crash()
    started = asyncio.get_running_loop().time()
    server = await crashable.start()
    for caller in (ada, grace):
        reset = await caller.wait_event("media_reset", timeout=5)
        assert reset["reason"] == "session_lost"
    told_after = asyncio.get_running_loop().time() - started
    assert told_after < 3, f"the room heard of the restart only after {told_after:.1f} s"
    # What the pages do on media_reset: publish and subscribe afresh, on the new server.
    await _call(ada, grace)
    (rebuilt,) = pipelines(server)
    assert rebuilt != lost
    record = await sync_to_async(RoomPipeline.objects.get)(room=room)
    assert record.pipeline_id == rebuilt
    assert await sync_to_async(MediaEndpoint.objects.count)() == 4
    assert ada.count("media_reset") == grace.count("media_reset") == 1
    assert await _rebuilds("session_lost") == rebuilt_before + 1  # /metrics counts it
    await _leave(ada, grace)
    assert media_objects(server) == []


async def test_a_media_server_that_stays_down_moves_its_rooms(
    servers, settings, join, room, people
):
    first, second = servers
    await first.start()
    await second.start()
    settings.KMS_URLS = [first.url, second.url]
    settings.KMS_FAILOVER_SECONDS = 0.5
    ada, grace = await join(people[0], room), await join(people[1], room)
    await _call(ada, grace)
    assert len(pipelines(first.server)) == 1  # the first server on a tie

    await first.crash()  # and it stays down
    for caller in (ada, grace):
        reset = await caller.wait_event("media_reset", timeout=5)
        assert reset["reason"] == "server_down"
    await _call(ada, grace)
    assert len(pipelines(second.server)) == 1
    # The pipeline left behind is kept, to be released once its server is back.
    orphans = await sync_to_async(list)(RoomPipeline.objects.filter(room__isnull=True))
    assert [o.server_url for o in orphans] == [first.url]
    await first.start()
    async with asyncio.timeout(5):  # a sweep once the worker is connected to it again
        while not await media.sweep_orphans():
            await asyncio.sleep(0.2)
    assert not await sync_to_async(RoomPipeline.objects.filter(room__isnull=True).exists)()
    await _leave(ada, grace)


async def test_with_no_other_server_the_room_is_told_and_healed_when_it_is_back(
    servers, settings, join, room, people
):
    (crashable, _) = servers
    await crashable.start()
    settings.KMS_URLS = [crashable.url]
    settings.KMS_FAILOVER_SECONDS = 0.5
    ada, grace = await join(people[0], room), await join(people[1], room)
    await _call(ada, grace)

    await crashable.crash()
    for caller in (ada, grace):
        await caller.wait_event("media_interrupted", timeout=5)
    reply = await ada.request({"type": "publish", "sdp": await _offer()}, timeout=10)
    assert reply["code"] == "media_unavailable"
    await crashable.start()
    for caller in (ada, grace):
        assert (await caller.wait_event("media_reset", timeout=5))["reason"] == "session_lost"
    await _call(ada, grace)
    await _leave(ada, grace)
