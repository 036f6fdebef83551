"""RtpEndpoint with a plain RTP peer made here (PyAV's VP8 encoder and decoder, aiortc's packetizer,
depayloader and jitter buffer, UDP sockets on 127.0.0.1): media from the peer reaches an aiortc
WebRTC viewer, media from an aiortc WebRTC publisher reaches the peer, keyframe requests travel
both ways, SRTP with SDES keys works both ways, and bad SDP and bad keys are refused with KMS's
codes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from fractions import Fraction

import av
import numpy
import pylibsrtp
import pytest
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
)

from mediaserver.server import MediaServer

from .peers import Peer
from .rpc import Rpc, RpcError

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=101)
KEY = bytes(range(30))  # the test peer's SRTP master key and salt
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


class RtpPeer:
    """A plain RTP peer: RTP on an even port, RTCP on the next; sends VP8 pictures (a keyframe
    when asked by PLI) and decodes the VP8 it gets; SRTP with `KEY` when `secure`."""

    def __init__(self, rtp: _Queue, rtcp: _Queue, secure: bool) -> None:
        self.rtp, self.rtcp = rtp, rtcp
        self.secure = secure
        self.remote_key: bytes | None = None
        self.server_rtp_port = 0
        self.server_rtcp_port = 0
        self.plis_received = 0
        self.frames_decoded = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._keyframe = True
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
            )
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, secure: bool = False) -> AsyncIterator[RtpPeer]:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            rtp_transport, rtp = await loop.create_datagram_endpoint(
                _Queue, local_addr=("127.0.0.1", 0)
            )
            port = rtp_transport.get_extra_info("sockname")[1]
            if port % 2 == 0:
                try:
                    rtcp_transport, rtcp = await loop.create_datagram_endpoint(
                        _Queue, local_addr=("127.0.0.1", port + 1)
                    )
                    break
                except OSError:
                    pass
            rtp_transport.close()
        peer = cls(rtp, rtcp, secure)
        try:
            yield peer
        finally:
            for task in peer._tasks:
                task.cancel()
            await asyncio.gather(*peer._tasks, return_exceptions=True)
            rtp_transport.close()
            rtcp_transport.close()

    @property
    def port(self) -> int:
        assert self.rtp.transport is not None
        return self.rtp.transport.get_extra_info("sockname")[1]

    def sdp(self, direction: str, *, video_pt: int = 101, audio: bool = True) -> str:
        """An offer or answer as a plain RTP device writes it."""
        profile = "RTP/SAVP" if self.secure else "RTP/AVP"
        crypto = (
            [f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(KEY).decode()}"]
            if self.secure
            else []
        )
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=test", "c=IN IP4 127.0.0.1", "t=0 0"]
        if audio:
            lines += [f"m=audio {self.port + 2} {profile} 0", "a=rtpmap:0 PCMU/8000", *crypto]
            lines += ["a=inactive"]
        lines += [f"m=video {self.port} {profile} {video_pt}", f"a=rtpmap:{video_pt} VP8/90000"]
        lines += [*crypto, f"a={direction}"]
        return "\r\n".join(lines) + "\r\n"

    def learn(self, server_sdp: str) -> None:
        """The server's video ports (and key) from its SDP."""
        video = server_sdp.split("m=video ", 1)[1]
        self.server_rtp_port = int(video.split()[0])
        self.server_rtcp_port = int(re.search(r"a=rtcp:(\d+)", video)[1])  # type: ignore[index]
        if self.secure:
            key = re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:(\S+)", video)
            assert key is not None, server_sdp
            self.remote_key = base64.b64decode(key[1])

    def start(self, *, send: bool) -> None:
        self._tasks.append(asyncio.create_task(self._receive()))
        self._tasks.append(asyncio.create_task(self._receive_rtcp()))
        if send:
            self._tasks.append(asyncio.create_task(self._send()))

    def _rx(self) -> pylibsrtp.Session | None:
        if not self.secure:
            return None
        assert self.remote_key is not None
        return pylibsrtp.Session(
            pylibsrtp.Policy(
                key=self.remote_key,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=PROFILE,
            )
        )

    async def _send(self) -> None:
        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
        encoder.time_base = Fraction(1, 30)
        encoder.bit_rate = 500_000
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        packetizer = get_encoder(VP8)
        sequence = 1000
        for index in range(100_000):
            image = numpy.full((240, 320, 3), (90, 110, 130), numpy.uint8)
            image[:, (index * 6) % 320 :][:, :12] = 255
            picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            picture.pts = index
            picture.time_base = Fraction(1, 30)
            if self._keyframe:
                self._keyframe = False
                picture.pict_type = av.video.frame.PictureType.I
            for packet in encoder.encode(picture):
                payloads, timestamp = packetizer.pack(packet)  # type: ignore[attr-defined]
                for i, payload in enumerate(payloads):
                    rtp = RtpPacket(
                        payload_type=VP8.payloadType,
                        marker=int(i == len(payloads) - 1),
                        sequence_number=sequence & 0xFFFF,
                        timestamp=timestamp,
                        ssrc=4242,
                        payload=payload,
                    )
                    sequence += 1
                    data = rtp.serialize()
                    if self.secure:
                        data = self._tx.protect(data)
                    assert self.rtp.transport is not None
                    self.rtp.transport.sendto(data, ("127.0.0.1", self.server_rtp_port))
            await asyncio.sleep(1 / 30)

    async def _receive(self) -> None:
        rx = self._rx()
        jitter = JitterBuffer(capacity=512, is_video=True)
        decoder = get_decoder(VP8)
        while True:
            data = await self.rtp.received.get()
            if rx is not None:
                data = rx.unprotect(data)
            packet = RtpPacket.parse(data)
            packet._data = depayload(VP8, packet.payload)  # type: ignore[attr-defined]
            _, frame = jitter.add(packet)
            if frame is not None:
                self.frames_decoded += len(decoder.decode(frame))

    async def _receive_rtcp(self) -> None:
        rx = self._rx()
        while True:
            data = await self.rtcp.received.get()
            if rx is not None:
                data = rx.unprotect_rtcp(data)
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                    self.plis_received += 1
                    self._keyframe = True

    def send_pli(self, media_ssrc: int) -> None:
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=7, media_ssrc=media_ssrc))
        if self.secure:
            pli = self._tx.protect_rtcp(pli)
        assert self.rtcp.transport is not None
        self.rtcp.transport.sendto(pli, ("127.0.0.1", self.server_rtcp_port))


async def _until(condition, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_rtp_peer_to_webrtc_viewer(rpc: Rpc, media_server: MediaServer) -> None:
    pipeline = await rpc.create("MediaPipeline")
    rtp = await rpc.create("RtpEndpoint", mediaPipeline=pipeline)
    viewer_ep = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    for event in ("MediaStateChanged", "ConnectionStateChanged", "MediaFlowOutStateChanged"):
        await rpc.subscribe(rtp, event)
    await rpc.invoke(rtp, "connect", sink=viewer_ep)
    viewer = Peer(send=False, receive=True)
    async with RtpPeer.open() as peer:
        try:
            answer = await rpc.invoke(rtp, "processOffer", offer=peer.sdp("sendonly"))
            assert "m=video " in answer and "RTP/AVP 101" in answer, answer
            assert "a=recvonly" in answer and "a=rtcp:" in answer
            assert "c=IN IP4 127.0.0.1" in answer
            assert await rpc.invoke(rtp, "getRemoteSessionDescriptor") == peer.sdp("sendonly")
            peer.learn(answer)
            connected = await rpc.next_event("ConnectionStateChanged", rtp)
            assert connected["data"]["newState"] == "CONNECTED"
            await viewer.negotiate(rpc, viewer_ep)
            peer.start(send=True)
            await viewer.wait_video(20)
            assert viewer.received.non_black_frames > 0
            flow = await rpc.next_event("MediaFlowOutStateChanged", rtp)
            assert flow["data"]["state"] == "FLOWING"
            state = await rpc.next_event("MediaStateChanged", rtp)
            assert state["data"]["newState"] == "CONNECTED"
            assert await rpc.invoke(rtp, "getMediaState") == "CONNECTED"
            # A keyframe request (a sink's, or the client's) goes to the peer as a PLI.
            await rpc.invoke(rtp, "requestKeyframe")
            await _until(lambda: peer.plis_received > 0)
        finally:
            await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_webrtc_publisher_to_rtp_peer(rpc: Rpc, media_server: MediaServer) -> None:
    pipeline = await rpc.create("MediaPipeline")
    publisher_ep = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    rtp = await rpc.create("RtpEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(publisher_ep, "connect", sink=rtp)
    publisher = Peer(send=True, receive=False)
    async with RtpPeer.open() as peer:
        try:
            offer = await rpc.invoke(rtp, "generateOffer")
            assert "m=audio " in offer and "m=video " in offer, offer
            assert "RTP/AVPF" in offer and "VP8/90000" in offer and "opus/48000/2" in offer
            assert await rpc.invoke(rtp, "getLocalSessionDescriptor") == offer
            peer.learn(offer)
            answer = peer.sdp("recvonly")
            await rpc.invoke(rtp, "processAnswer", answer=answer)
            with pytest.raises(RpcError) as again:
                await rpc.invoke(rtp, "processAnswer", answer=answer)
            assert again.value.code == 40210
            peer.start(send=False)
            await publisher.negotiate(rpc, publisher_ep)
            await _until(lambda: peer.frames_decoded >= 15, timeout=20)
            # A PLI from the peer reaches the WebRTC publisher as a keyframe request.
            await asyncio.sleep(1.1)  # past the hub's one-request-a-second limit
            received = await rpc.invoke(publisher_ep, "getStats", mediaType="VIDEO")
            before = _pli_sent(received)
            ssrc = int(re.search(r"a=ssrc:(\d+)", offer.split("m=video", 1)[1])[1])  # type: ignore[index]
            peer.send_pli(ssrc)
            for _ in range(60):
                after = _pli_sent(await rpc.invoke(publisher_ep, "getStats", mediaType="VIDEO"))
                if after > before:
                    break
                await asyncio.sleep(0.05)
            assert after > before
        finally:
            await publisher.close()
    await rpc.request("release", object=pipeline)


def _pli_sent(stats: dict) -> int:
    return sum(s.get("pliCount", 0) for s in stats.values() if s.get("type") == "inboundrtp")


async def test_srtp_both_ways_with_sdes_keys(rpc: Rpc, media_server: MediaServer) -> None:
    """A looped-back RtpEndpoint with a key of its own: what the peer sends encrypted with its
    key comes back encrypted with the endpoint's, and decodes."""
    pipeline = await rpc.create("MediaPipeline")
    server_key = bytes(range(100, 130))
    rtp = await rpc.create(
        "RtpEndpoint",
        mediaPipeline=pipeline,
        crypto={
            "__module__": "kurento",
            "__type__": "SDES",
            "crypto": "AES_128_CM_HMAC_SHA1_80",
            "keyBase64": base64.b64encode(server_key).decode(),
        },
    )
    await rpc.invoke(rtp, "connect", sink=rtp)
    async with RtpPeer.open(secure=True) as peer:
        answer = await rpc.invoke(rtp, "processOffer", offer=peer.sdp("sendrecv"))
        assert "RTP/SAVP 101" in answer, answer
        peer.learn(answer)
        assert peer.remote_key == server_key
        peer.start(send=True)
        await _until(lambda: peer.frames_decoded >= 15, timeout=20)
    await rpc.request("release", object=pipeline)


async def test_plain_offer_to_an_srtp_endpoint_is_rejected_per_media(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    rtp = await rpc.create(
        "RtpEndpoint", mediaPipeline=pipeline, crypto={"crypto": "AES_128_CM_HMAC_SHA1_32"}
    )
    async with RtpPeer.open() as peer:
        answer = await rpc.invoke(rtp, "processOffer", offer=peer.sdp("sendrecv"))
    assert "m=video 0 RTP/AVP 101" in answer and "m=audio 0 RTP/AVP 0" in answer
    offer_side = await rpc.create(
        "RtpEndpoint", mediaPipeline=pipeline, crypto={"crypto": "AES_128_CM_HMAC_SHA1_32"}
    )
    offer = await rpc.invoke(offer_side, "generateOffer")
    assert offer.count("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:") == 2, offer
    assert "RTP/SAVPF" in offer
    await rpc.request("release", object=pipeline)


async def test_kurento_suite_offer_gets_an_h264_answer(rpc: Rpc) -> None:
    """The offer of Kurento's own RtpEndpoint tests: H.264 among codecs this server lacks."""
    offer = (
        "v=0\r\no=- 12345 12345 IN IP4 95.125.31.136\r\ns=-\r\nc=IN IP4 95.125.31.136\r\n"
        "t=0 0\r\nm=video 52126 RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\n"
        "a=rtpmap:97 MP4V-ES/90000\r\na=rtpmap:98 H263-1998/90000\r\na=recvonly\r\n"
        "b=AS:384\r\n"
    )
    pipeline = await rpc.create("MediaPipeline")
    rtp = await rpc.create("kurento.RtpEndpoint", mediaPipeline=pipeline)
    answer = await rpc.invoke(rtp, "processOffer", offer=offer)
    video = answer.split("m=video ", 1)[1]
    assert video.split()[0] != "0" and "RTP/AVP 96" in video
    assert "a=rtpmap:96 H264/90000" in video and "MP4V" not in video
    assert "a=sendonly" in video
    await rpc.request("release", object=pipeline)


@pytest.mark.parametrize(
    ("crypto", "code"),
    [
        ({"crypto": "AES_128_CM_HMAC_SHA1_80", "key": "too short"}, 40107),
        ({"crypto": "AES_128_CM_HMAC_SHA1_80", "keyBase64": "not base64!"}, 40107),
        ({"crypto": "AES_128_CM_HMAC_SHA1_80", "keyBase64": base64.b64encode(b"x" * 46)}, 40107),
        ({"crypto": "AES_256_CM_HMAC_SHA1_80"}, 40107),
        ({"crypto": "ROT13"}, 40001),
        ("AES_128_CM_HMAC_SHA1_80", 40001),
    ],
)
async def test_bad_crypto_is_refused(rpc: Rpc, crypto: object, code: int) -> None:
    if isinstance(crypto, dict) and isinstance(crypto.get("keyBase64"), bytes):
        crypto = {**crypto, "keyBase64": crypto["keyBase64"].decode()}
    pipeline = await rpc.create("MediaPipeline")
    with pytest.raises(RpcError) as refused:
        await rpc.create("RtpEndpoint", mediaPipeline=pipeline, crypto=crypto)
    assert refused.value.code == code
    await rpc.request("release", object=pipeline)


async def test_bad_sdp_and_wrong_order_are_refused(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    rtp = await rpc.create("RtpEndpoint", mediaPipeline=pipeline)
    for bad in ("", "this is not SDP", "v=0\r\n"):
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(rtp, "processOffer", offer=bad)
        assert refused.value.code == 40201
    with pytest.raises(RpcError) as refused:
        await rpc.invoke(rtp, "processAnswer", answer="v=0\r\n")
    assert refused.value.code == 40209
    with pytest.raises(RpcError) as refused:
        await rpc.invoke(rtp, "getLocalSessionDescriptor")
    assert refused.value.code == 40202
    async with RtpPeer.open() as peer:
        await rpc.invoke(rtp, "processOffer", offer=peer.sdp("sendrecv"))
        with pytest.raises(RpcError) as refused:
            await rpc.invoke(rtp, "processOffer", offer=peer.sdp("sendrecv"))
        assert refused.value.code == 40208
    ipv6 = await rpc.create("RtpEndpoint", mediaPipeline=pipeline, useIpv6=True)
    with pytest.raises(RpcError) as refused:
        await rpc.invoke(ipv6, "generateOffer")
    assert refused.value.code == 40204
    await rpc.request("release", object=pipeline)


async def test_kmd_describes_rtp_endpoint(rpc: Rpc) -> None:
    import json

    kmd = json.loads(await rpc.invoke("manager_ServerManager", "getKmd", moduleName="elements"))
    classes = {c["name"]: c for c in kmd["remoteClasses"]}
    params = [p["name"] for p in classes["RtpEndpoint"]["constructor"]["params"]]
    assert params == ["mediaPipeline", "crypto", "useIpv6"]
    assert classes["RtpEndpoint"]["events"] == ["OnKeySoftLimit"]
    types = {t["name"] for t in kmd["complexTypes"]}
    assert {"SDES", "CryptoSuite"} <= types
    assert "OnKeySoftLimit" in {e["name"] for e in kmd["events"]}
