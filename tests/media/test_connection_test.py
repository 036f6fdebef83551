"""The pre-join connection test through the real ASGI application (auth, origin check, routing,
inbound limits) and the embedded media server, with an aiortc peer in place of the browser: its
own video comes back through the media server, and however a test ends (stop, a closed socket,
the time limit, a failure) the media server holds nothing afterwards (the `kms` fixture checks);
anonymous users are refused, bad input gets clear errors, a media server that is down is said
so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from signaling import kurento, media, protocol
from signaling.media import loopback
from signaling.models import MediaEndpoint, RoomPipeline
from tests.conftest import RoomClient, session_cookie
from tests.live import free_port
from tests.mediaserver.peers import Peer

from .conftest import media_objects, pipelines

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/connection-test/"


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
async def test_socket() -> AsyncIterator[Callable[..., Any]]:
    """Open connection-test sockets on the real ASGI application; closed at the end."""
    from conference.asgi import application

    sockets: list[RoomClient] = []

    async def connect(user) -> RoomClient:
        headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
        if user is not None:
            cookie = await sync_to_async(session_cookie)(user)
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, PATH, headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        sockets.append(RoomClient(communicator, connected))
        return sockets[-1]

    yield connect
    for socket in sockets:
        with contextlib.suppress(Exception, asyncio.CancelledError):  # already closed
            await socket.close()


class LoopbackPage:
    """The page's side of one test: its socket and an aiortc peer that sends and receives."""

    def __init__(self, socket: RoomClient) -> None:
        self.socket = socket
        self.peer: Peer | None = None
        self.other: list[dict[str, Any]] = []  # what came besides candidates

    async def request(self, message: dict[str, Any], ref: str) -> dict[str, Any]:
        await self.socket.send({**message, "id": ref})
        while True:
            reply = await self.socket.receive(timeout=10)
            if reply.get("id") == ref:
                return reply
            await self._handle(reply)

    async def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "ice_candidate":
            assert message["target"] == "loopback", message
            if self.peer is not None:
                await self.peer.add_remote_candidate(message["candidate"])
        else:
            self.other.append(message)

    async def start(self) -> dict[str, Any]:
        self.peer = Peer(send=True, receive=True)
        reply = await self.request({"type": "loopback_start", "sdp": await self.peer.offer()}, "s")
        if reply["type"] != "loopback_started":
            return reply
        await self.peer.accept(reply["sdp"])
        for candidate in self.peer.candidates():
            await self.socket.send({"type": "ice", "target": "loopback", "candidate": candidate})
        return reply

    async def pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Handle what arrives (candidates) until `done()`."""
        async with asyncio.timeout(timeout):
            while not done():
                if not await self.socket.communicator.receive_nothing(timeout=0.02, interval=0.01):
                    await self._handle(await self.socket.receive())

    async def close_peer(self) -> None:
        if self.peer is not None:
            await self.peer.close()
            self.peer = None


async def _ready_page(test_socket: Callable[..., Any], user) -> LoopbackPage:
    socket = await test_socket(user)
    ready = await socket.receive()
    assert ready["type"] == "loopback_ready", ready
    return LoopbackPage(socket)


@pytest.fixture
async def testers(kms, test_socket) -> AsyncIterator[Callable[..., Any]]:
    """Pages testing against the `kms` media server; their peers close before it is checked."""
    made: list[LoopbackPage] = []

    async def make(user) -> LoopbackPage:
        made.append(await _ready_page(test_socket, user))
        return made[-1]

    yield make
    for tester in made:
        await tester.close_peer()


async def _wait_released(kms, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while media_objects(kms):
            await asyncio.sleep(0.02)


async def test_your_own_video_comes_back_and_stop_releases_everything(testers, kms, ada):
    tester = await testers(ada)
    reply = await tester.start()
    assert reply["type"] == "loopback_started", reply
    # One pipeline of its own, one endpoint in it; nothing in the database.
    assert len(pipelines(kms)) == 1 and len(media_objects(kms)) == 2
    assert await sync_to_async(RoomPipeline.objects.count)() == 0
    assert await sync_to_async(MediaEndpoint.objects.count)() == 0
    assert loopback.running_for(ada.pk) == 1

    peer = tester.peer
    assert peer is not None
    await tester.pump_until(lambda: peer.received.non_black_frames >= 3, timeout=30)
    assert peer.received.audio_frames > 0
    assert (640, 480) in peer.received.sizes  # its own test pattern, decoded

    stopped = await tester.request({"type": "loopback_stop"}, "x")
    assert stopped == {"type": "loopback_stopped", "reason": "requested", "id": "x"}
    assert media_objects(kms) == []  # released before the reply
    assert loopback.running_for(ada.pk) == 0
    # The socket stays usable: another test, and a stop that finds nothing to stop.
    await tester.close_peer()
    assert (await tester.start())["type"] == "loopback_started"
    assert (await tester.request({"type": "loopback_stop"}, "y"))["reason"] == "requested"
    assert (await tester.request({"type": "loopback_stop"}, "z"))["reason"] == "requested"
    assert media_objects(kms) == []


async def test_a_socket_that_closes_without_stop_releases_its_test(testers, kms, ada):
    tester = await testers(ada)
    assert (await tester.start())["type"] == "loopback_started"
    await tester.socket.send(
        {"type": "ice", "target": "loopback", "candidate": {"candidate": "", "sdpMid": "0"}}
    )  # end of candidates: nothing to do
    assert len(media_objects(kms)) == 2
    await tester.socket.close()  # the tab closed, or Join was clicked
    await _wait_released(kms)
    assert loopback.running_for(ada.pk) == 0


async def test_the_time_limit_releases_a_test_the_browser_never_stops(
    testers, kms, ada, monkeypatch
):
    monkeypatch.setattr(loopback, "TIME_LIMIT_SECONDS", 0.5)
    tester = await testers(ada)
    assert (await tester.start())["type"] == "loopback_started"
    await tester.pump_until(
        lambda: any(m["type"] == "loopback_stopped" for m in tester.other), timeout=5
    )
    assert [m for m in tester.other if m["type"] == "loopback_stopped"] == [
        {"type": "loopback_stopped", "reason": "time_limit"}
    ]
    assert media_objects(kms) == []
    # The socket stays open; the page may test again.
    assert (await tester.request({"type": "ping"}, "p"))["type"] == "pong"
    await tester.close_peer()
    assert (await tester.start())["type"] == "loopback_started"
    await tester.socket.close()
    await _wait_released(kms)


async def test_the_ready_message_carries_ice_servers_and_the_time_limit(
    test_socket, kms, ada, settings
):
    settings.STUN_URLS = ["stun:127.0.0.1:3478"]
    settings.TURN_URLS = ["turn:127.0.0.1:3478?transport=udp"]
    settings.TURN_SECRET = "a test secret"
    socket = await test_socket(ada)
    ready = await socket.receive()
    assert ready["type"] == "loopback_ready"
    assert ready["time_limit"] == loopback.TIME_LIMIT_SECONDS
    stun, relay = ready["ice"]["iceServers"]
    assert stun == {"urls": ["stun:127.0.0.1:3478"]}
    assert relay["username"].endswith(f":{ada.pk}") and relay["credential"]
    assert ready["ice"]["expiresAt"] > 0


async def test_the_media_server_is_given_the_turn_server_when_told_to(
    testers, kms, ada, settings, monkeypatch
):
    settings.TURN_URLS = ["turn:127.0.0.1:3478?transport=udp"]
    settings.TURN_SECRET = "a test secret"
    settings.KMS_USE_TURN = True
    given: list[str] = []

    async def set_turn_url(endpoint: kurento.WebRtcEndpoint, turn_url: str) -> None:
        # Recorded, not set: no TURN server runs here, and the endpoint would wait for it.
        given.append(turn_url)

    monkeypatch.setattr(kurento.WebRtcEndpoint, "set_turn_url", set_turn_url)
    tester = await testers(ada)
    assert (await tester.start())["type"] == "loopback_started"
    assert len(given) == 1 and given[0].endswith("@127.0.0.1:3478?transport=udp")
    assert (await tester.request({"type": "loopback_stop"}, "x"))["type"] == "loopback_stopped"


async def test_anonymous_is_refused(test_socket, kms):
    socket = await test_socket(None)
    refused = await socket.receive()
    assert refused["type"] == "refused" and refused["reason"] == "login_required"
    assert await socket.expect_close() == protocol.CLOSE_FOR_REFUSAL["login_required"] == 4401


async def test_a_foreign_origin_is_rejected_at_the_handshake(kms, ada):
    from conference.asgi import application

    cookie = await sync_to_async(session_cookie)(ada)
    headers = [(b"origin", b"http://evil.example"), (b"host", b"testserver")]
    communicator = WebsocketCommunicator(
        application, PATH, headers=[*headers, (b"cookie", cookie.encode())]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_bad_input_gets_clear_errors_and_the_test_goes_on(testers, kms, ada):
    tester = await testers(ada)
    socket = tester.socket
    valid_candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    cases: list[tuple[Any, str, str]] = [
        ("{", "bad_json", "JSON"),
        ("[]", "invalid", "object"),
        ({"type": "nope"}, "unknown_type", "ice, loopback_start, loopback_stop, ping"),
        ({"type": "publish", "sdp": "v=0"}, "unknown_type", "'publish'"),  # a room message
        ({"type": "loopback_start"}, "invalid", "needs the field 'sdp'"),
        ({"type": "loopback_start", "sdp": "hello"}, "invalid", "SDP offer"),
        ({"type": "loopback_start", "sdp": "v=0\r\nm=video 9 x\r\n"}, "invalid", "no DTLS"),
        ({"type": "loopback_start", "sdp": 7}, "invalid", "must be a string"),
        ({"type": "loopback_stop", "force": True}, "invalid", "field(s): force"),
        ({"type": "ice", "target": "publish", "candidate": valid_candidate}, "invalid", "loopback"),
        ({"type": "ice", "target": 7, "candidate": valid_candidate}, "invalid", "'target'"),
        ({"type": "ice", "target": "loopback", "candidate": []}, "invalid", "'candidate'"),
        (
            {"type": "ice", "target": "loopback", "candidate": {"candidate": ""}},
            "invalid",
            "sdpMid",
        ),
        (
            {"type": "ice", "target": "loopback", "candidate": {**valid_candidate, "x": 1}},
            "invalid",
            "field(s): x",
        ),
    ]
    for number, (message, code, fragment) in enumerate(cases):
        if isinstance(message, str):
            await socket.send_text(message)
        else:
            await socket.send({**message, "id": number})
        reply = await socket.receive()
        assert reply["type"] == "error" and reply["code"] == code, (message, reply)
        assert fragment in reply["message"], (message, reply)
    await socket.communicator.send_to(bytes_data=b"\x00")
    assert (await socket.receive())["code"] == "invalid"
    # A candidate while no test runs (one just ended) is ignored.
    await socket.send({"type": "ice", "target": "loopback", "candidate": valid_candidate})
    assert (await tester.request({"type": "ping"}, "p"))["type"] == "pong"

    # An offer that passes the checks here but that the media server refuses: nothing stays.
    broken = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"
    broken += "a=fingerprint:sha-256 AA\r\n"
    refused = await tester.request({"type": "loopback_start", "sdp": broken}, "b")
    assert refused["type"] == "error" and refused["code"] == "bad_sdp", refused
    assert media_objects(kms) == []

    # One test at a time per socket; the running one is not disturbed.
    assert (await tester.start())["type"] == "loopback_started"
    again = await tester.request({"type": "loopback_start", "sdp": await _offer()}, "again")
    assert again["type"] == "error" and again["code"] == "conflict"
    assert len(pipelines(kms)) == 1
    peer = tester.peer
    assert peer is not None
    await tester.pump_until(lambda: peer.received.non_black_frames >= 1, timeout=30)
    assert (await tester.request({"type": "loopback_stop"}, "x"))["type"] == "loopback_stopped"
    assert media_objects(kms) == []


async def test_a_user_runs_a_few_tests_at_most(testers, kms, ada, make_user):
    mine = [await testers(ada) for _ in range(loopback.MAX_TESTS_PER_USER + 1)]
    for tester in mine[:-1]:
        assert (await tester.start())["type"] == "loopback_started"
    refused = await mine[-1].start()
    assert refused["type"] == "error" and refused["code"] == "too_many_tests", refused
    # Someone else is not held back by it.
    grace = await sync_to_async(make_user)("grace")
    hers = await testers(grace)
    assert (await hers.start())["type"] == "loopback_started"
    # A finished test makes room.
    assert (await mine[0].request({"type": "loopback_stop"}, "x"))["type"] == "loopback_stopped"
    await mine[-1].close_peer()
    assert (await mine[-1].start())["type"] == "loopback_started"
    for tester in [*mine, hers]:
        await tester.socket.close()
    await _wait_released(kms)
    assert loopback.running_for(ada.pk) == 0


async def test_a_media_server_that_is_down_is_said_so(test_socket, ada, settings):
    settings.KMS_URLS = [f"ws://127.0.0.1:{free_port()}/kurento"]
    settings.KMS_CONNECT_TIMEOUT = 0.5
    tester = await _ready_page(test_socket, ada)
    try:
        reply = await tester.start()
        assert reply["type"] == "error" and reply["code"] == "media_unavailable", reply
        assert "media server cannot be reached" in reply["message"]
        assert (await tester.request({"type": "ping"}, "p"))["type"] == "pong"
    finally:
        await tester.close_peer()
        await media.close_clients()
    assert loopback.running_for(ada.pk) == 0


async def test_an_unexpected_failure_releases_the_test_and_closes_the_socket(
    testers, kms, ada, monkeypatch
):
    tester = await testers(ada)
    assert (await tester.start())["type"] == "loopback_started"

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(loopback, "add_ice_candidate", broken)
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    await tester.socket.send({"type": "ice", "target": "loopback", "candidate": candidate})
    assert await tester.socket.expect_close(timeout=5) == protocol.CLOSE_INTERNAL_ERROR
    assert media_objects(kms) == []


def test_every_connection_test_message_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## Connection test") :]
    for kind in protocol.connection_test_message_types():
        assert f"`{kind}`" in section, f"docs/protocol.md does not describe {kind}"
    for kind in ("loopback_ready", "loopback_started", "loopback_stopped", "ice_candidate"):
        assert f"`{kind}`" in section


async def _offer() -> str:
    peer = Peer(send=True, receive=True)
    try:
        return await peer.offer()
    finally:
        await peer.close()
