"""Fixtures for the media server: an in-process server on a free port, the bare Python client, and
the official JavaScript client driven through Node.js.

Every test's server is checked on the way out: once its clients are gone and their sessions have
expired, it must hold nothing but the server manager (no pipeline, endpoint, task or socket left).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mediaserver import ice
from mediaserver.config import Config
from mediaserver.server import MediaServer
from tests.conftest import require

from .rpc import Rpc

KURENTO_CLIENT_DIR = Path(__file__).resolve().parent.parent / "kurento_client"

# The test peers gather loopback only, like the server.
ice.use_host_addresses(("127.0.0.1",))


def open_sockets() -> int:
    """Sockets this process holds (the server's UDP media sockets among them)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while listed
            count += os.readlink(fd).startswith("socket:")
    return count


@contextlib.asynccontextmanager
async def checked_media_server(sockets: Callable[[], int]) -> AsyncIterator[MediaServer]:
    """A media server in this process that must end as it began: once its clients are gone
    and their sessions expired, no object but the server manager, and no more `sockets()`
    than before."""
    sockets_before = sockets()
    recordings = tempfile.mkdtemp(prefix="mediaserver-recordings-")
    server = MediaServer(Config(port=0, session_grace=240, recordings_dir=recordings))
    await server.start()
    yield server
    for conn in tuple(server.connections):
        await conn.ws.close()
    await asyncio.sleep(0.1)
    server.config = Config(port=0, session_grace=0)
    await server.collect()
    leftovers = [o for o in server.registry.objects if o != "manager_ServerManager"]
    await server.stop()
    assert leftovers == [], f"media objects outlived their sessions: {leftovers}"
    for _ in range(20):  # closed transports give their sockets back on the next loop turns
        if sockets() <= sockets_before:
            break
        await asyncio.sleep(0.05)
    assert sockets() <= sockets_before, "sockets outlived the test"
    shutil.rmtree(recordings, ignore_errors=True)


@pytest.fixture
async def media_server() -> AsyncIterator[MediaServer]:
    async with checked_media_server(open_sockets) as server:
        yield server


@pytest.fixture
async def rpc(media_server: MediaServer) -> AsyncIterator[Rpc]:
    client = await Rpc.open(media_server.url)
    yield client
    await client.close()


@pytest.fixture
async def open_rpc(media_server: MediaServer) -> AsyncIterator[Callable[[], Any]]:
    clients: list[Rpc] = []

    async def open_one() -> Rpc:
        clients.append(await Rpc.open(media_server.url))
        return clients[-1]

    yield open_one
    for client in clients:
        await client.close()


class JsClient:
    """The official kurento-client in a Node.js process, one command at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._serial = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # the client logs to stdout now and then
            if "event" in message:
                self.events.put_nowait(message)
            elif (future := self._replies.pop(message.get("id"), None)) is not None:
                future.set_result(message)

    async def run(self, op: str, **args: Any) -> Any:
        reply = await self.try_run(op, **args)
        if not reply["ok"]:
            raise AssertionError(f"kurento-client {op} failed: {reply}")
        return reply["value"]

    async def try_run(self, op: str, **args: Any) -> dict[str, Any]:
        self._serial += 1
        future = asyncio.get_running_loop().create_future()
        self._replies[self._serial] = future
        assert self.process.stdin is not None
        self.process.stdin.write(
            json.dumps({"id": self._serial, "op": op, **args}).encode() + b"\n"
        )
        return await asyncio.wait_for(future, 20)

    async def next_event(self, name: str, ref: str | None = None, timeout: float = 15) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["event"] == name and ref in (None, event.get("ref")):
                    return event

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


@pytest.fixture
async def js_client(media_server: MediaServer) -> AsyncIterator[JsClient]:
    node = shutil.which("node")
    require(node is not None, "Node.js (node)")
    require(
        (KURENTO_CLIENT_DIR / "node_modules" / "kurento-client").is_dir(),
        "npm kurento-client (make test installs it in tests/kurento_client)",
    )
    process = await asyncio.create_subprocess_exec(
        node,
        str(KURENTO_CLIENT_DIR / "driver.js"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=KURENTO_CLIENT_DIR,
    )
    client = JsClient(process)
    yield client
    await client.stop()
