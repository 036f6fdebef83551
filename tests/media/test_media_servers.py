"""Several media servers: a new room goes to the least-loaded reachable one and stays there; an
unreachable one is skipped; the admin shows where each room lives."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from mediaserver.config import Config
from mediaserver.server import MediaServer
from signaling.models import RoomPipeline
from tests.live import free_port
from tests.media.callers import Caller
from tests.mediaserver.peers import Peer

from .conftest import media_objects, pipelines

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def second_server():
    server = MediaServer(Config(port=0, session_grace=0))
    await server.start()
    yield server
    await server.stop()


async def _join_and_publish(room_client, user, room) -> Caller:
    socket = await room_client(user, room)
    caller = Caller(socket, await socket.receive_until("snapshot"))
    await caller.publish()
    return caller


async def test_rooms_spread_over_reachable_servers_and_stay(
    kms, second_server, settings, room_client, make_user, make_room
):
    down = f"ws://127.0.0.1:{free_port()}/kurento"
    settings.KMS_URLS = [down, kms.url, second_server.url]
    users = [await sync_to_async(make_user)(f"user{n}") for n in range(4)]
    rooms = [await sync_to_async(make_room)(users[0], f"Room {n}") for n in range(3)]
    callers: list[Caller] = []
    try:
        callers.append(await _join_and_publish(room_client, users[0], rooms[0]))
        assert len(pipelines(kms)) == 1 and pipelines(second_server) == []  # first reachable
        callers.append(await _join_and_publish(room_client, users[1], rooms[1]))
        assert len(pipelines(second_server)) == 1  # the less loaded one
        # A room stays where it lives, though the other server is now as loaded.
        callers.append(await _join_and_publish(room_client, users[2], rooms[0]))
        assert len(media_objects(kms)) == 3 and len(media_objects(second_server)) == 2
        callers.append(await _join_and_publish(room_client, users[3], rooms[2]))
        placed = dict(
            await sync_to_async(list)(RoomPipeline.objects.values_list("room_id", "server_url"))
        )
        assert placed == {
            rooms[0].pk: kms.url,
            rooms[1].pk: second_server.url,
            rooms[2].pk: kms.url,  # a tie goes to the first listed
        }

        # The admin shows where each room lives.
        admin = await sync_to_async(make_user)("root")
        admin.is_staff = admin.is_superuser = True
        await sync_to_async(admin.save)()
        client = Client()
        await sync_to_async(client.force_login)(admin)
        page = await sync_to_async(client.get)("/admin/signaling/roompipeline/")
        assert page.status_code == 200
        text = page.content.decode()
        assert "Room 1" in text and second_server.url in text and kms.url in text
    finally:
        for caller in callers:
            await caller.socket.close()
            await caller.close_peers()
    assert media_objects(second_server) == [] and media_objects(kms) == []


async def test_no_reachable_server_is_a_clear_error(
    kms, settings, room_client, make_user, make_room
):
    settings.KMS_URLS = [f"ws://127.0.0.1:{free_port()}/kurento" for _ in range(2)]
    user = await sync_to_async(make_user)("ada")
    room = await sync_to_async(make_room)(user, "Nowhere")
    socket = await room_client(user, room)
    caller = Caller(socket, await socket.receive_until("snapshot"))
    peer = Peer(send=True, receive=False)
    try:
        reply = await caller.request({"type": "publish", "sdp": await peer.offer()})
    finally:
        await peer.close()
    assert reply["code"] == "media_unavailable"
    await socket.close()
