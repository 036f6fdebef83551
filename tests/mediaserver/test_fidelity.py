"""Behaviour a Kurento application (or Kurento's own client suites) can observe, checked against
what KMS 7 does: which element reports media flowing in and out, media and ICE/DTLS state events,
the Error event, getStats entries, error codes, subscriptions and getKmd."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from mediaserver import webrtc

from .peers import Peer
from .rpc import Rpc
from .test_forwarding import publish, view


async def events_until(
    rpc: Rpc, types: set[str], last: tuple[str, str], timeout: float = 15
) -> list[dict[str, Any]]:
    """The events of `types` in arrival order, up to the first whose (type, data.state or
    data.newState) is `last`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await rpc.events.get()
            if event["type"] not in types:
                continue
            seen.append(event)
            data = event["data"]
            if (event["type"], data.get("state", data.get("newState"))) == last:
                return seen


async def no_event(rpc: Rpc, event_type: str, source: str, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        event = await rpc.next_event(event_type, source, timeout=seconds)
        pytest.fail(f"unexpected {event_type}: {event['data']}")


async def error_of(rpc: Rpc, method: str, **params: Any) -> dict[str, Any]:
    response = await rpc.call(method, **params)
    assert "error" in response, response
    return response["error"]


# -- 1. media flow in/out -------------------------------------------------------------------------


async def test_media_flows_out_of_the_endpoint_that_receives_it_and_into_its_sinks(
    rpc: Rpc,
) -> None:
    """As KMS (kmselement.c): "flow out" is media entering the element's output (what a
    WebRtcEndpoint receives from its peer, whether or not a sink is connected), "flow in" is media
    arriving at its sink pads from the element connected to it."""
    pipeline = await rpc.create("MediaPipeline")
    source = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    for event in ("MediaFlowOutStateChanged", "MediaFlowInStateChanged", "MediaStateChanged"):
        await rpc.subscribe(source, event)
    publisher = Peer(send=True, receive=False)
    await publisher.negotiate(rpc, source)
    viewer: Peer | None = None
    try:
        flow_out = await rpc.next_event("MediaFlowOutStateChanged", source)
        assert flow_out["data"]["state"] == "FLOWING"
        assert flow_out["data"]["mediaType"] in ("AUDIO", "VIDEO")
        assert await rpc.invoke(source, "isMediaFlowingOut", mediaType="VIDEO") is True
        assert await rpc.invoke(source, "isMediaFlowingIn", mediaType="VIDEO") is False
        media_state = await rpc.next_event("MediaStateChanged", source)
        assert media_state["data"]["newState"] == "CONNECTED"

        sink, viewer = await view(rpc, pipeline, source)
        await rpc.subscribe(sink, "MediaFlowInStateChanged")
        flow_in = await rpc.next_event("MediaFlowInStateChanged", sink)
        assert flow_in["data"]["state"] == "FLOWING"
        assert await rpc.invoke(sink, "isMediaFlowingIn", mediaType="VIDEO") is True
        # Nothing reaches the source's sink pads: it reports no flow in, ever.
        await no_event(rpc, "MediaFlowInStateChanged", source, 1.0)
        assert await rpc.invoke(source, "isMediaFlowingIn", mediaType="AUDIO") is False
    finally:
        await publisher.close()
        if viewer is not None:
            await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_media_flow_out_comes_before_media_state_connected(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    for event in ("MediaFlowOutStateChanged", "MediaStateChanged"):
        await rpc.subscribe(source, event)
    publisher = Peer(send=True, receive=False)
    try:
        await publisher.negotiate(rpc, source)
        events = await events_until(
            rpc,
            {"MediaFlowOutStateChanged", "MediaStateChanged"},
            ("MediaStateChanged", "CONNECTED"),
        )
        assert events[0]["type"] == "MediaFlowOutStateChanged"
        assert events[0]["data"]["state"] == "FLOWING"
    finally:
        await publisher.close()
    await rpc.request("release", object=pipeline)


# -- 2. media state after the peer has gone -------------------------------------------------


async def test_media_state_goes_disconnected_and_stays_when_the_peer_leaves(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    sink = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(sink, "MediaStateChanged")
    await rpc.invoke(source, "connect", sink=sink)
    viewer = Peer(send=False, receive=True)
    try:
        await viewer.negotiate(rpc, sink)
        await viewer.wait_video(10)
        connected = await rpc.next_event("MediaStateChanged", sink)
        assert connected["data"]["newState"] == "CONNECTED"
        await viewer.close()  # the viewer leaves; the publisher keeps feeding the sink
        gone = await rpc.next_event("MediaStateChanged", sink)
        assert gone["data"] == {**gone["data"], "oldState": "CONNECTED", "newState": "DISCONNECTED"}
        await no_event(rpc, "MediaStateChanged", sink, 3.0)
        assert await rpc.invoke(sink, "getMediaState") == "DISCONNECTED"
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_media_state_goes_disconnected_when_the_peer_vanishes(
    rpc: Rpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that stops sending without a word (no RTCP BYE, no DTLS close): like KMS's RTP
    session timeout, the state goes DISCONNECTED once nothing came for a while."""
    monkeypatch.setattr(webrtc, "PEER_SILENCE_TIMEOUT", 2.0, raising=False)
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "MediaStateChanged")
    publisher = Peer(send=True, receive=False)
    try:
        await publisher.negotiate(rpc, endpoint)
        connected = await rpc.next_event("MediaStateChanged", endpoint)
        assert connected["data"]["newState"] == "CONNECTED"
        for transceiver in publisher.pc.getTransceivers():  # its sockets go dead, silently
            connection = transceiver.sender.transport.transport._connection
            for protocol in connection._protocols:
                protocol.transport.close()
        gone = await rpc.next_event("MediaStateChanged", endpoint, timeout=8)
        assert gone["data"]["newState"] == "DISCONNECTED"
        await no_event(rpc, "MediaStateChanged", endpoint, 2.0)
    finally:
        await publisher.close()
    await rpc.request("release", object=pipeline)


# -- 3. ICE events ------------------------------------------------------------------------------


async def test_ice_state_events_come_in_order_with_the_stream_ids_of_the_selected_pair(
    rpc: Rpc,
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    ice_events = {"IceComponentStateChanged", "NewCandidatePairSelected"}
    for event in ice_events:
        await rpc.subscribe(endpoint, event)
    publisher = Peer(send=True, receive=False)
    try:
        await publisher.negotiate(rpc, endpoint)
        events = await events_until(rpc, ice_events, ("IceComponentStateChanged", "READY"))
        names = [
            e["data"]["state"] if e["type"] == "IceComponentStateChanged" else "PAIR"
            for e in events
        ]
        assert names == ["GATHERING", "CONNECTING", "PAIR", "CONNECTED", "READY"]
        pair = next(
            e["data"]["candidatePair"] for e in events if e["type"] != "IceComponentStateChanged"
        )
        for event in events:
            if event["type"] == "IceComponentStateChanged":
                assert isinstance(event["data"]["streamId"], int)
                assert str(event["data"]["streamId"]) == pair["streamId"]
                assert event["data"]["componentId"] == pair["componentId"] == 1
        assert await rpc.invoke(endpoint, "getICECandidatePairs") == [pair]
        [connection] = await rpc.invoke(endpoint, "getIceConnectionState")
        assert connection["__type__"] == "IceConnection"
        assert (connection["streamId"], connection["componentId"]) == (pair["streamId"], 1)
        assert connection["state"] == "READY"
    finally:
        await publisher.close()
    await rpc.request("release", object=pipeline)


# -- 4. DTLS -----------------------------------------------------------------------------------


async def test_dtls_connection_state_events_and_property(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "DtlsConnectionStateChange")
    await rpc.subscribe(endpoint, "NewCandidatePairSelected")
    assert await rpc.invoke(endpoint, "getDtlsConnectionState") == []
    publisher = Peer(send=True, receive=False)
    try:
        await publisher.negotiate(rpc, endpoint)
        events = await events_until(
            rpc, {"DtlsConnectionStateChange"}, ("DtlsConnectionStateChange", "CONNECTED")
        )
        states = [e["data"]["state"] for e in events]
        assert "CONNECTING" in states and states.index("CONNECTING") < len(states) - 1
        data = events[-1]["data"]
        assert data["type"] == "DtlsConnectionStateChange"
        assert all(isinstance(data[f], str) for f in ("streamId", "componentId", "connectionId"))
        connections = await rpc.invoke(endpoint, "getDtlsConnectionState")
        assert connections and all(c["__type__"] == "DtlsConnection" for c in connections)
        assert {c["state"] for c in connections} == {"CONNECTED"}
        assert data["streamId"] in {c["streamId"] for c in connections}
        pair = await rpc.invoke(endpoint, "getICECandidatePairs")
        assert {c["streamId"] for c in connections} == {pair[0]["streamId"]}

        await publisher.close()  # DTLS close_notify
        closed = await events_until(
            rpc, {"DtlsConnectionStateChange"}, ("DtlsConnectionStateChange", "CLOSED")
        )
        assert closed[-1]["data"]["state"] == "CLOSED"
    finally:
        await publisher.close()
    await rpc.request("release", object=pipeline)


# -- 5. the Error event --------------------------------------------------------------------------


async def test_error_event_carries_the_error_type_in_its_data(rpc: Rpc) -> None:
    """KMS's Error event has its own `type` field (the error's type), written into `data.type`;
    the notification's own `type` stays "Error"."""
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "Error")
    await rpc.subscribe(endpoint, "DtlsConnectionStateChange")
    peer = Peer(send=True, receive=False)
    try:
        offer = await peer.offer()
        # A fingerprint that is well formed but not the peer's certificate: DTLS fails.
        offer = re.sub(
            r"(a=fingerprint:sha-256 )([0-9A-F:]+)",
            lambda m: m.group(1) + ":".join(["AB"] * 32),
            offer,
        )
        await peer.accept(await rpc.invoke(endpoint, "processOffer", offer=offer))
        await rpc.invoke(endpoint, "gatherCandidates")
        for candidate in peer.candidates():
            await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)
        error = await rpc.next_event("Error", endpoint, timeout=15)
        assert error["type"] == "Error"
        assert error["data"]["type"] == "CONNECT_ERROR"
        assert error["data"]["errorCode"] == 40004 and error["data"]["description"]
        dtls = await rpc.invoke(endpoint, "getDtlsConnectionState")
        assert {c["state"] for c in dtls} == {"FAILED"}
    finally:
        await peer.close()
    await rpc.request("release", object=pipeline)


# -- 6. getStats ---------------------------------------------------------------------------------

RTP_STREAM_FIELDS = {
    "id",
    "type",
    "timestampMillis",
    "ssrc",
    "associateStatsId",
    "isRemote",
    "mediaTrackId",
    "transportId",
    "codecId",
    "firCount",
    "pliCount",
    "nackCount",
    "sliCount",
    "remb",
    "packetsLost",
    "fractionLost",
}


async def test_get_stats_has_the_endpoint_entry_and_kms_rtp_fields(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    sink, viewer = await view(rpc, pipeline, source)
    try:
        await viewer.wait_video(30)
        await rpc.invoke(source, "requestKeyframe")  # a PLI to the publisher
        await asyncio.sleep(0.2)
        stats = await rpc.invoke(source, "getStats", mediaType="VIDEO")
        endpoint = stats[source]
        assert endpoint["__type__"] == "EndpointStats" and endpoint["type"] == "endpoint"
        assert endpoint["id"] == source
        assert endpoint["inputLatency"] == [] and endpoint["E2ELatency"] == []
        [inbound] = [s for s in stats.values() if s["type"] == "inboundrtp"]
        assert inbound["__type__"] == "RTCInboundRTPStreamStats"
        assert set(inbound) >= RTP_STREAM_FIELDS | {"packetsReceived", "bytesReceived", "jitter"}
        assert inbound["bytesReceived"] > 1000 and inbound["packetsReceived"] > 10
        assert inbound["pliCount"] >= 1
        assert inbound["firCount"] == 0 and inbound["nackCount"] >= 0

        async with asyncio.timeout(10):  # a round trip needs a sender and a receiver report
            while True:
                stats = await rpc.invoke(sink, "getStats", mediaType="VIDEO")
                [outbound] = [s for s in stats.values() if s["type"] == "outboundrtp"]
                if outbound["roundTripTime"] > 0 and outbound["remb"] > 0:
                    break
                await asyncio.sleep(0.3)
        assert stats[sink]["type"] == "endpoint"
        assert outbound["__type__"] == "RTCOutboundRTPStreamStats"
        assert set(outbound) >= RTP_STREAM_FIELDS | {
            "packetsSent",
            "bytesSent",
            "targetBitrate",
            "roundTripTime",
        }
        assert outbound["packetsSent"] > 10 and outbound["targetBitrate"] > 0
        assert outbound["packetsLost"] == 0 and outbound["fractionLost"] == 0

        pass_through = await rpc.create("PassThrough", mediaPipeline=pipeline)
        element = (await rpc.invoke(pass_through, "getStats"))[pass_through]
        assert (element["type"], element["__type__"]) == ("element", "ElementStats")
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


# -- 7. error codes ------------------------------------------------------------------------------


async def test_error_codes_are_those_of_kms_7(rpc: Rpc) -> None:
    for type_name in ("FaceOverlayFilter", "kurento.MediaElement"):
        unknown = await error_of(rpc, "create", type=type_name)
        assert unknown["code"] == 40108, type_name
        assert unknown["message"] == f"Factory '{type_name}' not found"
        assert unknown["data"]["type"] == "MEDIA_OBJECT_NOT_AVAILABLE"

    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    marshall = [
        await error_of(rpc, "invoke", object=endpoint, operation="processOffer"),
        await error_of(
            rpc, "invoke", object=endpoint, operation="processOffer", operationParams={"offer": 5}
        ),
        await error_of(
            rpc,
            "invoke",
            object=endpoint,
            operation="isMediaFlowingIn",
            operationParams={"mediaType": "SMELL"},
        ),
        await error_of(
            rpc, "invoke", object=endpoint, operation="setName", operationParams={"name": 5}
        ),
        await error_of(rpc, "invoke", object=endpoint, operation="getName", operationParams=["x"]),
        await error_of(rpc, "create", type="WebRtcEndpoint", constructorParams={}),
        await error_of(
            rpc,
            "create",
            type="WebRtcEndpoint",
            constructorParams={"mediaPipeline": pipeline, "recvonly": "yes"},
        ),
    ]
    assert [(e["code"], e["data"]["type"]) for e in marshall] == [(40001, "MARSHALL_ERROR")] * len(
        marshall
    )

    tag = await error_of(
        rpc, "invoke", object=endpoint, operation="getTag", operationParams={"key": "k"}
    )
    assert (tag["code"], tag["data"]["type"]) == (40110, "MEDIA_OBJECT_TAG_KEY_NOT_FOUND")

    assert await rpc.request("unref", object="nothing_kurento.MediaPipeline") == {
        "sessionId": rpc.session_id
    }
    unknown_session = await error_of(rpc, "keepAlive", sessionId="no-such-session")
    assert (unknown_session["code"], unknown_session["message"]) == (40007, "Invalid session")
    assert await rpc.request("keepAlive") == {"sessionId": rpc.session_id}
    await rpc.request("release", object=pipeline)


# -- 8. subscriptions ----------------------------------------------------------------------------


async def test_each_subscribe_gets_its_own_id_and_delivery_lasts_until_the_last_unsubscribe(
    rpc: Rpc,
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source = await rpc.create("PassThrough", mediaPipeline=pipeline)
    sink = await rpc.create("PassThrough", mediaPipeline=pipeline)
    first = await rpc.subscribe(source, "ElementConnected")
    second = await rpc.subscribe(source, "ElementConnected")
    assert first != second

    async def connected_events() -> int:
        await rpc.invoke(source, "connect", sink=sink, mediaType="VIDEO")
        await rpc.invoke(source, "disconnect", sink=sink, mediaType="VIDEO")
        await rpc.request("ping")
        await asyncio.sleep(0.1)
        count = 0
        while not rpc.events.empty():
            count += rpc.events.get_nowait()["type"] == "ElementConnected"
        return count

    assert await connected_events() == 1  # once per session, however many subscriptions
    await rpc.request("unsubscribe", object=source, subscription=first)
    assert await connected_events() == 1  # the second subscription still delivers
    await rpc.request("unsubscribe", object=source, subscription=second)
    assert await connected_events() == 0
    await rpc.request("release", object=pipeline)


# -- 9. getKmd -----------------------------------------------------------------------------------


async def test_get_kmd_describes_each_module_from_the_servers_own_classes(rpc: Rpc) -> None:
    manager = "manager_ServerManager"
    info = await rpc.invoke(manager, "getInfo")
    modules = {m["name"]: m for m in info["modules"]}
    documents = {}
    for name in ("core", "elements", "filters"):
        text = await rpc.invoke(manager, "getKmd", moduleName=name)
        document = json.loads(text)
        documents[name] = document
        assert document["name"] == name and document["version"] == modules[name]["version"]
        assert {"kurentoVersion", "code", "remoteClasses", "complexTypes", "events"} <= set(
            document
        )
        classes = {c["name"] for c in document["remoteClasses"] if not c.get("abstract")}
        assert classes == set(modules[name]["factories"])

    core = {c["name"]: c for c in documents["core"]["remoteClasses"]}
    assert "extends" not in core["MediaObject"] and core["MediaObject"]["abstract"] is True
    assert core["MediaElement"]["extends"] == "MediaObject"
    assert core["Filter"] == {**core["Filter"], "extends": "MediaElement", "abstract": True}
    # Methods are declared where KMS's interface declares them, not on each endpoint class.
    methods = {name: {m["name"] for m in core[name]["methods"]} for name in core}
    assert {"generateOffer", "processOffer", "processAnswer"} <= methods["SdpEndpoint"]
    assert {"getLocalSessionDescriptor", "getRemoteSessionDescriptor"} <= methods["SdpEndpoint"]
    assert "requestKeyframe" in methods["BaseRtpEndpoint"]
    assert core["BaseRtpEndpoint"]["extends"] == "SdpEndpoint"
    assert core["MediaPipeline"]["constructor"]["params"] == []
    assert {"ElementConnected", "MediaFlowInStateChanged"} <= set(core["MediaElement"]["events"])
    connect = next(m for m in core["MediaElement"]["methods"] if m["name"] == "connect")
    assert connect["params"][0] == {"name": "sink", "type": "MediaElement"}
    assert connect["params"][1] == {"name": "mediaType", "type": "MediaType", "optional": True}
    flowing = next(m for m in core["MediaElement"]["methods"] if m["name"] == "isMediaFlowingIn")
    assert flowing["return"] == {"type": "boolean"}
    properties = {p["name"]: p for p in core["BaseRtpEndpoint"]["properties"]}
    assert properties["mediaState"] == {
        "name": "mediaState",
        "type": "MediaState",
        "readOnly": True,
    }
    assert "getMediaState" not in {m["name"] for m in core["BaseRtpEndpoint"]["methods"]}

    types = {t["name"]: t for t in documents["core"]["complexTypes"]}
    assert types["MediaState"] == {
        "typeFormat": "ENUM",
        "name": "MediaState",
        "values": ["DISCONNECTED", "CONNECTED"],
    }
    assert types["ElementConnectionData"]["typeFormat"] == "REGISTER"
    events = {e["name"]: e for e in documents["core"]["events"]}
    assert events["MediaStateChanged"]["extends"] == "Media"
    assert [p["name"] for p in events["MediaStateChanged"]["properties"]] == [
        "oldState",
        "newState",
    ]

    elements = {c["name"]: c for c in documents["elements"]["remoteClasses"]}
    webrtc_endpoint = elements["WebRtcEndpoint"]
    assert webrtc_endpoint["extends"] == "BaseRtpEndpoint"
    assert [p["name"] for p in webrtc_endpoint["constructor"]["params"]][:3] == [
        "mediaPipeline",
        "recvonly",
        "sendonly",
    ]
    assert "DtlsConnectionStateChange" in webrtc_endpoint["events"]
    elements_types = {t["name"] for t in documents["elements"]["complexTypes"]}
    assert {"IceCandidate", "IceCandidatePair", "DtlsConnectionState"} <= elements_types
    zbar = {c["name"]: c for c in documents["filters"]["remoteClasses"]}["ZBarFilter"]
    assert (zbar["extends"], zbar["events"]) == ("Filter", ["CodeFound"])
    assert [e["name"] for e in documents["filters"]["events"]] == ["CodeFound"]

    missing = await error_of(
        rpc, "invoke", object=manager, operation="getKmd", operationParams={"moduleName": "nope"}
    )
    assert (missing["code"], missing["data"]["type"]) == (
        40500,
        "SERVER_MANAGER_ERROR_KMD_NOT_FOUND",
    )
