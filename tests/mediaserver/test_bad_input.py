"""Bad input from a media client: each answered with a KMS-style error, and the server, the socket
and every other session keep working. The fixture checks nothing is left behind."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from mediaserver.server import MediaServer

from .peers import Peer
from .rpc import Rpc, RpcError

GARBAGE_SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF\r\n"


async def error_of(rpc: Rpc, method: str, **params) -> dict:
    response = await rpc.call(method, **params)
    assert "error" in response, response
    return response["error"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("this is not json", -32700),
        ("[1, 2, 3]", -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 5}), -32600),
        (json.dumps({"jsonrpc": "1.0", "id": 5, "method": "ping"}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": [1], "method": "ping"}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]}), -32602),
        (json.dumps({"jsonrpc": "2.0", "id": 5, "method": "explode"}), -32601),
        (json.dumps({"jsonrpc": "2.0", "id": 5, "method": "invoke", "params": {}}), -32000),
        (
            json.dumps({"jsonrpc": "2.0", "id": 5, "method": "create", "params": {"type": 7}}),
            -32602,
        ),
    ],
)
async def test_malformed_requests_get_jsonrpc_errors(rpc: Rpc, payload: str, code: int) -> None:
    request_id = 5 if '"id": 5' in payload else None
    response = await rpc.send_raw(payload, request_id)
    assert response["error"]["code"] == code
    assert response["error"]["message"] and response["error"]["data"]["type"]
    assert (await rpc.request("ping"))["value"] == "pong"  # the socket still works


async def test_wrong_parameters_are_refused(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    missing = await error_of(rpc, "invoke", object=endpoint, operation="processOffer")
    assert missing["code"] == 40001 and "offer" in missing["message"]  # MARSHALL_ERROR
    wrong_type = await error_of(
        rpc, "invoke", object=endpoint, operation="processOffer", operationParams={"offer": 5}
    )
    assert wrong_type["code"] == 40001 and "String" in wrong_type["message"]
    wrong_ref = await error_of(
        rpc, "invoke", object=endpoint, operation="connect", operationParams={"sink": pipeline}
    )
    assert wrong_ref["code"] == 40107
    gone_ref = await error_of(
        rpc, "invoke", object=endpoint, operation="connect", operationParams={"sink": "x"}
    )
    assert gone_ref["code"] == 40101
    bad_media = await error_of(
        rpc,
        "invoke",
        object=endpoint,
        operation="connect",
        operationParams={"sink": endpoint, "mediaType": "SMELL"},
    )
    assert bad_media["code"] == 40001
    no_pipeline = await error_of(rpc, "create", type="WebRtcEndpoint", constructorParams={})
    assert no_pipeline["code"] == 40001
    unknown_pipeline = await error_of(
        rpc, "create", type="WebRtcEndpoint", constructorParams={"mediaPipeline": "nope"}
    )
    assert unknown_pipeline["code"] == 40101
    both = await error_of(
        rpc,
        "create",
        type="WebRtcEndpoint",
        constructorParams={"mediaPipeline": pipeline, "recvonly": True, "sendonly": True},
    )
    assert both["code"] == 40107
    bad_turn = await error_of(
        rpc,
        "invoke",
        object=endpoint,
        operation="setTurnUrl",
        operationParams={"turnUrl": "turn.example.com"},
    )
    assert bad_turn["code"] == 40107
    read_only = await error_of(
        rpc,
        "invoke",
        object=endpoint,
        operation="setMediaState",
        operationParams={"mediaState": "CONNECTED"},
    )
    assert read_only["code"] == 40008
    assert await rpc.invoke("manager_ServerManager", "getPipelines") == [pipeline]
    await rpc.request("release", object=pipeline)


async def test_bad_sdp_is_answered_and_the_endpoint_stays_usable(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    for sdp in ("", "hello", GARBAGE_SDP, "v=0\r\n" * 50_000):
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(endpoint, "processOffer", offer=sdp)
        assert refused.value.code == 40201
    with pytest.raises(RpcError) as no_offer:
        await rpc.invoke(endpoint, "processAnswer", answer=GARBAGE_SDP)
    assert no_offer.value.code == 40209

    # A real offer still works on the same endpoint, and a second one is refused.
    peer = Peer(send=True, receive=True)
    try:
        await rpc.invoke(endpoint, "connect", sink=endpoint)
        await peer.negotiate(rpc, endpoint)
        with pytest.raises(RpcError) as again:
            await rpc.invoke(endpoint, "processOffer", offer=await peer.offer())
        assert again.value.code == 40208
        await peer.wait_video(10)
    finally:
        await peer.close()

    # An answer that does not match the offer (wrong media sections) is refused.
    offerer = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(offerer, "generateOffer")
    mismatched = Peer(send=False, receive=True)
    other = await mismatched.offer()  # an offer is not an answer, and its sections differ
    with pytest.raises(RpcError) as wrong:
        await rpc.invoke(
            offerer, "processAnswer", answer=other.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
        )
    assert wrong.value.code in (40201, 40206)
    await mismatched.close()
    await rpc.request("release", object=pipeline)


async def test_bogus_ice_candidates_are_refused(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    peer = Peer(send=True, receive=False)
    await peer.negotiate(rpc, endpoint)
    for candidate in (
        {"candidate": "candidate:garbage", "sdpMid": "0", "sdpMLineIndex": 0},
        {"candidate": "candidate:1 1 udp 1 999.1.1.1 x typ host", "sdpMid": "0"},
        {"candidate": 42, "sdpMid": "0"},
        {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"},
        {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "zz"},
    ):
        response = await rpc.call(
            "invoke",
            object=endpoint,
            operation="addIceCandidate",
            operationParams={"candidate": candidate},
        )
        assert response["error"]["code"] in (40401, 40001), candidate
    wrong_shape = await error_of(
        rpc,
        "invoke",
        object=endpoint,
        operation="addIceCandidate",
        operationParams={"candidate": "not an object"},
    )
    assert wrong_shape["code"] == 40001
    await peer.close()
    await rpc.request("release", object=pipeline)


async def test_huge_frames(media_server: MediaServer, open_rpc) -> None:
    bystander = await open_rpc()
    pipeline = await bystander.create("MediaPipeline")
    client = await open_rpc()
    big = json.dumps(
        {"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"pad": "x" * 1_000_000}}
    )
    response = await client.send_raw(big, 9)
    assert response["error"]["code"] == -32600 and "too large" in response["error"]["message"]
    assert await client.request("ping") == {"value": "pong"}

    # Past the frame limit the socket is closed by the WebSocket layer (1009), nothing else.
    ws = await websockets.connect(media_server.url, max_size=None)
    await ws.send("x" * (5 * 1024 * 1024))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd.code == 1009
    assert await bystander.invoke(pipeline, "getName") == pipeline
    await bystander.request("release", object=pipeline)


async def test_a_flood_is_throttled_without_hurting_others(
    media_server: MediaServer, open_rpc
) -> None:
    bystander = await open_rpc()
    pipeline = await bystander.create("MediaPipeline")
    flooder = await open_rpc()
    await flooder.request("ping")
    count = 3000
    futures = {}
    loop = asyncio.get_running_loop()
    for i in range(count):
        futures[i] = flooder._waiting[i] = loop.create_future()
    for i in range(count):
        await flooder.ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": i, "method": "create", "params": {"type": "MediaPipeline"}}
            )
        )
    answers = await asyncio.wait_for(asyncio.gather(*futures.values()), 30)
    throttled = [a for a in answers if "error" in a]
    created = [a["result"]["value"] for a in answers if "result" in a]
    assert len(answers) == count  # every request is answered
    assert throttled and all(a["error"]["code"] == 40009 for a in throttled)
    assert created and len(created) < count
    assert await bystander.invoke(pipeline, "getName") == pipeline
    await flooder.call("closeSession", release=True)
    assert media_server.registry.pipelines() == [media_server.registry.objects[pipeline]]
    await bystander.request("release", object=pipeline)
