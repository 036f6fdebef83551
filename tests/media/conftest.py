"""Fixtures for the Kurento client and the room media service: the embedded media server in
this process (tests/mediaserver's fixture), with the product's settings pointed at it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from mediaserver.server import MediaServer
from signaling import media
from tests.media.callers import Caller
from tests.mediaserver.conftest import checked_media_server


def udp_sockets() -> int:
    """UDP sockets this process holds: the media server's ICE sockets and the test peers'.

    Only UDP is counted: the product's own database and Redis connections come and go with it.
    """
    inodes: set[str] = set()
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(fd)
            count += target.startswith("socket:[") and target[8:-1] in inodes
    return count


@pytest.fixture
async def media_server() -> AsyncIterator[MediaServer]:
    """The embedded media server in this process; nothing may outlive the test."""
    async with checked_media_server(udp_sockets) as server:
        yield server


def media_objects(server: MediaServer) -> list[str]:
    """What the media server holds besides its server manager."""
    return sorted(o for o in server.registry.objects if o != "manager_ServerManager")


def pipelines(server: MediaServer) -> list[str]:
    return [o for o in media_objects(server) if "/" not in o]


@pytest.fixture
async def kms(media_server: MediaServer, settings) -> AsyncIterator[MediaServer]:
    """The media server the product uses in this test. After the test, the product must have
    released everything it made there (checked before its sessions are closed and collected)."""
    settings.KMS_URL = media_server.url
    settings.KMS_URLS = [media_server.url]
    settings.KMS_CONNECT_TIMEOUT = 2.0
    settings.KMS_REQUEST_TIMEOUT = 5.0
    # The product reads recordings where the media server writes them.
    settings.RECORDINGS_DIR = Path(media_server.config.recordings_dir)
    settings.RECORDINGS_MEDIA_DIR = media_server.config.recordings_dir
    yield media_server
    await media.composing_done()
    await media.close_clients()
    assert media_objects(media_server) == [], "the room media service left media objects behind"


@pytest.fixture
def people(make_user):
    """Four people, the first of whom owns the test module's `room`."""
    return [make_user(name) for name in ("ada", "grace", "alan", "edsger")]


@pytest.fixture
async def join(kms, room_client) -> AsyncIterator[Callable[..., Awaitable[Caller]]]:
    """`await join(user, room)`: a caller (tests.media.callers.Caller) in that room, past its
    snapshot; their peers are closed at the end."""
    callers: list[Caller] = []

    async def join_as(user, target) -> Caller:
        socket = await room_client(user, target)
        snapshot = await socket.receive_until("snapshot")
        callers.append(Caller(socket, snapshot))
        return callers[-1]

    yield join_as
    for caller in callers:
        await caller.close_peers()
