"""The per-subscriber send path (mediaserver/rtp_send.py): packets written once per subscriber
from shared payloads must be what aiortc's own sender would have sent, and a viewer must get
sender reports, retransmissions and its own negotiated payload types and extension ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpSrPacket,
    RtpPacket,
    wrap_rtx,
)

from mediaserver.forwarding import ForwardingSender
from mediaserver.rtp_send import RtpFrame, RtpWriter
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint

from .peers import Peer
from .rpc import Rpc
from .test_forwarding import publish

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


# -- the writer against aiortc's serializer -------------------------------------------------------


class _Wire:
    """Stands for the DTLS transport, its SRTP session (no encryption) and the ICE pair."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        pair = SimpleNamespace(
            protocol=SimpleNamespace(transport=SimpleNamespace(sendto=self._sendto)),
            remote_addr=("127.0.0.1", 9),
        )
        self.dtls = SimpleNamespace(
            _state=State.CONNECTED,
            _tx_srtp=SimpleNamespace(protect=lambda data: data),
            transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
        )

    def _sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append(data)


def _extensions_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    return extensions_map


def test_packets_are_what_aiortc_would_serialize() -> None:
    payloads = [b"\x90\x80\x01first", b"\x80\x80\x01second", b"\x80\x80\x01third"]
    frame = RtpFrame(payloads=payloads, timestamp=3000, octets=sum(map(len, payloads)))
    ntp_time = 0xE5A1_2345_6789_ABCD
    cases = {
        "none": {},
        "mid": {MID: 1},
        "mid and abs-send-time, one-byte header": {MID: 9, ABS_SEND_TIME: 14},
        "two-byte header (id above 14)": {MID: 4, ABS_SEND_TIME: 20},
    }
    for name, ids in cases.items():
        for rtx_payload_type in (None, 121):
            wire = _Wire()
            extensions_map = _extensions_map(ids)
            writer = RtpWriter(
                transport=wire.dtls,  # type: ignore[arg-type]
                ssrc=0x11223344,
                payload_type=120,
                rtx_ssrc=0x55667788,
                rtx_payload_type=rtx_payload_type,
                extensions_map=extensions_map,
                mid="1",
            )
            first = writer.sequence_number
            timestamp = writer.send(frame, ntp_time)
            assert timestamp == (writer.timestamp_origin + 3000) & 0xFFFFFFFF

            expected = []
            for index, payload in enumerate(payloads):
                packet = RtpPacket(
                    payload_type=120,
                    marker=int(index == len(payloads) - 1),
                    sequence_number=(first + index) & 0xFFFF,
                    timestamp=timestamp,
                    ssrc=0x11223344,
                    payload=payload,
                )
                packet.extensions.mid = "1"
                packet.extensions.abs_send_time = (ntp_time >> 14) & 0xFFFFFF
                expected.append(packet)
            assert wire.sent == [p.serialize(extensions_map) for p in expected], name

            # A NACK for the last packet: resent as RTX when negotiated, as aiortc would.
            assert writer.retransmit(expected[2].sequence_number)
            if rtx_payload_type is None:
                resent = expected[2].serialize(extensions_map)
            else:
                rtx = wrap_rtx(
                    expected[2],
                    payload_type=rtx_payload_type,
                    sequence_number=writer.rtx_sequence_number - 1,
                    ssrc=0x55667788,
                )
                resent = rtx.serialize(extensions_map)
            assert wire.sent[-1] == resent, name
            # A packet older than the history, or never sent, is not resent.
            assert not writer.retransmit((first + 200) & 0xFFFF)


# -- real peers through the server --------------------------------------------------------------


def renumber(sdp: str, payload_types: dict[int, int], extension_ids: dict[int, int]) -> str:
    """An SDP offer with other payload types and header extension ids, as another browser
    might number them."""

    def payload_type(match: re.Match[str]) -> str:
        value = int(match[2])
        return f"{match[1]}{payload_types.get(value, value)}"

    lines = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            head, formats = line.split(" ", 3)[:3], line.split(" ")[3:]
            line = " ".join(head + [str(payload_types.get(int(f), int(f))) for f in formats])
        line = re.sub(r"^(a=(?:rtpmap|rtcp-fb|fmtp):)(\d+)", payload_type, line)
        line = re.sub(r"(apt=)(\d+)", payload_type, line)
        line = re.sub(
            r"^(a=extmap:)(\d+)", lambda m: f"{m[1]}{extension_ids.get(int(m[2]), int(m[2]))}", line
        )
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def view_renumbered(
    rpc: Rpc, pipeline: str, source: str, payload_types: dict[int, int], ids: dict[int, int]
) -> tuple[str, Peer]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "connect", sink=endpoint)
    peer = Peer(send=False, receive=True)
    offer = renumber(await peer.offer(), payload_types, ids)
    await peer.accept(await rpc.invoke(endpoint, "processOffer", offer=offer))
    await rpc.invoke(endpoint, "gatherCandidates")
    for candidate in peer.candidates():
        await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)
    return endpoint, peer


RtpHandler = Callable[[bytes, int], Awaitable[None]]


def tap_rtp(peer: Peer, handle: Callable[[RtpPacket, bytes, RtpHandler, int], Awaitable[None]]):
    """Route every RTP packet the peer receives (decrypted) through `handle` first."""
    dtls: RTCDtlsTransport = peer.pc.getTransceivers()[0].receiver.transport
    original: RtpHandler = dtls._handle_rtp_data

    async def tapped(data: bytes, arrival_time_ms: int) -> None:
        packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
        await handle(packet, data, original, arrival_time_ms)

    dtls._handle_rtp_data = tapped  # type: ignore[method-assign]


def video_mid(peer: Peer) -> str:
    return next(str(t.mid) for t in peer.pc.getTransceivers() if t.kind == "video")


def server_sender(media_server: MediaServer, endpoint: str, kind: str) -> ForwardingSender:
    element = media_server.registry.objects[endpoint]
    assert isinstance(element, WebRtcEndpoint) and element.pc is not None
    sender = next(t.sender for t in element.pc.getTransceivers() if t.kind == kind)
    assert isinstance(sender, ForwardingSender) and sender.writer is not None
    return sender


async def test_viewers_get_their_own_payload_types_and_extension_ids(
    media_server: MediaServer, rpc: Rpc
) -> None:
    """aiortc numbers VP8 97 (RTX 98), Opus 96, mid 1 and abs-send-time 3; these viewers number
    them otherwise, one needing the two-byte extension header (an id above 14)."""
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    numbering = {
        "one-byte": ({97: 120, 98: 121, 96: 111}, {1: 9, 3: 14}),
        "two-byte": ({97: 100, 98: 101, 96: 109}, {1: 4, 3: 20}),
    }
    viewers = {
        name: await view_renumbered(rpc, pipeline, source, pts, ids)
        for name, (pts, ids) in numbering.items()
    }
    seen: dict[str, list[RtpPacket]] = {name: [] for name in viewers}
    for name, (_, peer) in viewers.items():

        async def record(packet, data, original, arrival, name=name) -> None:  # type: ignore[no-untyped-def]
            seen[name].append(packet)
            await original(data, arrival)

        tap_rtp(peer, record)
    try:
        for name, (endpoint, peer) in viewers.items():
            await peer.wait_video(30)
            assert peer.received.non_black_frames > 0 and peer.received.audio_frames > 0
            pts, ids = numbering[name]
            answer = peer.pc.remoteDescription.sdp
            assert f"a=extmap:{ids[3]} {ABS_SEND_TIME}" in answer
            assert f"a=rtpmap:{pts[97]} VP8/90000" in answer
            video = server_sender(media_server, endpoint, "video")
            audio = server_sender(media_server, endpoint, "audio")
            video_packets = [p for p in seen[name] if p.ssrc == video._ssrc]
            audio_packets = [p for p in seen[name] if p.ssrc == audio._ssrc]
            assert {p.payload_type for p in video_packets} == {pts[97]}, name
            assert {p.payload_type for p in audio_packets} == {pts[96]}, name
            # aiortc negotiates abs-send-time for video only; mid for both.
            assert all(p.extensions.abs_send_time is not None for p in video_packets), name
            assert {p.extensions.mid for p in video_packets} == {video_mid(peer)}, name
            assert all(p.extensions.mid is not None for p in audio_packets), name
    finally:
        for peer in [publisher] + [peer for _, peer in viewers.values()]:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_packets_lost_on_the_way_to_a_viewer_are_resent_as_rtx(
    media_server: MediaServer, rpc: Rpc
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    endpoint, viewer = await view_renumbered(rpc, pipeline, source, {97: 120, 98: 121}, {})
    counts = {"media": 0, "dropped": 0, "rtx": 0}
    lossy = False

    async def drop_some(packet, data, original, arrival) -> None:  # type: ignore[no-untyped-def]
        """Drop every 15th VP8 packet reaching the viewer; count the RTX packets."""
        if lossy and packet.payload_type == 120:
            counts["media"] += 1
            if counts["media"] % 15 == 0:
                counts["dropped"] += 1
                return
        if lossy and packet.payload_type == 121:
            counts["rtx"] += 1
        await original(data, arrival)

    tap_rtp(viewer, drop_some)
    try:
        await viewer.wait_video(10)
        video = server_sender(media_server, endpoint, "video")
        assert video.writer is not None and video.writer.rtx_payload_type == 121
        lossy = True
        start = viewer.received.video_frames
        await asyncio.sleep(3)
        assert counts["dropped"] >= 4
        # The viewer asked for every lost packet and the server resent it from its history as
        # RTX, so the viewer kept decoding at the publisher's rate.
        assert counts["rtx"] >= counts["dropped"] - 1
        assert viewer.received.video_frames - start >= 60
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_sender_reports_count_what_the_viewer_got(
    media_server: MediaServer, rpc: Rpc
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    received: dict[int, dict[int, int]] = {}  # ssrc -> sequence number -> payload octets
    reports: list[tuple[float, RtcpSrPacket]] = []

    async def count(packet, data, original, arrival) -> None:  # type: ignore[no-untyped-def]
        received.setdefault(packet.ssrc, {})[packet.sequence_number] = len(packet.payload)
        await original(data, arrival)

    # Negotiated by hand so that the tap is in place before the connection can come up: under
    # load the viewer connects, and media starts, while view() is still trickling candidates.
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "connect", sink=endpoint)
    viewer = Peer(send=False, receive=True)
    await viewer.accept(await rpc.invoke(endpoint, "processOffer", offer=await viewer.offer()))
    tap_rtp(viewer, count)
    await rpc.invoke(endpoint, "gatherCandidates")
    for candidate in viewer.candidates():
        await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)
    dtls: RTCDtlsTransport = viewer.pc.getTransceivers()[0].receiver.transport
    handle_rtcp = dtls._handle_rtcp_data

    async def collect(data: bytes) -> None:
        loop = asyncio.get_running_loop()
        reports.extend(
            (loop.time(), p) for p in RtcpPacket.parse(data) if isinstance(p, RtcpSrPacket)
        )
        await handle_rtcp(data)

    dtls._handle_rtcp_data = collect  # type: ignore[method-assign]
    try:
        await viewer.wait_video(10)
        video = server_sender(media_server, endpoint, "video")
        audio = server_sender(media_server, endpoint, "audio")
        async with asyncio.timeout(10):  # two reports while media flows
            while len(flowing := [p for _, p in reports if p.ssrc == video._ssrc]) < 2:
                await asyncio.sleep(0.1)
        # Stop the media; the reports that follow carry the final counts.
        await publisher.close()
        await asyncio.sleep(0.5)
        after = len(reports)
        async with asyncio.timeout(10):
            while not {video._ssrc, audio._ssrc} <= {p.ssrc for _, p in reports[after:]}:
                await asyncio.sleep(0.1)

        for sender in (video, audio):
            final = [p for _, p in reports[after:] if p.ssrc == sender._ssrc][-1].sender_info
            got = received[sender._ssrc]
            assert final.packet_count == len(got) > 0
            assert final.octet_count == sum(got.values())

        # RTP and NTP timestamps advance together: what receivers use to sync audio and video.
        assert len(flowing) >= 2
        first, last = flowing[0].sender_info, flowing[-1].sender_info
        ntp_seconds = (last.ntp_timestamp - first.ntp_timestamp) / 2**32
        rtp_seconds = ((last.rtp_timestamp - first.rtp_timestamp) & 0xFFFFFFFF) / 90000
        assert ntp_seconds > 0.4
        assert abs(ntp_seconds - rtp_seconds) < 0.1
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_the_sending_srtp_session_keeps_a_smaller_replay_window(
    media_server: MediaServer, rpc: Rpc
) -> None:
    """The server's sending SRTP sessions have a 256-packet replay window (not aiortc's 1024,
    whose bit vector libsrtp shifts for every packet protected): a packet may be protected again
    (a retransmission without RTX) while it is within the last 256 of its stream, not after."""
    import pylibsrtp

    from mediaserver.forwarding import SEND_REPLAY_WINDOW

    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    viewer_id = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "connect", sink=viewer_id)
    viewer = Peer(send=False, receive=True)
    try:
        await viewer.negotiate(rpc, viewer_id)
        await viewer.wait_video(5)
        endpoint = media_server.registry.objects[viewer_id]
        assert isinstance(endpoint, WebRtcEndpoint) and endpoint.pc is not None
        srtp = endpoint.pc.getTransceivers()[0].sender.transport._tx_srtp

        def packet(sequence_number: int) -> bytes:  # a stream of its own (SSRC 0x0BADCAFE)
            return bytes(
                RtpPacket(
                    payload_type=96, sequence_number=sequence_number, ssrc=0x0BADCAFE
                ).serialize()
            ) + bytes(100)

        for sequence_number in range(1000, 1000 + SEND_REPLAY_WINDOW + 10):
            srtp.protect(packet(sequence_number))
        newest = 1000 + SEND_REPLAY_WINDOW + 9
        srtp.protect(packet(newest - 100))  # inside the window: protected again
        with pytest.raises(pylibsrtp.Error):
            srtp.protect(packet(1000))  # out of it
    finally:
        await viewer.close()
        await publisher.close()
        await rpc.request("release", object=pipeline)
