"""WebRtcEndpoint data channels as KMS has them: the application m-line refused without
useDataChannels, channels opened from either side announced by DataChannelOpened/Closed, data
carried by DATA links (echoed by an endpoint connected to itself), errors and release."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator

import pytest
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from mediaserver.limits import MAX_DATA_CHANNEL_LABEL

from .peers import Peer
from .rpc import Rpc, RpcError
from .test_chromium import (
    media_server_process,  # noqa: F401 (a fixture)
    served_page,
)


class DataPeer:
    """An aiortc peer that offers data channels only: one named channel, or (label None) just
    the application m-line, for the server to open channels on."""

    def __init__(self, label: str | None = "chat") -> None:
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], alwaysNegotiateDataChannels=label is None)
        )
        self.channel = self.pc.createDataChannel(label) if label is not None else None
        self.received: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.remote_channels: asyncio.Queue[RTCDataChannel] = asyncio.Queue()
        self.pc.on("datachannel", self.remote_channels.put_nowait)
        if self.channel is not None:
            self.channel.on("message", self.received.put_nowait)

    async def negotiate(self, rpc: Rpc, endpoint: str) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await rpc.invoke(endpoint, "processOffer", offer=self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await rpc.invoke(endpoint, "gatherCandidates")
        for line in self.pc.localDescription.sdp.splitlines():
            if line.startswith("a=candidate:"):
                candidate = {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
                await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)
        return answer

    async def wait_open(self, channel: RTCDataChannel | None = None) -> RTCDataChannel:
        channel = channel or self.channel
        assert channel is not None
        async with asyncio.timeout(15):
            while channel.readyState != "open":
                await asyncio.sleep(0.05)
        return channel

    async def next_message(self, timeout: float = 10) -> str | bytes:
        return await asyncio.wait_for(self.received.get(), timeout)


async def endpoint(rpc: Rpc, pipeline: str, **ctor: object) -> str:
    ep = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline, **ctor)
    for event in ("DataChannelOpened", "DataChannelClosed"):
        await rpc.subscribe(ep, event)
    return ep


async def test_without_use_data_channels_the_application_mline_is_rejected(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    ep = await endpoint(rpc, pipeline)
    await rpc.invoke(ep, "connect", sink=ep)
    peer = Peer(send=True, receive=True)
    peer.pc.createDataChannel("chat")
    try:
        await peer.negotiate(rpc, ep)
        answer = peer.pc.remoteDescription.sdp
        sections = answer.split("m=")[1:]
        assert [s.split(" ")[0] for s in sections] == ["audio", "video", "application"]
        application = sections[2]
        assert application.startswith("application 0 UDP/DTLS/SCTP webrtc-datachannel")
        assert "a=mid:2" in application
        assert "a=group:BUNDLE 0 1\r\n" in answer
        await peer.wait_video(10)  # audio and video still connect, echoed
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(ep, "createDataChannel", label="x")
        assert refused.value.code == 40111
        stats = await rpc.invoke(ep, "getStats")
        assert not [s for s in stats.values() if s["type"] in ("datachannel", "session")]
    finally:
        await peer.close()
        await rpc.request("release", object=pipeline)


async def test_endpoint_connected_to_itself_echoes_text_and_binary(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    ep = await endpoint(rpc, pipeline, useDataChannels=True)
    await rpc.invoke(ep, "connect", sink=ep, mediaType="DATA")
    peer = DataPeer()
    try:
        answer = await peer.negotiate(rpc, ep)
        application = re.search(r"m=application (\d+) UDP/DTLS/SCTP webrtc-datachannel", answer)
        assert application is not None and application[1] != "0"
        channel = await peer.wait_open()
        opened = await rpc.next_event("DataChannelOpened", ep)
        assert opened["data"]["channelId"] == channel.id
        channel.send("hello")
        assert await peer.next_message() == "hello"
        channel.send(b"\x00\x01binary")
        assert await peer.next_message() == b"\x00\x01binary"
        channel.send("")
        assert await peer.next_message() == ""
        stats = await rpc.invoke(ep, "getStats", mediaType="DATA")
        (session,) = [s for s in stats.values() if s["type"] == "session"]
        assert session["__type__"] == "RTCPeerConnectionStats"
        assert session["dataChannelsOpened"] == 1 and session["dataChannelsClosed"] == 0
        (entry,) = [s for s in stats.values() if s["type"] == "datachannel"]
        assert entry["label"] == "chat" and entry["datachannelid"] == channel.id
        assert entry["state"] == "open" and entry["messagesReceived"] == 3
        assert entry["messagesSent"] == 3 and entry["bytesSent"] == len("hello") + 8
        # Without the DATA link nothing comes back.
        await rpc.invoke(ep, "disconnect", sink=ep, mediaType="DATA")
        channel.send("lost")
        with pytest.raises(TimeoutError):
            await peer.next_message(timeout=1)
    finally:
        await peer.pc.close()
        await rpc.request("release", object=pipeline)


async def test_server_opens_and_closes_a_channel(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    ep = await endpoint(rpc, pipeline, useDataChannels=True)
    with pytest.raises(RpcError) as refused:  # nothing negotiated yet
        await rpc.invoke(ep, "createDataChannel")
    assert refused.value.code == 40111
    peer = DataPeer(label=None)
    try:
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        offer = peer.pc.localDescription.sdp
        answer = await rpc.invoke(ep, "processOffer", offer=offer)
        # Before SCTP is up the channel waits for it, as in KMS.
        await rpc.invoke(ep, "createDataChannel", label="server", protocol="proto-1")
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await rpc.invoke(ep, "gatherCandidates")
        for line in offer.splitlines():
            if line.startswith("a=candidate:"):
                candidate = {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
                await rpc.invoke(ep, "addIceCandidate", candidate=candidate)
        channel = await asyncio.wait_for(peer.remote_channels.get(), 15)
        assert (channel.label, channel.protocol) == ("server", "proto-1")
        opened = await rpc.next_event("DataChannelOpened", ep)
        assert opened["data"]["channelId"] == channel.id
        # KMS wires one channel at a time: a second one opens and is closed at once, unannounced.
        await rpc.invoke(ep, "createDataChannel", label="second")
        second = await asyncio.wait_for(peer.remote_channels.get(), 15)
        async with asyncio.timeout(10):
            while second.readyState != "closed":
                await asyncio.sleep(0.05)
        assert channel.readyState == "open"
        closed = asyncio.Event()
        channel.on("close", closed.set)
        await rpc.invoke(ep, "closeDataChannel", channelId=channel.id)
        event = await rpc.next_event("DataChannelClosed", ep)
        assert event["data"]["channelId"] == channel.id
        await asyncio.wait_for(closed.wait(), 10)
        assert not [e for e in _drain(rpc) if e["type"] == "DataChannelOpened"]
        stats = await rpc.invoke(ep, "getStats")
        (session,) = [s for s in stats.values() if s["type"] == "session"]
        assert (session["dataChannelsOpened"], session["dataChannelsClosed"]) == (2, 2)
        # Closing a channel that is gone is no error (KMS logs it only).
        assert await rpc.invoke(ep, "closeDataChannel", channelId=channel.id) is None
    finally:
        await peer.pc.close()
        await rpc.request("release", object=pipeline)


def _drain(rpc: Rpc) -> list[dict]:
    events = []
    while not rpc.events.empty():
        events.append(rpc.events.get_nowait())
    return events


async def test_two_peers_talk_through_two_endpoints_not_through_a_passthrough(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    ep_a = await endpoint(rpc, pipeline, useDataChannels=True)
    ep_b = await endpoint(rpc, pipeline, useDataChannels=True)
    await rpc.invoke(ep_a, "connect", sink=ep_b, mediaType="DATA")
    await rpc.invoke(ep_b, "connect", sink=ep_a)  # all media types, DATA among them
    alice, bob = DataPeer("a"), DataPeer("b")
    try:
        await alice.negotiate(rpc, ep_a)
        await bob.negotiate(rpc, ep_b)
        await alice.wait_open()
        await bob.wait_open()
        await rpc.next_event("DataChannelOpened", ep_a)
        await rpc.next_event("DataChannelOpened", ep_b)
        alice.channel.send("hi bob")  # type: ignore[union-attr]
        assert await bob.next_message() == "hi bob"
        bob.channel.send(b"hi alice")  # type: ignore[union-attr]
        assert await alice.next_message() == b"hi alice"
        # KMS's PassThrough links audio and video only: data sent through one goes nowhere.
        passthrough = await rpc.create("PassThrough", mediaPipeline=pipeline)
        await rpc.invoke(ep_a, "connect", sink=passthrough, mediaType="DATA")
        await rpc.invoke(passthrough, "connect", sink=ep_b, mediaType="DATA")
        alice.channel.send("via passthrough")  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            await bob.next_message(timeout=1)
    finally:
        await alice.pc.close()
        await bob.pc.close()
        await rpc.request("release", object=pipeline)


async def test_bad_parameters_get_clear_errors(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    for ctor, fragment in (
        ({"qosDscp": "BOGUS"}, "DSCPValue"),
        ({"qosDscp": 46}, "qosDscp"),
        ({"certificateKeyType": "DSA"}, "CertificateKeyType"),
        ({"useDataChannels": "yes"}, "useDataChannels"),
    ):
        with pytest.raises(RpcError) as refused:
            await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline, **ctor)
        assert refused.value.code == 40001 and fragment in refused.value.message, ctor
    ep = await endpoint(
        rpc, pipeline, useDataChannels=True, qosDscp="EF", certificateKeyType="ECDSA"
    )
    await rpc.invoke(ep, "connect", sink=ep)
    peer = DataPeer()
    try:
        await peer.negotiate(rpc, ep)
        channel = await peer.wait_open()
        await rpc.next_event("DataChannelOpened", ep)
        for params, code in (
            ({"channelId": "one"}, 40001),
            ({"channelId": -1}, 40107),
            ({"channelId": 70000}, 40107),
            ({}, 40001),
        ):
            with pytest.raises(RpcError) as refused:
                await rpc.invoke(ep, "closeDataChannel", **params)
            assert refused.value.code == code, params
        assert await rpc.invoke(ep, "closeDataChannel", channelId=999) is None
        for params, code in (
            ({"maxPacketLifeTime": 100, "maxRetransmits": 2}, 40107),
            ({"label": 5}, 40001),
            ({"ordered": "yes"}, 40001),
            ({"label": "x" * (MAX_DATA_CHANNEL_LABEL + 1)}, -32602),  # too large
        ):
            with pytest.raises(RpcError) as refused:
                await rpc.invoke(ep, "createDataChannel", **params)
            assert refused.value.code == code, params
        # The session and the channel keep working.
        channel.send("still here")
        assert await peer.next_message() == "still here"
        kmd = json.loads(await rpc.invoke("manager_ServerManager", "getKmd", moduleName="elements"))
        (webrtc,) = [c for c in kmd["remoteClasses"] if c["name"] == "WebRtcEndpoint"]
        params = {p["name"]: p["type"] for p in webrtc["constructor"]["params"]}
        assert params["useDataChannels"] == "boolean"
        assert params["certificateKeyType"] == "CertificateKeyType"
        assert params["qosDscp"] == "DSCPValue"
        enums = {t["name"]: t.get("values") for t in kmd["complexTypes"]}
        assert enums["CertificateKeyType"] == ["RSA", "ECDSA"]
        assert "AF41" in enums["DSCPValue"] and "NO_VALUE" in enums["DSCPValue"]
    finally:
        await peer.pc.close()
        await rpc.request("release", object=pipeline)


async def test_release_closes_the_channels(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    ep = await endpoint(rpc, pipeline, useDataChannels=True)
    await rpc.invoke(ep, "connect", sink=ep)
    peer = DataPeer()
    try:
        await peer.negotiate(rpc, ep)
        channel = await peer.wait_open()
        channel.send("ping")
        assert await peer.next_message() == "ping"
        await rpc.request("release", object=ep)
        async with asyncio.timeout(10):
            while channel.readyState != "closed":
                await asyncio.sleep(0.05)
        with pytest.raises(RpcError) as gone:
            await rpc.invoke(ep, "closeDataChannel", channelId=channel.id)
        assert gone.value.code == 40101
    finally:
        await peer.pc.close()
        await rpc.request("release", object=pipeline)


PAGE = """<!doctype html><title>data channel echo</title>
<script type="module">
const ws = new WebSocket(MEDIA_SERVER_URL);
const waiting = new Map();
const listeners = [];
let nextId = 1;
const opened = new Promise((resolve) => ws.addEventListener("open", resolve));
ws.addEventListener("message", ({data}) => {
  const message = JSON.parse(data);
  if (message.method === "onEvent") listeners.forEach((listener) => listener(message.params.value));
  else waiting.get(message.id)?.(message);
});
async function rpc(method, params = {}) {
  await opened;
  const id = nextId++;
  const reply = new Promise((resolve) => waiting.set(id, resolve));
  ws.send(JSON.stringify({jsonrpc: "2.0", id, method, params}));
  const message = await reply;
  if (message.error) throw new Error(`${method}: ${message.error.message}`);
  return message.result?.value;
}
window.echo = async (text) => {
  const pipeline = await rpc("create", {type: "MediaPipeline"});
  const endpoint = await rpc("create", {type: "WebRtcEndpoint",
    constructorParams: {mediaPipeline: pipeline, useDataChannels: true}});
  await rpc("invoke", {object: endpoint, operation: "connect", operationParams: {sink: endpoint}});
  const pc = new RTCPeerConnection();
  const channel = pc.createDataChannel("chat");
  const echoed = new Promise((resolve) => { channel.onmessage = ({data}) => resolve(data); });
  const ready = new Promise((resolve) => { channel.onopen = resolve; });
  listeners.push(({object, type, data}) => {
    if (object === endpoint && type === "IceCandidateFound") pc.addIceCandidate(data.candidate);
  });
  await rpc("subscribe", {object: endpoint, type: "IceCandidateFound"});
  pc.onicecandidate = ({candidate}) => {
    if (candidate) rpc("invoke", {object: endpoint, operation: "addIceCandidate",
      operationParams: {candidate: candidate.toJSON()}});
  };
  await pc.setLocalDescription();
  const answer = await rpc("invoke", {object: endpoint, operation: "processOffer",
    operationParams: {offer: pc.localDescription.sdp}});
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  await rpc("invoke", {object: endpoint, operation: "gatherCandidates"});
  await ready;
  channel.send(text);
  const reply = await Promise.race([echoed,
    new Promise((resolve) => setTimeout(() => resolve("(nothing in 10 s)"), 10000))]);
  pc.close();
  await rpc("release", {object: pipeline});
  return reply;
};
</script>"""


@pytest.fixture
def echo_page(media_server_process: str) -> Iterator[str]:  # noqa: F811 (the imported fixture)
    with served_page(PAGE, media_server_process, "echo") as url:
        yield url


def test_chromium_data_channel_echo(chromium, echo_page: str) -> None:
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(echo_page)
        started = time.monotonic()
        text = f"hello from chromium {started}"
        assert page.evaluate("(text) => window.echo(text)", text) == text
        assert errors == []
    finally:
        context.close()
