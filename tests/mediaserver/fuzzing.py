"""Seeded generators of hostile Kurento Protocol requests, shared by the media server's fuzz
test and bench/fuzz.py: valid requests (`fuzz_seeds`) mutated field by field, plus raw garbage
frames."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
GARBAGE_SDP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 VP8/90000\r\n"
    "a=mid:0\r\na=rtcp-mux\r\na=sendrecv\r\n"
)


def fuzz_values(rng: random.Random, ids: list[str]) -> Any:
    """A value of any JSON type, including the awkward ones."""
    choices: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        2**31,
        2**63,
        2**64 + 1,
        10**300,
        -(10**200),
        1.5,
        -0.0,
        1e308,
        "",
        " ",
        "x" * rng.choice((10, 1000, 70_000)),
        "\u0000\u0001\u001f",
        "\ud800",  # a lone surrogate
        "ünïcødé ✓ 𝄞 مرحبا",
        "newref:0",
        "newref:" + "9" * 30,
        "manager_ServerManager",
        "kurento.MediaPipeline",
        "VIDEO",
        [],
        {},
        [[[[[]]]]],
        list(range(50)),
        {"__module__": "kurento", "__type__": "IceCandidate"},
        {"candidate": CANDIDATE.format(port=9), "sdpMid": 0, "sdpMLineIndex": "0"},
        {"a": {"b": {"c": {"d": {"e": [1, {"f": None}]}}}}},
        *ids,
    ]
    return copy.deepcopy(rng.choice(choices))


def fuzz_seeds(pipeline: str, endpoint: str) -> list[dict[str, Any]]:
    """Valid requests of every method (none slow, none with an address to reach)."""

    def invoke(obj: str, operation: str, **params: Any) -> dict[str, Any]:
        request: dict[str, Any] = {"object": obj, "operation": operation}
        if params:
            request["operationParams"] = params
        return {"method": "invoke", "params": request}

    return [
        {"method": "ping", "params": {"interval": 5000}},
        {"method": "connect", "params": {}},
        {"method": "create", "params": {"type": "MediaPipeline"}},
        {
            "method": "create",
            "params": {"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": pipeline}},
        },
        {
            "method": "create",
            "params": {"type": "PassThrough", "constructorParams": {"mediaPipeline": pipeline}},
        },
        invoke(pipeline, "getName"),
        invoke(pipeline, "setName", name="fuzzed"),
        invoke(pipeline, "addTag", key="k", value="v"),
        invoke(pipeline, "getTags"),
        invoke(pipeline, "getChildren"),
        invoke(
            endpoint,
            "addIceCandidate",
            candidate={"candidate": CANDIDATE.format(port=9), "sdpMid": "0", "sdpMLineIndex": 0},
        ),
        invoke(endpoint, "processOffer", offer=GARBAGE_SDP_OFFER),
        invoke(endpoint, "processAnswer", answer=GARBAGE_SDP_OFFER),
        invoke(endpoint, "generateOffer", options={"offerToReceiveAudio": False}),
        invoke(endpoint, "gatherCandidates"),
        invoke(endpoint, "getStats", mediaType="VIDEO"),
        invoke(endpoint, "connect", sink=endpoint, mediaType="VIDEO"),
        invoke(endpoint, "getSourceConnections"),
        invoke(endpoint, "isMediaFlowingIn", mediaType="AUDIO"),
        invoke(endpoint, "setMaxVideoSendBandwidth", maxVideoSendBandwidth=1000),
        invoke(endpoint, "getLocalSessionDescriptor"),
        invoke("manager_ServerManager", "getInfo"),
        invoke("manager_ServerManager", "getPipelines"),
        {"method": "subscribe", "params": {"object": endpoint, "type": "IceCandidateFound"}},
        {"method": "unsubscribe", "params": {"object": endpoint, "subscription": "nope"}},
        {"method": "describe", "params": {"object": endpoint}},
        {"method": "ref", "params": {"object": pipeline}},
        {"method": "keepAlive", "params": {}},
        {"method": "release", "params": {"object": f"{pipeline}/nothing"}},
        {
            "method": "transaction",
            "params": {
                "operations": [
                    {
                        "jsonrpc": "2.0",
                        "id": 0,
                        "method": "create",
                        "params": {"type": "MediaPipeline"},
                    },
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "invoke",
                        "params": {
                            "object": "newref:0",
                            "operation": "addTag",
                            "operationParams": {"key": "a", "value": "b"},
                        },
                    },
                ]
            },
        },
    ]


def containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every dict and list inside a request, with the path to it."""
    found = []
    if isinstance(value, dict | list):
        found.append((path, value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found.extend(containers(child, (*path, key)))
    return found


def mutate(rng: random.Random, request: dict[str, Any], ids: list[str]) -> None:
    """One mutation somewhere in the request (never its id: that is set afterwards)."""
    target_path, target = rng.choice(
        [c for c in containers(request) if c[0] != ()] or [((), request)]
    )
    if target_path == () and not target:
        return
    action = rng.random()
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    if isinstance(target, dict) and (action < 0.15 or not keys):
        target[rng.choice(["object", "type", "sessionId", "operation", "value", "x", "params"])] = (
            fuzz_values(rng, ids)
        )
    elif action < 0.3 and keys:
        del target[rng.choice(keys)]
    elif keys:
        target[rng.choice(keys)] = fuzz_values(rng, ids)


def fuzz_request(rng: random.Random, seeds: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    request = {"jsonrpc": "2.0", **copy.deepcopy(rng.choice(seeds))}
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        roll = rng.random()
        if roll < 0.05:
            request["params"] = fuzz_values(rng, ids)  # params of another type altogether
        elif roll < 0.1:
            request["method"] = fuzz_values(rng, ids)
        elif roll < 0.13:
            request["jsonrpc"] = fuzz_values(rng, ids)
        elif roll < 0.16 and isinstance(request.get("params"), dict):
            request["params"]["sessionId"] = f"fuzz-{rng.randint(0, 7)}"
        else:
            mutate(rng, request, ids)
    return request


def raw_garbage(rng: random.Random, counter: int) -> str | bytes:
    """Frames that are not requests at all."""
    return rng.choice(
        [
            "",
            "null",
            "[]",
            "[1, 2]",
            '{"jsonrpc": "2.0"',
            '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
            "[" * 50_000,
            "{" * 1000,
            '{"a":' * 100 + "1" + "}" * 100,
            b"\xff\xfe\x00garbage",
            json.dumps({"jsonrpc": "2.0", "id": f"raw-{counter}", "method": "ping"}).encode(),
        ]
    )
