"""`python -m mediaserver` as an operator runs it: flags, readiness, a real call, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator

import pytest

from .peers import Peer
from .rpc import Rpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start(*flags: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediaserver",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20)
    assert line.startswith(b"Media server ready at "), line
    return process, line.decode().rsplit(" ", 1)[1].strip()


@pytest.fixture
async def served() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process, url = await start("--port", str(free_port()), "--log-level", "INFO")
    yield process, url
    if process.returncode is None:
        process.kill()
        await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_a_call_and_stops_cleanly_on_signal(served, signum: int) -> None:
    process, url = served
    rpc = await Rpc.open(url)
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(endpoint, "connect", sink=endpoint)
    peer = Peer(send=True, receive=True)
    try:
        await peer.negotiate(rpc, endpoint)
        await peer.wait_video(15)
        process.send_signal(signum)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        await peer.close()
        await rpc.close()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    # The log says what each session and object did.
    assert "session" in log and f"created {pipeline}" in log and "released" in log
    assert "media server stopped" in log


async def test_port_range_and_announced_address() -> None:
    low = free_port()
    process, url = await start(
        "--port",
        str(free_port()),
        "--port-range",
        f"{low}-{low + 20}",
        "--announced-address",
        "127.0.0.2",
    )
    try:
        rpc = await Rpc.open(url)
        pipeline = await rpc.create("MediaPipeline")
        endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await rpc.subscribe(endpoint, "IceCandidateFound")
        await rpc.invoke(endpoint, "generateOffer")
        await rpc.invoke(endpoint, "gatherCandidates")
        event = await rpc.next_event("IceCandidateFound")
        fields = event["data"]["candidate"]["candidate"].split()
        assert fields[4] == "127.0.0.2" and low <= int(fields[5]) <= low + 20
        await rpc.request("release", object=pipeline)
        await rpc.close()
    finally:
        process.terminate()
        await process.wait()


async def test_refuses_bad_flags_and_busy_ports() -> None:
    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediaserver",
        "--ice-addresses",
        "not-an-ip",
        stderr=asyncio.subprocess.PIPE,
    )
    assert await bad.wait() == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mediaserver",
            "--port",
            str(busy.getsockname()[1]),
            stderr=asyncio.subprocess.PIPE,
        )
        assert await asyncio.wait_for(taken.wait(), 20) == 1
        assert taken.stderr is not None
        assert b"could not start" in await taken.stderr.read()
