"""The Kurento Protocol as KMS 7 speaks it: sessions, objects, events, transactions, errors."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from mediaserver.config import Config
from mediaserver.server import MediaServer

from .rpc import Rpc, RpcError


async def test_first_request_creates_a_session_bound_to_the_socket(rpc: Rpc) -> None:
    pong = await rpc.request("ping", interval=5000)
    assert pong == {"value": "pong"}
    pipeline = await rpc.create("MediaPipeline")
    assert pipeline.endswith("_kurento.MediaPipeline")
    session_id = rpc.session_id
    assert session_id
    # Later requests on this socket without a sessionId are the same session.
    rpc.session_id = None
    result = await rpc.request("describe", object=pipeline)
    assert result == {
        "type": "MediaPipeline",
        "qualifiedType": "kurento.MediaPipeline",
        "hierarchy": ["kurento.MediaObject"],
        "sessionId": session_id,
    }
    assert await rpc.request("ping") == {"value": "pong", "sessionId": session_id}
    await rpc.request("release", object=pipeline)


async def test_ids_types_and_hierarchy_as_kms_writes_them(rpc: Rpc) -> None:
    pipeline = await rpc.create("kurento.MediaPipeline")
    endpoint = await rpc.create("kurento.WebRtcEndpoint", mediaPipeline=pipeline)
    assert endpoint.startswith(f"{pipeline}/") and endpoint.endswith("_kurento.WebRtcEndpoint")
    described = await rpc.request("describe", object=endpoint)
    assert described["hierarchy"] == [
        "kurento.BaseRtpEndpoint",
        "kurento.SdpEndpoint",
        "kurento.SessionEndpoint",
        "kurento.Endpoint",
        "kurento.MediaElement",
        "kurento.MediaObject",
    ]
    assert await rpc.invoke(endpoint, "getMediaPipeline") == pipeline
    assert await rpc.invoke(pipeline, "getChildren") == [endpoint]
    assert await rpc.invoke("manager_ServerManager", "getPipelines") == [pipeline]
    await rpc.request("release", object=pipeline)
    assert await rpc.invoke("manager_ServerManager", "getPipelines") == []
    # Releasing what is gone is not an error.
    assert await rpc.request("release", object=endpoint) == {"sessionId": rpc.session_id}


async def test_properties_tags_and_server_manager(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(endpoint, "setName", name="alice")
    assert await rpc.invoke(endpoint, "getName") == "alice"
    await rpc.invoke(endpoint, "setStunServerAddress", stunServerAddress="127.0.0.1")
    await rpc.invoke(endpoint, "setStunServerPort", stunServerPort=3478)
    assert await rpc.invoke(endpoint, "getStunServerPort") == 3478
    await rpc.invoke(endpoint, "setTurnUrl", turnUrl="user:pass@127.0.0.1:3478?transport=udp")
    await rpc.invoke(endpoint, "setMaxVideoSendBandwidth", maxVideoSendBandwidth=1000)
    assert await rpc.invoke(endpoint, "getMaxVideoSendBandwidth") == 1000
    assert await rpc.invoke(endpoint, "getMediaState") == "DISCONNECTED"
    assert await rpc.invoke(endpoint, "getConnectionState") == "DISCONNECTED"
    await rpc.invoke(endpoint, "addTag", key="room", value="r1")
    assert await rpc.invoke(endpoint, "getTag", key="room") == "r1"
    assert await rpc.invoke(endpoint, "getTags") == [
        {"__module__": "kurento", "__type__": "Tag", "key": "room", "value": "r1"}
    ]

    manager = "manager_ServerManager"
    await rpc.subscribe(manager, "ObjectDestroyed")
    await rpc.subscribe(manager, "ObjectCreated")
    passthrough = await rpc.create("PassThrough", mediaPipeline=pipeline)
    assert (await rpc.next_event("ObjectCreated"))["data"]["object"] == passthrough
    await rpc.request("release", object=passthrough)
    assert (await rpc.next_event("ObjectDestroyed"))["data"]["objectId"] == passthrough
    info = await rpc.invoke(manager, "getInfo")
    assert info["__type__"] == "ServerInfo" and info["type"] == "KMS"
    assert {m["name"] for m in info["modules"]} >= {"core", "elements", "filters"}
    assert "WebRtcEndpoint" in {f for m in info["modules"] for f in m["factories"]}
    assert await rpc.invoke(manager, "getSessions") == [rpc.session_id]
    assert await rpc.invoke(manager, "getCpuCount") >= 1
    assert isinstance(await rpc.invoke(manager, "getUsedCpu", interval=100), float)
    assert await rpc.invoke(manager, "getUsedMemory") > 1000
    await rpc.request("release", object=pipeline)


async def test_events_carry_kms_payloads_and_go_once_per_session(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source = await rpc.create("PassThrough", mediaPipeline=pipeline)
    sink = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "setSendTagsInEvents", sendTagsInEvents=True)
    await rpc.invoke(source, "addTag", key="who", value="alice")
    first = await rpc.subscribe(source, "ElementConnected")
    second = await rpc.subscribe(source, "ElementConnected")
    assert second != first  # as KMS: an id per subscribe call

    await rpc.invoke(source, "connect", sink=sink, mediaType="VIDEO")
    event = await rpc.next_event("ElementConnected")
    assert event["object"] == source
    data = event["data"]
    assert data["source"] == source and data["sink"] == sink and data["mediaType"] == "VIDEO"
    assert data["type"] == "ElementConnected"
    assert isinstance(data["timestampMillis"], str) and data["timestampMillis"].isdigit()
    assert data["tags"] == [
        {"__module__": "kurento", "__type__": "Tag", "key": "who", "value": "alice"}
    ]
    await asyncio.sleep(0.2)
    assert rpc.events.empty(), "a second subscription must not deliver the event twice"

    await rpc.request("unsubscribe", object=source, subscription=first)
    await rpc.request("unsubscribe", object=source, subscription=second)
    await rpc.invoke(source, "disconnect", sink=sink, mediaType="VIDEO")
    await rpc.invoke(source, "connect", sink=sink, mediaType="VIDEO")
    await asyncio.sleep(0.2)
    assert rpc.events.empty()
    await rpc.request("release", object=pipeline)


async def test_kurento_6_event_names_are_accepted(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "OnIceCandidate")
    await rpc.subscribe(endpoint, "OnIceGatheringDone")
    await rpc.invoke(endpoint, "generateOffer")
    await rpc.invoke(endpoint, "gatherCandidates")
    event = await rpc.next_event("OnIceCandidate")
    candidate = event["data"]["candidate"]
    assert candidate["__module__"] == "kurento" and candidate["__type__"] == "IceCandidate"
    assert candidate["candidate"].startswith("candidate:") and "127.0.0.1" in candidate["candidate"]
    assert candidate["sdpMid"] == "0" and candidate["sdpMLineIndex"] == 0
    await rpc.next_event("OnIceGatheringDone")
    await rpc.request("release", object=pipeline)


async def test_generate_offer_sdp_announces_loopback_and_both_kinds(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline, recvonly=True)
    offer = await rpc.invoke(endpoint, "generateOffer", options={"offerToReceiveAudio": False})
    assert "m=audio" not in offer and "m=video" in offer and "a=recvonly" in offer
    assert await rpc.invoke(endpoint, "getLocalSessionDescriptor") == offer
    with pytest.raises(RpcError) as missing:
        await rpc.invoke(endpoint, "getRemoteSessionDescriptor")
    assert missing.value.code == 40203
    await rpc.request("release", object=pipeline)


# The plain RTP offer of Kurento's own client tests (elements/WebRtcEndpoint.js, "Process offer").
PLAIN_RTP_OFFER = (
    "v=0\r\no=- 12345 12345 IN IP4 95.125.31.136\r\ns=-\r\nc=IN IP4 95.125.31.136\r\nt=0 0\r\n"
    "m=video 52126 RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\na=rtpmap:97 MP4V-ES/90000\r\n"
    "a=rtpmap:98 H263-1998/90000\r\na=recvonly\r\nb=AS:384\r\n"
)


async def test_an_offer_with_nothing_webrtc_is_answered_with_every_media_rejected(
    rpc: Rpc,
) -> None:
    """KMS's SDP agent has no WebRtcEndpoint handler for RTP/AVP: it rejects the m-line (port 0,
    inactive) in a successful answer instead of failing processOffer."""
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "IceGatheringDone")
    answer = await rpc.invoke(endpoint, "processOffer", offer=PLAIN_RTP_OFFER)
    assert "m=video 0 RTP/AVP 96 97 98\r\na=inactive\r\n" in answer
    assert answer.startswith("v=0\r\n") and answer.count("m=") == 1
    assert await rpc.invoke(endpoint, "getRemoteSessionDescriptor") == PLAIN_RTP_OFFER
    assert await rpc.invoke(endpoint, "getLocalSessionDescriptor") == answer
    with pytest.raises(RpcError) as again:
        await rpc.invoke(endpoint, "processOffer", offer=PLAIN_RTP_OFFER)
    assert again.value.code == 40208
    await rpc.invoke(endpoint, "gatherCandidates")
    await rpc.next_event("IceGatheringDone", endpoint)
    with pytest.raises(RpcError) as no_stream:
        await rpc.invoke(
            endpoint,
            "addIceCandidate",
            candidate={
                "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                "sdpMLineIndex": 0,
            },
        )
    assert no_stream.value.code == 40401

    # A WebRTC offer with one plain RTP section besides is refused, the endpoint kept usable.
    other = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    offerer = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    webrtc_offer = await rpc.invoke(offerer, "generateOffer")
    mixed = webrtc_offer + "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    with pytest.raises(RpcError) as refused:
        await rpc.invoke(other, "processOffer", offer=mixed)
    assert refused.value.code == 40205
    accepted = await rpc.invoke(other, "processOffer", offer=webrtc_offer)
    assert "m=video " in accepted and " UDP/TLS/RTP/SAVPF " in accepted
    await rpc.request("release", object=pipeline)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("actpass", "passive"), ("active", "passive"), ("passive", "active")],
)
async def test_the_answer_takes_the_dtls_server_role_when_the_offer_leaves_it_open(
    rpc: Rpc, offered: str, answered: str
) -> None:
    """As the DTLS server the endpoint chooses the SRTP profile (AES-GCM first, where a browser
    choosing would take AES-CM + HMAC-SHA1); an offer that fixes its role is followed."""
    pipeline = await rpc.create("MediaPipeline")
    offerer = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    answerer = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    offer = await rpc.invoke(offerer, "generateOffer")
    assert "a=setup:actpass\r\n" in offer
    answer = await rpc.invoke(
        answerer, "processOffer", offer=offer.replace("a=setup:actpass", f"a=setup:{offered}")
    )
    roles = {line for line in answer.split("\r\n") if line.startswith("a=setup:")}
    assert roles == {f"a=setup:{answered}"}
    await rpc.request("release", object=pipeline)


async def test_transaction_with_new_references(rpc: Rpc) -> None:
    await rpc.request("ping")
    operations = [
        {"jsonrpc": "2.0", "id": 0, "method": "create", "params": {"type": "MediaPipeline"}},
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "create",
            "params": {
                "type": "WebRtcEndpoint",
                "constructorParams": {"mediaPipeline": "newref:0"},
            },
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "create",
            "params": {"type": "PassThrough", "constructorParams": {"mediaPipeline": "newref:0"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "invoke",
            "params": {
                "object": "newref:1",
                "operation": "connect",
                "operationParams": {"sink": "newref:2"},
            },
        },
    ]
    result = await rpc.request("transaction", operations=operations)
    responses = result["value"]
    assert [r["id"] for r in responses] == [0, 1, 2, 3]
    pipeline, endpoint, passthrough = (r["result"]["value"] for r in responses[:3])
    sinks = await rpc.invoke(endpoint, "getSinkConnections", mediaType="VIDEO")
    assert [s["sink"] for s in sinks] == [passthrough]
    # The same operations again (their ids restart at 0) make new objects.
    again = (await rpc.request("transaction", operations=operations))["value"]
    assert again[0]["result"]["value"] != pipeline
    await rpc.request("release", object=again[0]["result"]["value"])

    # A transaction stops at its first error and says which.
    broken = [
        operations[0],
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "invoke",
            "params": {"object": "nope", "operation": "getName"},
        },
        {**operations[0], "id": 2},
    ]
    responses = (await rpc.request("transaction", operations=broken))["value"]
    assert len(responses) == 2 and responses[1]["error"]["code"] == 40101

    # Operation ids must be 0..n-1, as KMS demands; such a transaction runs nothing.
    for bad_ids in ([1, 0], [0, 0], [0, "1"], [0, None]):
        numbered = [{**operations[0], "id": i} for i in bad_ids]
        with pytest.raises(RpcError) as misnumbered:
            await rpc.request("transaction", operations=numbered)
        assert misnumbered.value.code == 40008
        assert misnumbered.value.message.startswith("Id of request '")
    pipelines = await rpc.invoke("manager_ServerManager", "getPipelines")
    assert set(pipelines) == {pipeline, responses[0]["result"]["value"]}
    await rpc.request("release", object=responses[0]["result"]["value"])
    await rpc.request("release", object=pipeline)


async def test_a_retried_request_gets_the_same_answer(rpc: Rpc) -> None:
    await rpc.request("ping")
    request = {
        "jsonrpc": "2.0",
        "id": 77,
        "method": "create",
        "params": {"type": "MediaPipeline", "sessionId": None},
    }
    await rpc.create("MediaPipeline")  # binds the session
    request["params"]["sessionId"] = rpc.session_id
    first = await rpc.send_raw(request, 77)
    again = await rpc.send_raw(request, 77)
    assert first == again
    assert len(await rpc.invoke("manager_ServerManager", "getPipelines")) == 2
    for pipeline in await rpc.invoke("manager_ServerManager", "getPipelines"):
        await rpc.request("release", object=pipeline)


async def test_session_resumes_on_a_new_socket_with_its_objects_and_events(
    media_server: MediaServer, open_rpc
) -> None:
    first = await open_rpc()
    pipeline = await first.create("MediaPipeline")
    source = await first.create("PassThrough", mediaPipeline=pipeline)
    sink = await first.create("PassThrough", mediaPipeline=pipeline)
    await first.subscribe(source, "ElementConnected")
    session_id = first.session_id
    await first.close()
    await asyncio.sleep(0.1)

    second = await open_rpc()
    resumed = await second.request("connect", sessionId=session_id)
    assert resumed["sessionId"] == session_id and resumed["serverId"] == media_server.server_id
    second.session_id = session_id
    await second.invoke(source, "connect", sink=sink)
    event = await second.next_event("ElementConnected")
    assert event["data"]["sink"] == sink

    with pytest.raises(RpcError) as unknown:
        await (await open_rpc()).request("connect", sessionId="not-a-session")
    assert (unknown.value.code, unknown.value.message) == (40007, "Invalid session")
    await second.request("release", object=pipeline)


async def test_objects_of_a_vanished_session_are_collected_after_the_grace_period() -> None:
    server = MediaServer(Config(port=0, session_grace=0.3))
    await server.start()
    try:
        kept = await Rpc.open(server.url)
        keeper_pipeline = await kept.create("MediaPipeline")
        gone = await Rpc.open(server.url)
        pipeline = await gone.create("MediaPipeline")
        await gone.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await gone.close()
        await asyncio.sleep(0.1)
        assert pipeline in server.registry.objects  # within the grace period
        await asyncio.sleep(1.0)
        assert [o for o in server.registry.objects if o.startswith(pipeline)] == []
        assert keeper_pipeline in server.registry.objects  # a live session keeps its objects
        await kept.request("release", object=keeper_pipeline)
        await kept.close()
    finally:
        await server.stop()


async def test_a_pipeline_lives_while_any_session_that_built_in_it_lives() -> None:
    """As in KMS, creating an element holds its pipeline, and whoever holds the pipeline holds
    what is made in it: one web worker's session going away (the worker died) does not take the
    room's pipeline, and the endpoints other workers made in it, with it."""
    server = MediaServer(Config(port=0, session_grace=0.3))
    await server.start()
    try:
        maker, builder = await Rpc.open(server.url), await Rpc.open(server.url)
        pipeline = await maker.create("MediaPipeline")
        early = await maker.create("WebRtcEndpoint", mediaPipeline=pipeline)
        built = await builder.create("WebRtcEndpoint", mediaPipeline=pipeline)
        late = await maker.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await maker.close()
        await asyncio.sleep(1.0)
        # The maker's session is gone; what only it held went with it.
        assert early not in server.registry.objects
        assert {pipeline, built, late} <= set(server.registry.objects)
        await builder.request("release", object=pipeline)
        await builder.close()
        assert [o for o in server.registry.objects if o.startswith(pipeline)] == []
    finally:
        await server.stop()


async def test_close_session_releases_or_drops(open_rpc, media_server: MediaServer) -> None:
    client = await open_rpc()
    pipeline = await client.create("MediaPipeline")
    response = await client.call("closeSession", release=True)
    assert response["result"] is None
    assert pipeline not in media_server.registry.objects

    # ref/unref: an object held by two sessions lives until both let go.
    a, b = await open_rpc(), await open_rpc()
    shared = await a.create("MediaPipeline")
    await b.request("ref", object=shared)
    await a.request("unref", object=shared)
    assert shared in media_server.registry.objects
    await b.call("closeSession")
    assert shared not in media_server.registry.objects


async def test_the_socket_path_is_checked(media_server: MediaServer) -> None:
    url = media_server.url.replace("/kurento", "/other")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    assert refused.value.response.status_code == 404


async def test_unknown_object_and_operation_errors(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    with pytest.raises(RpcError) as missing:
        await rpc.invoke("no-such-object", "getName")
    assert (missing.value.code, missing.value.message) == (
        40101,
        "Object 'no-such-object' not found",
    )
    with pytest.raises(RpcError) as unknown_op:
        await rpc.invoke(pipeline, "fly", height=3)
    assert unknown_op.value.code == 40008
    assert unknown_op.value.message == "Method 'fly' with 1 parameters not found"
    with pytest.raises(RpcError) as unknown_event:
        await rpc.subscribe(pipeline, "IceCandidateFound")
    assert (unknown_event.value.code, unknown_event.value.message) == (
        40106,
        "Event 'IceCandidateFound' not supported",
    )
    with pytest.raises(RpcError) as factory:
        await rpc.create("FaceOverlayFilter", mediaPipeline=pipeline)
    assert (factory.value.code, factory.value.message) == (
        40108,  # MEDIA_OBJECT_NOT_AVAILABLE, what KMS 7's module manager answers
        "Factory 'FaceOverlayFilter' not found",
    )
    with pytest.raises(RpcError) as abstract:
        await rpc.create("MediaElement", mediaPipeline=pipeline)
    assert abstract.value.code == 40108
    await rpc.request("release", object=pipeline)


def test_config_from_flags_and_environment() -> None:
    from mediaserver.config import parse

    config = parse(
        ["--port", "9999", "--port-range", "40000-40099"],
        {"MEDIASERVER_ICE_ADDRESSES": "127.0.0.1,::1", "MEDIASERVER_SESSION_GRACE": "10"},
    )
    assert config.port == 9999 and (config.port_min, config.port_max) == (40000, 40099)
    assert config.ice_addresses == ("127.0.0.1", "::1") and config.session_grace == 10.0
    assert config.url == "ws://127.0.0.1:9999/kurento"
    with pytest.raises(SystemExit):
        parse(["--ice-addresses", "example.com"], {})


async def test_wire_format_is_plain_jsonrpc(media_server: MediaServer) -> None:
    async with websockets.connect(media_server.url) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "ping"}))
        assert json.loads(await ws.recv()) == {
            "jsonrpc": "2.0",
            "id": "a",
            "result": {"value": "pong"},
        }
