"""signaling.kurento, the product's Kurento Protocol client, against the embedded media server
(and, for timeouts, a server that never answers)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.server import serve

from mediaserver.server import MediaServer
from signaling.kurento import (
    ConnectionState,
    KurentoClient,
    MediaPipeline,
    MediaServerUnavailable,
    MethodNotFound,
    ObjectNotFound,
    RequestTimeout,
    SdpError,
    ServerManager,
    TypeNotFound,
    WebRtcEndpoint,
    create_pipeline,
)
from tests.live import free_port
from tests.mediaserver.peers import Peer

from .conftest import media_objects


@pytest.fixture
async def client(media_server: MediaServer):
    client = KurentoClient(media_server.url, request_timeout=5, connect_timeout=2)
    yield client
    await client.close()


async def _negotiate(peer: Peer, endpoint: WebRtcEndpoint, found: list[dict]) -> None:
    await endpoint.on("IceCandidateFound", lambda data: found.append(data["candidate"]))
    await peer.accept(await endpoint.process_offer(await peer.offer()))
    await endpoint.gather_candidates()
    for candidate in peer.candidates():
        await endpoint.add_ice_candidate(
            candidate["candidate"], candidate["sdpMid"], candidate["sdpMLineIndex"]
        )


async def test_loopback_call_with_events_and_release(client, media_server):
    manager = ServerManager(client)
    assert {m["name"] for m in (await manager.get_info())["modules"]} >= {"core", "elements"}
    pipeline = await create_pipeline(client)
    assert client.session_id is not None
    endpoint = await pipeline.create_webrtc_endpoint()
    assert await manager.get_pipelines() == [pipeline.id]
    states: list[str] = []
    await endpoint.on("MediaFlowInStateChanged", lambda data: states.append(data["state"]))
    await endpoint.connect(endpoint)  # the hello-world loopback

    peer = Peer(send=True, receive=True)
    found: list[dict] = []
    try:
        await _negotiate(peer, endpoint, found)
        await peer.wait_video(20)
        assert peer.received.non_black_frames > 0
        assert found and all(c["candidate"].startswith("candidate:") for c in found)
        assert found[0]["__type__"] == "IceCandidate"
        assert await endpoint.is_media_flowing_in("VIDEO")
        assert await endpoint.is_media_flowing_out("VIDEO")
        assert "FLOWING" in states
    finally:
        await peer.close()
    await pipeline.release()
    assert media_objects(media_server) == []
    await pipeline.release()  # releasing a released object is not an error


async def test_errors_are_typed(client):
    with pytest.raises(ObjectNotFound) as missing:
        await WebRtcEndpoint(client, "nope_kurento.WebRtcEndpoint").gather_candidates()
    assert missing.value.code == 40101
    with pytest.raises(TypeNotFound):
        await client.create("FaceOverlayFilter", mediaPipeline="x")
    pipeline = await create_pipeline(client)
    endpoint = await pipeline.create_webrtc_endpoint()
    with pytest.raises(SdpError) as bad_sdp:
        await endpoint.process_offer("v=0\r\nnot an offer\r\n")
    assert 40200 <= bad_sdp.value.code < 40300
    with pytest.raises(MethodNotFound):
        await client.invoke(endpoint.id, "fly")
    await pipeline.release()


async def test_reconnects_and_resumes_its_session(client, media_server):
    pipeline = await create_pipeline(client)
    endpoint = await pipeline.create_webrtc_endpoint()
    session = client.session_id
    flows: list[str] = []
    await endpoint.on("ElementConnected", lambda data: flows.append(data["mediaType"]))

    for conn in tuple(media_server.connections):  # the server drops our socket
        await conn.ws.close()
    # The next request waits for the reconnect, which resumes the same session.
    sink = await pipeline.create_webrtc_endpoint()
    assert client.session_id == session
    await endpoint.connect(sink)
    async with asyncio.timeout(5):
        while not flows:  # the subscription made before the drop still delivers
            await asyncio.sleep(0.02)
    assert set(flows) <= {"AUDIO", "VIDEO", "DATA"}
    await pipeline.release()


async def test_learns_when_the_server_forgot_its_session(client, media_server):
    states: list[ConnectionState] = []
    client.on_state(states.append)
    pipeline = await create_pipeline(client)
    old_session = client.session_id

    session = media_server.sessions.get(old_session)
    for conn in tuple(media_server.connections):
        await conn.ws.close()
    async with asyncio.timeout(2):
        while session.detached_at is None:  # the server noticed; the client waits to reconnect
            await asyncio.sleep(0.005)
    session.detached_at -= 10_000  # the grace period passed: the session and its objects go
    await media_server.collect()

    await ServerManager(client).get_info()  # reconnects; the resume is refused with 40007
    assert states == [ConnectionState.CONNECTED, ConnectionState.SESSION_LOST]
    assert client.session_id not in (None, old_session)  # a new session started
    with pytest.raises(ObjectNotFound):
        await MediaPipeline(client, pipeline.id).create_webrtc_endpoint()
    assert media_objects(media_server) == []


async def test_an_unreachable_server_fails_fast():
    client = KurentoClient(f"ws://127.0.0.1:{free_port()}/kurento", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(MediaServerUnavailable, match="Cannot reach the media server"):
        await create_pipeline(client)
    assert time.monotonic() - started < 2
    await client.close()


async def test_a_silent_server_times_out_and_is_dropped():
    """Requests time out; unanswered pings make the client reconnect."""
    connections: list[int] = []

    async def silent(ws) -> None:
        connections.append(1)
        async for frame in ws:
            json.loads(frame)  # read, never answer

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = KurentoClient(
            f"ws://127.0.0.1:{port}/kurento", request_timeout=0.3, ping_interval=0.2
        )
        with pytest.raises(RequestTimeout, match="did not answer 'create'"):
            await client.create("MediaPipeline")
        async with asyncio.timeout(5):
            while len(connections) < 2:  # the unanswered ping ended the first connection
                await asyncio.sleep(0.05)
        await client.close()


async def test_reconnects_by_itself_after_an_abnormal_close(client, media_server):
    """Regression: a socket that died without a close frame ended the reconnect loop (the reader's
    ConnectionClosedError escaped it), so the client came back only with the next request."""
    states: list[ConnectionState] = []
    client.on_state(states.append)
    await create_pipeline(client)
    for conn in tuple(media_server.connections):
        conn.ws.transport.abort()  # no close frame: an abnormal close for the client
    async with asyncio.timeout(3):
        while states[-1:] != [ConnectionState.RESUMED]:  # no request made meanwhile
            await asyncio.sleep(0.01)
    assert client.connected
    assert states == [ConnectionState.CONNECTED, ConnectionState.RESUMED]
    await ServerManager(client).get_info()
    for pipeline in await ServerManager(client).get_pipelines():
        await client.release(pipeline)


async def test_says_down_once_when_the_server_stays_away():
    port = free_port()
    states: list[ConnectionState] = []

    async def answer(ws) -> None:
        async for frame in ws:
            request = json.loads(frame)
            result = {"value": "pong", "sessionId": "s1"}
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))

    client = KurentoClient(f"ws://127.0.0.1:{port}/kurento", connect_timeout=1, down_after=0.5)
    client.on_state(states.append)
    async with serve(answer, "127.0.0.1", port):
        await client.request("ping")
    # The server is gone: after down_after seconds of failed reconnects, one DOWN.
    async with asyncio.timeout(3):
        while ConnectionState.DOWN not in states:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    assert states == [ConnectionState.CONNECTED, ConnectionState.DOWN]
    async with serve(answer, "127.0.0.1", port):  # back: the session is resumed
        async with asyncio.timeout(3):
            while not client.connected:
                await asyncio.sleep(0.02)
    assert states[-1] == ConnectionState.RESUMED
    await client.close()
