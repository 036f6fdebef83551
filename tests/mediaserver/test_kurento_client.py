"""Conformance with the official JavaScript client, npm kurento-client 7.3.0 in its default strict
mode: the calls a Kurento application makes, with real aiortc peers sending and decoding media."""

from __future__ import annotations

import asyncio

from mediaserver.server import MediaServer

from .conftest import JsClient
from .peers import Peer


async def negotiate(js: JsClient, ref: str, peer: Peer) -> None:
    """The Kurento pattern through the official client: events first, processOffer, gather,
    trickle the peer's candidates in."""
    await js.run("on", ref=ref, event="IceCandidateFound")
    answer = await js.run("call", ref=ref, method="processOffer", args=[await peer.offer()])
    await peer.accept(answer)
    await js.run("call", ref=ref, method="gatherCandidates")
    for candidate in peer.candidates():
        await js.run("addIceCandidate", ref=ref, candidate=candidate)


async def test_strict_mode_connects_and_sees_the_modules(
    media_server: MediaServer, js_client: JsClient
) -> None:
    await js_client.run("connect", url=media_server.url)
    info = await js_client.run("serverInfo")
    assert {"core", "elements", "filters"} <= set(info["modules"])
    assert info["pipelines"] == []
    pipeline = await js_client.run("create", ref="pipeline", type="MediaPipeline")
    assert (await js_client.run("serverInfo"))["pipelines"] == [pipeline]
    assert await js_client.run("sessionId") in media_server.sessions.ids()
    await js_client.run("release", ref="pipeline")
    await js_client.run("close")


async def test_loopback_hello_world(media_server: MediaServer, js_client: JsClient) -> None:
    await js_client.run("connect", url=media_server.url)
    pipeline = await js_client.run("create", ref="pipeline", type="MediaPipeline")
    endpoint = await js_client.run("create", ref="ep", type="WebRtcEndpoint", parent="pipeline")
    assert endpoint.startswith(pipeline + "/") and endpoint.endswith("_kurento.WebRtcEndpoint")
    await js_client.run("on", ref="ep", event="MediaFlowInStateChanged")
    await js_client.run("call", ref="ep", method="connect", args=[{"$ref": "ep"}])
    peer = Peer(send=True, receive=True)
    try:
        await negotiate(js_client, "ep", peer)
        found = await js_client.next_event("IceCandidateFound", "ep")
        assert found["data"]["candidate"]["candidate"].startswith("candidate:")
        assert " 127.0.0.1 " in found["data"]["candidate"]["candidate"]
        flowing = await js_client.next_event("MediaFlowInStateChanged", "ep")
        assert flowing["data"]["state"] == "FLOWING"
        await peer.wait_video(30)
        assert peer.received.non_black_frames > 0
        assert peer.received.audio_frames > 0
    finally:
        await peer.close()
    await js_client.run("release", ref="pipeline")
    assert (await js_client.run("serverInfo"))["pipelines"] == []
    await js_client.run("close")


async def test_fan_out_one_publisher_to_three_viewers(
    media_server: MediaServer, js_client: JsClient
) -> None:
    await js_client.run("connect", url=media_server.url)
    await js_client.run("create", ref="pipeline", type="MediaPipeline")
    await js_client.run("create", ref="pub", type="WebRtcEndpoint", parent="pipeline")
    publisher = Peer(send=True, receive=False)
    viewers = [Peer(send=False, receive=True) for _ in range(3)]
    try:
        viewer_ids = [
            await js_client.run("create", ref=f"view{i}", type="WebRtcEndpoint", parent="pipeline")
            for i in range(3)
        ]
        # Connected before anyone negotiated, after the publisher is live, and after the viewer
        # itself negotiated: the group-call orders of a real room.
        await js_client.run("call", ref="pub", method="connect", args=[{"$ref": "view0"}])
        await negotiate(js_client, "pub", publisher)
        await negotiate(js_client, "view0", viewers[0])
        await negotiate(js_client, "view1", viewers[1])
        await js_client.run("call", ref="pub", method="connect", args=[{"$ref": "view1"}])
        await negotiate(js_client, "view2", viewers[2])
        await asyncio.sleep(0.5)
        await js_client.run("call", ref="pub", method="connect", args=[{"$ref": "view2"}])

        for viewer in viewers:
            await viewer.wait_video(30)
            assert viewer.received.non_black_frames > 0
            assert viewer.received.audio_frames > 0
            assert viewer.received.sizes == {(640, 480)}
        sinks = await js_client.run("call", ref="pub", method="getSinkConnections", args=["VIDEO"])
        assert sorted(s["sink"] for s in sinks) == sorted(viewer_ids)
        # The publisher's media flows out of its endpoint (KMS: what the element produces).
        assert (
            await js_client.run("call", ref="pub", method="isMediaFlowingOut", args=["VIDEO"])
            is True
        )
    finally:
        for peer in [publisher, *viewers]:
            await peer.close()
    await js_client.run("release", ref="pipeline")
    assert (await js_client.run("serverInfo"))["pipelines"] == []
    await js_client.run("close")


async def test_session_resumes_after_the_socket_drops(
    media_server: MediaServer, js_client: JsClient
) -> None:
    await js_client.run("connect", url=media_server.url)
    await js_client.run("create", ref="pipeline", type="MediaPipeline")
    endpoint = await js_client.run("create", ref="ep", type="WebRtcEndpoint", parent="pipeline")
    session_id = await js_client.run("sessionId")

    for conn in tuple(media_server.connections):
        await conn.ws.close()  # the network drops; the client reconnects by itself
    reconnected = await js_client.next_event("reconnected", timeout=20)
    assert reconnected["data"] is True  # `connect {sessionId}` kept the session

    assert await js_client.run("sessionId") == session_id
    assert endpoint in media_server.registry.objects
    assert await js_client.run("call", ref="ep", method="getMediaPipeline") is not None
    await js_client.run("release", ref="pipeline")
    assert (await js_client.run("serverInfo"))["pipelines"] == []
    await js_client.run("close")


async def test_unimplemented_factory_is_an_error_not_a_crash(
    media_server: MediaServer, js_client: JsClient
) -> None:
    await js_client.run("connect", url=media_server.url)
    await js_client.run("create", ref="pipeline", type="MediaPipeline")
    reply = await js_client.try_run(
        "create",
        ref="overlay",
        type="FaceOverlayFilter",
        parent="pipeline",
        params={},
    )
    assert not reply["ok"]
    assert "FaceOverlayFilter' not found" in reply["error"]
    assert reply["code"] == 40108
    # The connection and the session keep working.
    await js_client.run("create", ref="ep", type="WebRtcEndpoint", parent="pipeline")
    await js_client.run("release", ref="pipeline")
    await js_client.run("close")


async def test_explicit_transaction_and_a_plain_rtp_offer(
    media_server: MediaServer, js_client: JsClient
) -> None:
    """Two cases from Kurento's own client tests. Transaction.js: beginTransaction, creations and
    an operation on a new object inside it, commit; the client sends one `transaction` with
    `newref:` parameters, and an operation that fails (a factory this server lacks) fails alone.
    (Not `connect(tx, sink)`: the client's MediaElement.connect drops the transaction argument.)
    WebRtcEndpoint.js: a plain RTP/AVP offer is answered, its m-line rejected, as KMS does."""
    await js_client.run("connect", url=media_server.url)
    result = await js_client.run(
        "transaction",
        steps=[
            {"create": "pipeline", "type": "MediaPipeline"},
            {"create": "source", "type": "PassThrough", "parent": "pipeline"},
            {"create": "ep", "type": "WebRtcEndpoint", "parent": "pipeline"},
            {"call": "source", "method": "addTag", "args": ["room", "42"]},
            {"create": "filter", "type": "FaceOverlayFilter", "parent": "pipeline"},
        ],
    )
    assert result["commited"] is True
    pipeline, source, endpoint, tagged, missing = result["steps"]
    assert pipeline["ok"] and source["value"].startswith(pipeline["value"] + "/")
    assert endpoint["value"].endswith("_kurento.WebRtcEndpoint")
    assert tagged["ok"]
    assert missing == {"ok": False, "code": 40108}
    assert await js_client.run("call", ref="source", method="getTag", args=["room"]) == "42"
    await js_client.run("call", ref="source", method="connect", args=[{"$ref": "ep"}])
    sinks = await js_client.run("call", ref="source", method="getSinkConnections", args=["VIDEO"])
    assert [c["sink"] for c in sinks] == [endpoint["value"]]

    offer = (
        "v=0\r\no=- 12345 12345 IN IP4 95.125.31.136\r\ns=-\r\nc=IN IP4 95.125.31.136\r\nt=0 0\r\n"
        "m=video 52126 RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\na=recvonly\r\n"
    )
    answer = await js_client.run("call", ref="ep", method="processOffer", args=[offer])
    assert "m=video 0 RTP/AVP 96 97 98" in answer
    assert await js_client.run("call", ref="ep", method="getRemoteSessionDescriptor") == offer
    await js_client.run("release", ref="pipeline")
    await js_client.run("close")
