"""Hostile input, as a fuzzer sends it: wrong types in every field, deep nesting, huge values, many
sessions on one socket, requests that would make the server hold without end. Every request is
answered with a specific error (never 40003 "Unexpected error", never a traceback in the log), the
socket stays open, and what the server keeps stays bounded. The fixture checks nothing is left.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import mediaserver
from mediaserver import limits
from mediaserver.config import Config
from mediaserver.rpc import OUTBOX_HIGH_WATER, ClientConnection
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint
from tests.mediaserver.fuzzing import CANDIDATE, fuzz_request, fuzz_seeds, fuzz_values, raw_garbage

from .peers import Peer
from .rpc import Rpc, RpcError


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records and tracebacks: hostile input must produce neither."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


async def error_of(rpc: Rpc, method: str, **params: Any) -> dict[str, Any]:
    response = await rpc.call(method, **params)
    assert "error" in response, response
    return response["error"]


# -- defect: malformed transactions and wrong-typed fields -------------------------------------


@pytest.mark.parametrize("params", [[1, 2], "params", 42, True, [{"type": "MediaPipeline"}]])
async def test_transaction_operations_whose_params_are_no_object_are_malformed(
    rpc: Rpc, media_server: MediaServer, caplog: pytest.LogCaptureFixture, params: Any
) -> None:
    operations = [
        {"jsonrpc": "2.0", "id": 0, "method": "create", "params": {"type": "MediaPipeline"}},
        {"jsonrpc": "2.0", "id": 1, "method": "create", "params": params},
    ]
    error = await error_of(rpc, "transaction", operations=operations)
    assert error["code"] == 40008 and "params of request '1'" in error["message"]
    assert error["data"]["type"] == "MALFORMED_TRANSACTION"
    assert media_server.registry.pipelines() == []  # checked before anything ran
    assert errors_logged(caplog) == []


async def test_wrong_typed_fields_get_specific_errors(
    rpc: Rpc, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    cases: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
        ("invoke", {"object": pipeline, "operation": "getName", "operationParams": [1]}, (40001,)),
        ("invoke", {"object": pipeline, "operation": ["getName"]}, (-32602,)),
        ("invoke", {"object": {"id": pipeline}, "operation": "getName"}, (-32000,)),
        ("create", {"type": "MediaPipeline", "constructorParams": "x"}, (40001,)),
        (
            "create",
            {"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": [1]}},
            (40101,),
        ),
        (
            "create",
            {"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": "x" * 100_000}},
            (40101,),
        ),
        (
            "create",
            {
                "type": "WebRtcEndpoint",
                "constructorParams": {"mediaPipeline": pipeline, "recvonly": "yes"},
            },
            (40001,),
        ),
        ("subscribe", {"object": pipeline, "type": {"event": "Error"}}, (-32602,)),
        ("unsubscribe", {"object": pipeline, "subscription": 7}, (-32602,)),
        ("create", {"type": "MediaPipeline", "sessionId": 5}, (-32602,)),
        ("create", {"type": "MediaPipeline", "sessionId": "s" * 65}, (-32602,)),
        ("connect", {"sessionId": ["old"]}, (40007,)),
    ]
    for candidate in (
        [CANDIDATE.format(port=9), "0", 0],
        {"candidate": CANDIDATE.format(port=9), "sdpMid": ["0"]},
        {"candidate": CANDIDATE.format(port=9), "sdpMid": {"mid": "0"}},
        {"candidate": CANDIDATE.format(port=9), "sdpMLineIndex": True},
        {"candidate": CANDIDATE.format(port=9), "sdpMLineIndex": "0"},
        {"candidate": ["candidate:1"], "sdpMid": "0"},
    ):
        cases.append(
            (
                "invoke",
                {
                    "object": endpoint,
                    "operation": "addIceCandidate",
                    "operationParams": {"candidate": candidate},
                },
                (40001, 40401),
            )
        )
    for method, params, codes in cases:
        error = await error_of(rpc, method, **params)
        assert error["code"] in codes, (method, params, error)
        assert len(error["message"]) <= limits.MAX_ERROR_MESSAGE
    assert errors_logged(caplog) == []
    await rpc.request("release", object=pipeline)


async def test_unresolvable_new_references_are_malformed_transactions(
    rpc: Rpc, caplog: pytest.LogCaptureFixture
) -> None:
    for reference in ("newref:" + "9" * 5000, "newref:5", "newref:0"):
        operations = [
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "invoke",
                "params": {"object": reference, "operation": "getName"},
            }
        ]
        error = await error_of(rpc, "transaction", operations=operations)
        assert error["code"] == 40008, error
    assert errors_logged(caplog) == []


async def test_nan_and_infinity_are_not_json(rpc: Rpc) -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        payload = '{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": CONSTANT}}'
        payload = payload.replace("CONSTANT", constant)
        response = await rpc.send_raw(payload, None)
        assert response["error"]["code"] == -32700
    assert (await rpc.request("ping"))["value"] == "pong"


# -- defect: deep nesting -----------------------------------------------------------------------


async def test_deeply_nested_json_is_answered_not_fatal(
    rpc: Rpc, caplog: pytest.LogCaptureFixture
) -> None:
    response = await rpc.send_raw("[" * 100_000, None)
    assert response["error"]["code"] == -32700 and "nested" in response["error"]["message"]
    closed = "]" * 5000
    response = await rpc.send_raw("[" * 5000 + closed, None)
    assert response["error"]["code"] == -32700

    def nested(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    limit = limits.MAX_NESTING_DEPTH
    # The request object is level 1, params level 2: padding nested to just fit is fine...
    fits = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": nested(limit - 2)}}
    assert (await rpc.send_raw(fits, 1))["result"]["value"] == "pong"
    # ...one level more is refused, with its id.
    deep = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"pad": nested(limit - 1)}}
    response = await rpc.send_raw(deep, 2)
    assert response["error"]["code"] == -32600 and f"{limit} levels" in response["error"]["message"]
    assert (await rpc.request("ping"))["value"] == "pong"
    assert errors_logged(caplog) == []


async def test_odd_ids_in_refused_requests_do_not_close_the_socket(
    rpc: Rpc, caplog: pytest.LogCaptureFixture
) -> None:
    """A request refused unread (too large) is answered with the id it seems to carry; an id
    that only looks like one ('007', '\\q') is answered as null."""
    pad = "x" * (600 * 1024)
    for raw_id in ("007", '"\\q"', "12"):
        payload = f'{{"jsonrpc": "2.0", "id": {raw_id}, "method": "ping", "pad": "{pad}"}}'
        expected = 12 if raw_id == "12" else None
        response = await rpc.send_raw(payload, expected)
        assert response["error"]["code"] == -32600
    assert (await rpc.request("ping"))["value"] == "pong"
    assert errors_logged(caplog) == []


# -- defect: offers and answers that can never connect -------------------------------------------


def without(sdp: str, *prefixes: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefixes))


def fingerprint_at_session_level(sdp: str) -> str:
    lines = sdp.splitlines(keepends=True)
    fingerprint = next(line for line in lines if line.startswith("a=fingerprint:"))
    rest = [line for line in lines if not line.startswith("a=fingerprint:")]
    first_media = next(i for i, line in enumerate(rest) if line.startswith("m="))
    return "".join([*rest[:first_media], fingerprint, *rest[first_media:]])


async def test_offers_without_dtls_fingerprint_or_ice_credentials_are_refused(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    peer = Peer(send=False, receive=True)
    offer = await peer.offer()
    assert "a=fingerprint:" in offer and "a=ice-pwd:" in offer
    for broken, missing in (
        (without(offer, "a=fingerprint:"), "fingerprint"),
        (offer.replace("a=fingerprint:sha-", "a=fingerprint:md-"), "fingerprint"),
        (without(offer, "a=ice-pwd:"), "ICE"),
        (without(offer, "a=ice-ufrag:"), "ICE"),
        (without(offer, "a=setup:"), "setup"),
    ):
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(endpoint, "processOffer", offer=broken)
        assert refused.value.code == 40205, refused.value
        assert refused.value.type == "SDP_END_POINT_PROCESS_OFFER_ERROR"
        assert missing in refused.value.message
    # A refused offer leaves the endpoint unnegotiated; a fingerprint given once for the whole
    # session (before the first m-line) counts for every section.
    answer = await rpc.invoke(endpoint, "processOffer", offer=fingerprint_at_session_level(offer))
    assert "a=fingerprint:" in answer
    await peer.close()
    await rpc.request("release", object=pipeline)


async def test_answers_without_dtls_fingerprint_or_ice_credentials_are_refused(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    offer = await rpc.invoke(endpoint, "generateOffer")
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await answerer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = answerer.localDescription.sdp
        for broken in (without(answer, "a=fingerprint:"), without(answer, "a=ice-pwd:")):
            with pytest.raises(RpcError) as refused:
                await rpc.invoke(endpoint, "processAnswer", answer=broken)
            assert refused.value.code == 40206, refused.value
        await rpc.invoke(endpoint, "processAnswer", answer=answer)
    finally:
        await answerer.close()
    await rpc.request("release", object=pipeline)


async def test_bad_candidates_are_refused_and_never_cost_an_answer(rpc: Rpc) -> None:
    """A candidate queued before the offer that turns out unusable (no such media section) is
    dropped; the offer is still answered. Numbers out of range are refused."""
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(
        endpoint,
        "addIceCandidate",
        candidate={"candidate": CANDIDATE.format(port=9), "sdpMid": "no-such-section"},
    )
    peer = Peer(send=True, receive=False)
    answer = await rpc.invoke(endpoint, "processOffer", offer=await peer.offer())
    assert answer.startswith("v=0")
    for line in (
        "candidate:1 1 udp 2130706431 127.0.0.1 70000 typ host",
        "candidate:1 1 udp 99999999999999999999 127.0.0.1 9 typ host",
        "candidate:1 0 udp 2130706431 127.0.0.1 9 typ host",
        "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host raddr 0.0.0.0 rport 99999",
    ):
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(
                endpoint, "addIceCandidate", candidate={"candidate": line, "sdpMid": "0"}
            )
        assert refused.value.code == 40401, line
    await peer.close()
    await rpc.request("release", object=pipeline)


# -- defect: one session per socket -------------------------------------------------------------


async def test_sessions_a_socket_leaves_are_collected(media_server: MediaServer) -> None:
    """As in KMS (WebSocketTransport::storeConnection), a socket is bound to one session: the
    sessions it moves away from are detached, and collected once the grace period is over."""
    client = await Rpc.open(media_server.url)
    pipelines = []
    for n in range(5):
        client.session_id = f"session-{n}"
        pipelines.append(await client.create("MediaPipeline"))
        assert client.session_id == f"session-{n}"
    # Each one left is detached at once, the current one is bound.
    sessions = media_server.sessions
    for n in range(4):
        assert sessions.get(f"session-{n}").detached_at is not None
        assert sessions.get(f"session-{n}").connection is None
    assert sessions.get("session-4").detached_at is None
    # Sessions that hold nothing are not kept at all when the socket moves on (KMS never
    # knew them: it only records sessions that hold objects).
    for n in range(20):
        client.session_id = f"empty-{n}"
        await client.request("describe", object=pipelines[0])
    assert not any(s.startswith("empty-") for s in sessions.ids()[:-1])

    await client.close()
    await asyncio.sleep(0.1)
    media_server.config = Config(port=0, session_grace=0)
    await media_server.collect()
    assert media_server.registry.pipelines() == []
    assert sessions.ids() == []


async def test_a_socket_cannot_make_sessions_without_end(media_server: MediaServer) -> None:
    client = await Rpc.open(media_server.url)
    limit = limits.MAX_SESSIONS_PER_CONNECTION
    for n in range(limit):
        client.session_id = f"holder-{n}"
        await client.create("MediaPipeline")
    client.session_id = "one-too-many"
    error = await error_of(client, "create", type="MediaPipeline")
    assert error["code"] == 40009 and "sessions" in error["message"]
    # Going back to one of its own sessions is no new session; ending one makes room again.
    client.session_id = "holder-0"
    await client.request("keepAlive")
    await client.call("closeSession", release=True)
    client.session_id = "one-more"
    await client.create("MediaPipeline")
    assert len(media_server.sessions.ids()) == limit
    await client.close()


# -- defect: unbounded memory ---------------------------------------------------------------------


async def test_ice_candidates_per_endpoint_are_bounded(rpc: Rpc, media_server: MediaServer) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint_id = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    endpoint = media_server.registry.objects[endpoint_id]
    assert isinstance(endpoint, WebRtcEndpoint)
    too_long = CANDIDATE.format(port=9) + " generation 0" + " x" * limits.MAX_CANDIDATE_LENGTH
    error = await error_of(
        rpc,
        "invoke",
        object=endpoint_id,
        operation="addIceCandidate",
        operationParams={"candidate": {"candidate": too_long, "sdpMid": "0"}},
    )
    assert error["code"] == -32602 and "too large" in error["message"]
    for port in range(limits.MAX_REMOTE_CANDIDATES):
        candidate = {"candidate": CANDIDATE.format(port=port + 1), "sdpMid": "0", "pad": "x" * 1000}
        await rpc.invoke(endpoint_id, "addIceCandidate", candidate=candidate)
    error = await error_of(
        rpc,
        "invoke",
        object=endpoint_id,
        operation="addIceCandidate",
        operationParams={"candidate": {"candidate": CANDIDATE.format(port=7), "sdpMid": "0"}},
    )
    assert error["code"] == 40009 and "candidates" in error["message"]
    # The end-of-candidates mark is no candidate: still accepted.
    await rpc.invoke(endpoint_id, "addIceCandidate", candidate={"candidate": "", "sdpMid": "0"})
    assert len(endpoint.pending_candidates) == limits.MAX_REMOTE_CANDIDATES
    assert all(
        set(c) == {"candidate", "sdpMid", "sdpMLineIndex"} for c in endpoint.pending_candidates
    )
    await rpc.request("release", object=pipeline)


async def test_tags_and_property_values_are_bounded(rpc: Rpc, media_server: MediaServer) -> None:
    pipeline = await rpc.create("MediaPipeline")
    obj = media_server.registry.objects[pipeline]
    for n in range(limits.MAX_TAGS):
        await rpc.invoke(pipeline, "addTag", key=f"k{n}", value="v" * limits.MAX_TAG_VALUE)
    error = await error_of(
        rpc,
        "invoke",
        object=pipeline,
        operation="addTag",
        operationParams={"key": "new", "value": "v"},
    )
    assert error["code"] == 40009 and "tags" in error["message"]
    await rpc.invoke(pipeline, "addTag", key="k0", value="replaced")  # replacing is fine
    for key, value in (
        ("k" * (limits.MAX_TAG_KEY + 1), "v"),
        ("k1", "v" * (limits.MAX_TAG_VALUE + 1)),
    ):
        error = await error_of(
            rpc,
            "invoke",
            object=pipeline,
            operation="addTag",
            operationParams={"key": key, "value": value},
        )
        assert error["code"] == -32602 and "too large" in error["message"]
    assert len(obj.tags) == limits.MAX_TAGS and obj.tags["k0"] == "replaced"
    error = await error_of(
        rpc,
        "invoke",
        object=pipeline,
        operation="setName",
        operationParams={"name": "n" * (limits.MAX_PROPERTY_BYTES + 1)},
    )
    assert error["code"] == -32602
    assert await rpc.invoke(pipeline, "getName") == pipeline
    await rpc.request("release", object=pipeline)


async def test_cached_responses_are_bounded_in_number_and_bytes(
    rpc: Rpc, media_server: MediaServer
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    big_name = "n" * (limits.MAX_PROPERTY_BYTES - 100)
    await rpc.invoke(pipeline, "setName", name=big_name)
    session = media_server.sessions.get(rpc.session_id)
    assert session is not None
    for _ in range(limits.MAX_CACHED_RESPONSES + 50):
        assert await rpc.invoke(pipeline, "getName") == big_name
        assert len(session.responses) <= limits.MAX_CACHED_RESPONSES
        assert session.cache_bytes <= limits.MAX_CACHE_BYTES
    assert session.cache_bytes == sum(entry.size for entry in session.responses.values())
    assert session.cache_bytes > limits.MAX_CACHE_BYTES - 2 * limits.MAX_PROPERTY_BYTES
    # A response too large to keep is answered all the same, and not kept.
    get_name = {
        "jsonrpc": "2.0",
        "method": "invoke",
        "params": {"object": pipeline, "operation": "getName"},
    }
    count = limits.MAX_CACHED_RESPONSE_BYTES // len(big_name) + 1
    operations = [{**get_name, "id": i} for i in range(count)]
    responses = (await rpc.request("transaction", operations=operations))["value"]
    assert [r["result"]["value"] for r in responses] == [big_name] * count
    assert session.cache_bytes == sum(entry.size for entry in session.responses.values())
    assert all(
        entry.size <= limits.MAX_CACHED_RESPONSE_BYTES for entry in session.responses.values()
    )
    # Retries still get the same answer.
    request = {
        "jsonrpc": "2.0",
        "id": "retried",
        "method": "create",
        "params": {"type": "MediaPipeline", "sessionId": rpc.session_id},
    }
    first = await rpc.send_raw(request, "retried")
    assert await rpc.send_raw(request, "retried") == first
    await rpc.request("release", object=first["result"]["value"])
    await rpc.request("release", object=pipeline)


async def test_objects_subscriptions_and_transactions_are_bounded(
    rpc: Rpc, media_server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small limits for the test: the real ones take thousands of requests to reach.
    monkeypatch.setattr("mediaserver.server.MAX_OBJECTS_PER_SESSION", 4)
    monkeypatch.setattr("mediaserver.server.MAX_ELEMENTS_PER_PIPELINE", 2)
    monkeypatch.setattr("mediaserver.rpc.MAX_TRANSACTION_OPERATIONS", 3)
    monkeypatch.setattr("mediaserver.sessions.MAX_SUBSCRIPTIONS_PER_SESSION", 2)
    pipeline = await rpc.create("MediaPipeline")
    first = await rpc.create("PassThrough", mediaPipeline=pipeline)
    await rpc.create("PassThrough", mediaPipeline=pipeline)
    error = await error_of(
        rpc, "create", type="PassThrough", constructorParams={"mediaPipeline": pipeline}
    )
    assert error["code"] == 40009 and "pipeline" in error["message"]
    await rpc.create("MediaPipeline")
    error = await error_of(rpc, "create", type="MediaPipeline")
    assert error["code"] == 40009 and "objects" in error["message"]

    await rpc.subscribe(first, "ElementConnected")
    await rpc.subscribe(first, "ElementConnected")  # the same event again: a new one, as KMS
    error = await error_of(rpc, "subscribe", object=first, type="Error")
    assert error["code"] == 40009 and "subscriptions" in error["message"]

    ping = {"jsonrpc": "2.0", "method": "ping"}
    error = await error_of(rpc, "transaction", operations=[{**ping, "id": i} for i in range(4)])
    assert error["code"] == 40009 and "operations" in error["message"]
    await rpc.call("closeSession", release=True)


# -- defect: the import cycle ----------------------------------------------------------------------


def test_mediaserver_modules_import_no_cycle() -> None:
    """No module of the package imports itself through others, not even lazily or for typing."""
    package = Path(mediaserver.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = imports.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "mediaserver."
            ):
                found.add(node.module.split(".")[1])

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for imported in imports.get(module, ()):
                if imported == start:
                    return [*path, start]
                if imported not in path:
                    stack.append((imported, [*path, imported]))
        return None

    cycles = [cycle for module in imports if (cycle := cycle_from(module))]
    assert cycles == []


# -- the socket survives garbage and bursts --------------------------------------------------------


async def test_a_burst_of_garbage_is_answered_not_closed(
    media_server: MediaServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending faster than it reads gets every answer: the socket is read more slowly,
    not closed (OUTBOX_LIMIT is for a client that never reads its events)."""
    monkeypatch.setattr("mediaserver.rpc.OUTBOX_HIGH_WATER", 50)  # pause often
    monkeypatch.setattr("mediaserver.rpc.OUTBOX_LOW_WATER", 10)
    count = 12_000
    async with websockets.connect(media_server.url, max_size=None) as ws:
        await asyncio.gather(*(ws.send("garbage") for _ in range(count)))
        answers = []
        async with asyncio.timeout(30):
            while len(answers) < count:
                answers.append(json.loads(await ws.recv()))
        assert {a["error"]["code"] for a in answers} <= {-32700, 40009}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}))
        assert json.loads(await ws.recv())["id"] == "last"
    assert errors_logged(caplog) == []


class StalledSocket:
    """A WebSocket whose peer reads nothing until `resume` is set."""

    remote_address = ("127.0.0.1", 9)

    def __init__(self) -> None:
        self.resume = asyncio.Event()
        self.sent: list[str] = []
        self.closed_with: int | None = None

    async def send(self, text: str) -> None:
        await self.resume.wait()
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code


async def test_a_connection_behind_on_reading_is_paused_not_closed() -> None:
    ws = StalledSocket()
    conn = ClientConnection(ws, Config())  # type: ignore[arg-type]
    count = OUTBOX_HIGH_WATER + 500
    for n in range(count):
        conn.send({"jsonrpc": "2.0", "id": n, "result": None})
    assert not conn.drained.is_set()  # the server stops reading this socket...
    assert conn.closing is None and ws.closed_with is None  # ...and keeps it
    ws.resume.set()
    await asyncio.wait_for(conn.drained.wait(), 5)  # reading resumes once it catches up
    await conn.close()
    assert len(ws.sent) == count


# -- a seeded fuzz over one socket -----------------------------------------------------------------

FUZZ_REQUESTS = 5000
FUZZ_BATCH = 100


async def test_seeded_fuzz_over_one_socket(
    media_server: MediaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of mutated requests over one socket: every request with an id gets exactly one
    answer, none is an unexpected error, the socket stays open and nothing is logged as an error.
    """
    # No rate limit here: the limiter would answer most of the fuzz with 40009.
    media_server.config = dataclasses.replace(
        media_server.config, requests_per_second=1e9, request_burst=10**9
    )
    rng = random.Random(20240531)
    answers: dict[Any, list[dict[str, Any]]] = {}
    untracked: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async with websockets.connect(media_server.url, max_size=None) as ws:

        async def read() -> None:
            async for text in ws:
                message = json.loads(text)
                if message.get("method") == "onEvent":
                    continue
                if isinstance(message.get("id"), int | str) and message["id"] in expected:
                    answers.setdefault(message["id"], []).append(message)
                else:
                    untracked.append(message)
                arrived.set()

        expected: set[Any] = set()
        reader = asyncio.create_task(read())
        setup = {
            "jsonrpc": "2.0",
            "id": "setup-0",
            "method": "create",
            "params": {"type": "MediaPipeline"},
        }
        expected.add("setup-0")
        await ws.send(json.dumps(setup))
        async with asyncio.timeout(10):
            while "setup-0" not in answers:
                arrived.clear()
                await arrived.wait()
        pipeline = answers["setup-0"][0]["result"]["value"]
        setup = {
            "jsonrpc": "2.0",
            "id": "setup-1",
            "method": "create",
            "params": {"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": pipeline}},
        }
        expected.add("setup-1")
        await ws.send(json.dumps(setup))
        async with asyncio.timeout(10):
            while "setup-1" not in answers:
                arrived.clear()
                await arrived.wait()
        endpoint = answers["setup-1"][0]["result"]["value"]
        seeds = fuzz_seeds(pipeline, endpoint)
        # Ids that look right but name nothing (the real ones are in the seeds: releasing them
        # early would leave little to fuzz).
        ids = [f"{pipeline}/0_kurento.PassThrough", pipeline.replace("-", "0", 1)]

        sent = 0
        while sent < FUZZ_REQUESTS:
            batch: list[Any] = []
            for _ in range(FUZZ_BATCH):
                sent += 1
                if rng.random() < 0.05:
                    frame = raw_garbage(rng, sent)
                    await ws.send(frame)
                    if isinstance(frame, bytes) and b"raw-" in frame:
                        expected.add(f"raw-{sent}")
                        batch.append(f"raw-{sent}")
                    continue
                request = fuzz_request(rng, seeds, ids)
                roll = rng.random()
                if roll < 0.05:
                    pass  # a notification: no id, no answer
                elif roll < 0.1:
                    request["id"] = fuzz_values(rng, ids)  # an id that may be no id
                else:
                    request["id"] = sent if roll < 0.55 else f"id-{sent}"
                    expected.add(request["id"])
                    batch.append(request["id"])
                await ws.send(json.dumps(request))
            async with asyncio.timeout(20):
                while not all(i in answers for i in batch):
                    arrived.clear()
                    await arrived.wait()
        await asyncio.sleep(0.3)  # time for any stray second answer to show

        final = {"jsonrpc": "2.0", "id": "final", "method": "ping"}
        expected.add("final")
        await ws.send(json.dumps(final))
        async with asyncio.timeout(10):
            while "final" not in answers:
                arrived.clear()
                await arrived.wait()
        assert ws.close_code is None  # the socket is still open
        reader.cancel()

    assert all(len(answers.get(i, [])) == 1 for i in expected), [
        (i, len(answers.get(i, []))) for i in expected if len(answers.get(i, [])) != 1
    ]
    everything = [a for group in answers.values() for a in group] + untracked
    unexpected = [
        a
        for a in everything
        if "error" in a
        and (a["error"]["code"] == 40003 or "Unexpected error" in a["error"]["message"])
    ]
    assert unexpected == []
    assert all("result" in a or "error" in a for a in everything)
    assert errors_logged(caplog) == []
    # What the fuzz made is bounded: sessions per socket, candidates per endpoint, tags.
    assert len(media_server.sessions.ids()) <= limits.MAX_SESSIONS_PER_CONNECTION
