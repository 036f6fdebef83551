"""`python -m mediaserver --workers 2`: one endpoint, pipelines spread over two worker processes.

Real processes and real aiortc peers. Which worker holds a pipeline is read from the front's log
("pipeline <id> on worker <i> (pid <pid>)") and checked against the front's child processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .peers import Peer
from .rpc import Rpc, RpcError
from .test_process import free_port

MANAGER = "manager_ServerManager"


@dataclass
class Front:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """The front's children: its workers."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(c) for c in children}

    def pid_of(self, pipeline: str) -> int:
        pattern = rf"pipeline {re.escape(pipeline)} on worker \d+ \(pid (\d+)\)"
        match = re.search(pattern, self.log())
        assert match, f"no worker logged for {pipeline}"
        return int(match.group(1))

    async def wait_workers(self, count: int, *, without: int | None = None) -> set[int]:
        async with asyncio.timeout(30):
            while True:
                pids = self.worker_pids()
                up = self.log().count("is back (pid") if without else count
                if len(pids) == count and without not in pids and up:
                    return pids
                await asyncio.sleep(0.2)


async def start_front(log_path: Path) -> Front:
    """`python -m mediaserver --workers 2` on a free port, once it says it is ready."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mediaserver",
            "--workers",
            "2",
            "--port",
            str(free_port()),
            "--session-grace",
            "30",
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.startswith(b"Media server ready at "), line
    return Front(process, line.decode().rsplit(" ", 1)[1].strip(), log_path)


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    served = await start_front(tmp_path / "front.log")
    process = served.process
    yield served
    if process.returncode is None:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 20) == 0
    assert "Traceback" not in served.log(), served.log()[-3000:]


async def _call(rpc: Rpc, publisher: Peer, viewer: Peer) -> tuple[str, str, str]:
    """A pipeline with a publisher and a viewer of it; returns (pipeline, in, out)."""
    pipeline = await rpc.create("MediaPipeline")
    incoming = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    outgoing = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(incoming, "connect", sink=outgoing)
    await publisher.negotiate(rpc, incoming)
    await viewer.negotiate(rpc, outgoing)
    return pipeline, incoming, outgoing


async def test_pipelines_spread_media_flows_on_both_and_a_killed_worker_loses_only_its_own(
    front: Front,
) -> None:
    first, second = await Rpc.open(front.url), await Rpc.open(front.url)
    peers = [Peer(send=True, receive=False), Peer(send=False, receive=True)]
    peers += [Peer(send=True, receive=False), Peer(send=False, receive=True)]
    try:
        lost_pipeline, _, lost_out = await _call(first, peers[0], peers[1])
        kept_pipeline, kept_in, _ = await _call(second, peers[2], peers[3])
        # Each worker really holds its own: two processes, one pipeline each.
        pids = front.worker_pids()
        assert len(pids) == 2
        assert {front.pid_of(lost_pipeline), front.pid_of(kept_pipeline)} == pids
        # Media flows end to end through both at once.
        await asyncio.gather(peers[1].wait_video(20), peers[3].wait_video(20))
        listed = await second.invoke(MANAGER, "getPipelines")
        assert set(listed) == {lost_pipeline, kept_pipeline}

        dead = front.pid_of(lost_pipeline)
        before = peers[3].received.video_frames
        killed_at = time.monotonic()
        os.kill(dead, signal.SIGKILL)
        # The session that used the dead worker is lost: its socket closes, as with KMS.
        await asyncio.wait_for(first.ws.wait_closed(), 10)
        # The other pipeline keeps forwarding, without a gap.
        gaps = []
        last, last_at = peers[3].received.video_frames, time.monotonic()
        while time.monotonic() - killed_at < 3:
            await asyncio.sleep(0.05)
            if peers[3].received.video_frames != last:
                gaps.append(time.monotonic() - last_at)
                last, last_at = peers[3].received.video_frames, time.monotonic()
        assert peers[3].received.video_frames - before >= 30, "forwarding stopped"
        assert max(gaps) < 0.5, f"a {max(gaps):.2f} s gap in the surviving pipeline"
        assert await second.invoke(kept_in, "getMediaState") == "CONNECTED"

        # Resuming the lost session: 40007, as after a KMS restart.
        again = await Rpc.open(front.url)
        response = await again.call("connect", sessionId=first.session_id)
        assert response["error"]["code"] == 40007
        # Its objects on the dead worker are gone (40101); getPipelines says which survived.
        with pytest.raises(RpcError) as error:
            await again.invoke(lost_out, "getMediaState")
        assert error.value.code == 40101
        assert await again.invoke(MANAGER, "getPipelines") == [kept_pipeline]

        # The worker comes back and takes the next new pipeline (it holds the fewest objects).
        pids = await front.wait_workers(2, without=dead)
        assert dead not in pids
        fresh = await again.create("MediaPipeline")
        assert front.pid_of(fresh) in pids - {front.pid_of(kept_pipeline)}
        endpoint = await again.create("WebRtcEndpoint", mediaPipeline=fresh)
        assert (await again.request("describe", object=endpoint))["type"] == "WebRtcEndpoint"
        await again.request("release", object=fresh)
        await again.close()
        await second.request("release", object=kept_pipeline)
    finally:
        for peer in peers:
            await peer.close()
        await first.close()
        await second.close()


async def test_events_reach_the_session_that_subscribed(front: Front) -> None:
    first, second = await Rpc.open(front.url), await Rpc.open(front.url)
    try:
        await first.subscribe(MANAGER, "ObjectCreated")
        endpoints = []
        for rpc in (first, second):
            pipeline = await rpc.create("MediaPipeline")
            endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
            endpoints.append((rpc, pipeline, endpoint))
        assert front.pid_of(endpoints[0][1]) != front.pid_of(endpoints[1][1])
        # The manager's events come from every worker to the session subscribed to them.
        created = {(await first.next_event("ObjectCreated"))["data"]["object"] for _ in range(4)}
        assert created == {o for _, p, e in endpoints for o in (p, e)}
        for rpc, _, endpoint in endpoints:
            await rpc.subscribe(endpoint, "IceCandidateFound")
            await rpc.invoke(endpoint, "generateOffer")
            await rpc.invoke(endpoint, "gatherCandidates")
        for rpc, _, endpoint in endpoints:
            event = await rpc.next_event("IceCandidateFound")
            assert event["object"] == endpoint
        await asyncio.sleep(0.5)
        for rpc, _, endpoint in endpoints:
            while not rpc.events.empty():
                event = rpc.events.get_nowait()
                assert event["object"] in (endpoint, MANAGER), "another session's event"
        for rpc, pipeline, _ in endpoints:
            await rpc.request("release", object=pipeline)
    finally:
        await first.close()
        await second.close()


async def test_a_transaction_makes_a_pipeline_and_its_endpoint_in_one_worker(front: Front) -> None:
    rpc = await Rpc.open(front.url)
    try:
        await rpc.create("MediaPipeline")  # so that the transaction's is not the only one
        result = await rpc.request(
            "transaction",
            operations=[
                {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "create",
                    "params": {"type": "kurento.MediaPipeline", "constructorParams": {}},
                },
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "create",
                    "params": {
                        "type": "kurento.WebRtcEndpoint",
                        "constructorParams": {"mediaPipeline": "newref:0"},
                    },
                },
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "invoke",
                    "params": {"object": "newref:1", "operation": "getMediaState"},
                },
            ],
        )
        pipeline, endpoint = (r["result"]["value"] for r in result["value"][:2])
        assert endpoint.startswith(pipeline + "/")
        assert result["value"][2]["result"]["value"] == "DISCONNECTED"
        assert all(r["result"]["sessionId"] == rpc.session_id for r in result["value"])
        children = await rpc.invoke(pipeline, "getChildren")
        assert children == [endpoint]
        await rpc.request("closeSession", release=True)
    finally:
        await rpc.close()


async def test_a_session_resumes_on_a_new_socket_with_objects_on_both_workers(
    front: Front,
) -> None:
    rpc = await Rpc.open(front.url)
    endpoints = []
    for _ in range(2):
        pipeline = await rpc.create("MediaPipeline")
        endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await rpc.subscribe(endpoint, "IceCandidateFound")
        await rpc.invoke(endpoint, "generateOffer")
        endpoints.append((pipeline, endpoint))
    assert len({front.pid_of(p) for p, _ in endpoints}) == 2
    session = rpc.session_id
    await rpc.close()
    await asyncio.sleep(0.2)

    again = await Rpc.open(front.url)
    try:
        assert (await again.request("connect", sessionId=session))["sessionId"] == session
        again.session_id = session
        # A repeated (session, id) is answered from the cache.
        request = {
            "jsonrpc": "2.0",
            "id": "same",
            "method": "create",
            "params": {"type": "MediaPipeline", "sessionId": session},
        }
        made = await again.send_raw(request, "same")
        assert await again.send_raw(request, "same") == made
        await again.request("release", object=made["result"]["value"])
        # Subscriptions on both workers deliver to the new socket.
        for _, endpoint in endpoints:
            await again.invoke(endpoint, "gatherCandidates")
        sources = {(await again.next_event("IceCandidateFound"))["object"] for _ in range(2)}
        while len(sources) < 2:
            sources.add((await again.next_event("IceCandidateFound"))["object"])
        assert sources == {e for _, e in endpoints}
        assert await again.request("keepAlive") == {"sessionId": session}
        await again.request("closeSession", release=True)
        await asyncio.sleep(0.3)
        check = await Rpc.open(front.url)
        assert await check.invoke(MANAGER, "getPipelines") == []
        await check.close()
    finally:
        await again.close()


async def test_the_front_loads_no_media_module(front: Front) -> None:
    """The front routes and forwards no media: no aiortc, PyAV or libsrtp in its process (their
    native libraries are what a worker maps), so it costs a fraction of a worker's memory."""
    media_libraries = ("/aiortc/", "/av/", "/av.libs/", "/pylibsrtp/", "_fanout")

    def mapped(pid: int) -> set[str]:
        paths = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()}
        return {p for p in paths if any(lib in p for lib in media_libraries)}

    workers = front.worker_pids()
    assert all(mapped(pid) for pid in workers), "the check sees nothing even in a worker"
    assert mapped(front.process.pid) == set()


async def test_workers_die_with_the_front(tmp_path: Path) -> None:
    process = (await start_front(tmp_path / "front.log")).process
    children = _children(process.pid)
    assert len(children) == 2
    process.kill()
    await process.wait()
    async with asyncio.timeout(15):
        while any(_alive(c) for c in children):
            await asyncio.sleep(0.1)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_workers_flag_and_the_port_range_share() -> None:
    from mediaserver.config import parse
    from mediaserver.front import worker_port_range

    assert parse([], {}).workers == len(os.sched_getaffinity(0))  # every core by default
    assert parse(["--workers", "3"], {}).workers == 3
    assert parse([], {"MEDIASERVER_WORKERS": "1"}).workers == 1
    assert parse(["--workers", "4", "--worker-of", "1"], {}).workers == 1  # a worker routes not
    with pytest.raises(SystemExit):
        parse(["--workers", "0"], {})
    # Each worker its own slice of the media ports, the last taking the remainder.
    shares = [worker_port_range(40000, 40100, i, 3) for i in range(3)]
    assert shares == [(40000, 40032), (40033, 40065), (40066, 40100)]


async def test_the_web_tiers_client_keeps_the_events_of_the_surviving_worker(front: Front) -> None:
    """The web tier's Kurento client loses its session with the killed worker (SESSION_LOST);
    what the surviving worker holds goes on sending events to the new session, and the client
    keeps delivering them once healing has told it which pipelines are still there."""
    from signaling.kurento import ConnectionState, KurentoClient, ServerManager

    client = KurentoClient(front.url, request_timeout=10)
    states: list[ConnectionState] = []

    async def on_state(state: ConnectionState) -> None:
        states.append(state)

    client.on_state(on_state)
    peer = Peer(send=False, receive=True)
    try:
        lost_pipeline = await client.create("MediaPipeline")
        kept_pipeline = await client.create("MediaPipeline")
        assert front.pid_of(lost_pipeline) != front.pid_of(kept_pipeline)
        lost = await client.create("WebRtcEndpoint", mediaPipeline=lost_pipeline)
        kept = await client.create("WebRtcEndpoint", mediaPipeline=kept_pipeline)
        found: list[str] = []
        for endpoint in (lost, kept):
            await client.subscribe(
                endpoint, "IceCandidateFound", lambda data, e=endpoint: found.append(e)
            )

        os.kill(front.pid_of(lost_pipeline), signal.SIGKILL)
        async with asyncio.timeout(20):
            while ConnectionState.SESSION_LOST not in states:
                await asyncio.sleep(0.05)
        alive = set(await ServerManager(client).get_pipelines())
        assert alive == {kept_pipeline}
        assert client.keep_subscriptions_of(alive) == 1  # the dead worker's endpoint's

        answer = await client.invoke(kept, "processOffer", offer=await peer.offer())
        await peer.accept(answer)
        await client.invoke(kept, "gatherCandidates")
        async with asyncio.timeout(10):
            while kept not in found:
                await asyncio.sleep(0.05)
        assert lost not in found
    finally:
        await peer.close()
        await client.close()
