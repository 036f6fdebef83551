"""The forwarding plane with real WebRTC peers (aiortc) over loopback, driven from Python."""

from __future__ import annotations

import asyncio
import itertools
import threading

from aiortc import RTCRtpSender

from mediaserver.forwarding import ForwardingReceiver
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint

from .peers import Peer
from .rpc import Rpc


def decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder"))


def started_decoders(peers: list[Peer]) -> int:
    return sum(
        1
        for peer in peers
        for transceiver in peer.pc.getTransceivers()
        if transceiver.receiver._RTCRtpReceiver__decoder_thread is not None
    )


async def publish(rpc: Rpc, pipeline: str) -> tuple[str, Peer]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    peer = Peer(send=True, receive=False)
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


async def view(rpc: Rpc, pipeline: str, source: str | None = None) -> tuple[str, Peer]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    if source is not None:
        await rpc.invoke(source, "connect", sink=endpoint)
    peer = Peer(send=False, receive=True)
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


async def test_fan_out_forwards_without_decoding(media_server: MediaServer, rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    viewers = [await view(rpc, pipeline, source) for _ in range(3)]
    peers = [publisher] + [peer for _, peer in viewers]
    try:
        for _, peer in viewers:
            await peer.wait_video(45)
            assert peer.received.non_black_frames > 0 and peer.received.audio_frames > 0

        # Every decoder thread in this process belongs to a test peer; the server's endpoints
        # (one publishing, three viewing, each with audio and video receivers) run none.
        server_receivers = [
            t.receiver
            for obj in media_server.registry.objects.values()
            if isinstance(obj, WebRtcEndpoint) and obj.pc is not None
            for t in obj.pc.getTransceivers()
        ]
        assert len(server_receivers) == 8
        assert all(isinstance(r, ForwardingReceiver) and r.forwarding for r in server_receivers)
        assert decoder_threads() == started_decoders(peers) > 0

        stats = await rpc.invoke(source, "getStats", mediaType="VIDEO")
        inbound = [s for s in stats.values() if s["type"] == "inboundrtp"]
        assert inbound and inbound[0]["packetsReceived"] >= 45
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_loopback_and_passthrough_chain(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    passthrough = await rpc.create("PassThrough", mediaPipeline=pipeline)
    await rpc.invoke(endpoint, "connect", sink=passthrough)
    await rpc.invoke(passthrough, "connect", sink=endpoint)
    await rpc.subscribe(passthrough, "MediaFlowOutStateChanged")
    peer = Peer(send=True, receive=True)
    try:
        await peer.negotiate(rpc, endpoint)
        await peer.wait_video(30)
        assert peer.received.non_black_frames > 0
        event = await rpc.next_event("MediaFlowOutStateChanged", passthrough)
        assert event["data"]["state"] == "FLOWING"
        assert await rpc.invoke(passthrough, "isMediaFlowingIn", mediaType="VIDEO") is True
    finally:
        await peer.close()
    await rpc.request("release", object=pipeline)


async def test_disconnect_and_release_stop_forwarding(media_server: MediaServer, rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    sink, viewer = await view(rpc, pipeline, source)
    try:
        await viewer.wait_video(20)
        await rpc.subscribe(source, "ElementDisconnected")
        await rpc.invoke(source, "disconnect", sink=sink)
        await rpc.next_event("ElementDisconnected", source)
        await asyncio.sleep(0.3)
        frames = viewer.received.video_frames
        await asyncio.sleep(1.0)
        assert viewer.received.video_frames - frames <= 1
        assert await rpc.invoke(sink, "getSourceConnections") == []

        # Reconnecting resumes at a keyframe (the viewer decodes again).
        await rpc.invoke(source, "connect", sink=sink)
        await viewer.wait_video(frames + 15)

        endpoint = media_server.registry.objects[sink]
        assert isinstance(endpoint, WebRtcEndpoint) and endpoint.pc is not None
        pc = endpoint.pc
        await rpc.request("release", object=sink)
        assert pc.connectionState == "closed"
        assert endpoint.pads["video"].source is None
        source_element = media_server.registry.objects[source]
        assert source_element.hubs["video"].sinks == []
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_keyframe_requests_reach_the_publisher_rate_limited(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    viewers = [await view(rpc, pipeline, source) for _ in range(3)]
    requests: list[float] = []
    video_sender: RTCRtpSender = next(
        t.sender for t in publisher.pc.getTransceivers() if t.kind == "video"
    )
    original = video_sender._send_keyframe

    def counted() -> None:
        requests.append(asyncio.get_running_loop().time())
        original()

    video_sender._send_keyframe = counted
    try:
        for _, peer in viewers:
            await peer.wait_video(10)
        await asyncio.sleep(1.2)
        requests.clear()
        sent_at = asyncio.get_running_loop().time()
        # Each viewer reports picture loss (a real RTCP PLI from aiortc's receiver), twice.
        for _ in range(2):
            for _, peer in viewers:
                receiver = next(t.receiver for t in peer.pc.getTransceivers() if t.kind == "video")
                rtx = receiver._RTCRtpReceiver__rtx_ssrc
                ssrc = next(
                    s.source for s in receiver.getSynchronizationSources() if s.source not in rtx
                )
                await receiver._send_rtcp_pli(ssrc)
        await asyncio.sleep(2.5)
        # Six PLIs become at most one keyframe request a second upstream (viewers that lose
        # packets on this loaded machine may add their own), and none is lost: one goes out at
        # once or, when a request went out less than a second before, when that second ends.
        assert 1 <= len(requests) <= 3
        assert requests[0] - sent_at <= 1.1
        assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(requests))
        # requestKeyframe() asks the endpoint's own peer.
        await asyncio.sleep(1.1)
        before = len(requests)
        await rpc.invoke(source, "requestKeyframe")
        await asyncio.sleep(0.3)
        assert len(requests) >= before + 1
    finally:
        for peer in [publisher] + [p for _, p in viewers]:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_transcodes_only_for_a_sink_that_cannot_take_the_codec(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    await rpc.subscribe(source, "MediaTranscodingStateChanged")
    _, vp8_viewer = await view(rpc, pipeline, source)
    await vp8_viewer.wait_video(10)
    assert await rpc.invoke(source, "isMediaTranscoding", mediaType="VIDEO") is False

    h264_endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "connect", sink=h264_endpoint)
    h264_viewer = Peer(send=False, receive=True, video_codec="video/H264")
    try:
        await h264_viewer.negotiate(rpc, h264_endpoint)
        answer = await rpc.invoke(h264_endpoint, "getLocalSessionDescriptor")
        assert "H264/90000" in answer and "VP8/90000" not in answer
        event = await rpc.next_event("MediaTranscodingStateChanged", source)
        assert event["data"]["state"] == "TRANSCODING" and event["data"]["mediaType"] == "VIDEO"
        await h264_viewer.wait_video(20, timeout=30)
        assert h264_viewer.received.non_black_frames > 0
        assert await rpc.invoke(source, "isMediaTranscoding", mediaType="VIDEO") is True

        await rpc.request("release", object=h264_endpoint)
        event = await rpc.next_event("MediaTranscodingStateChanged", source)
        assert event["data"]["state"] == "NOT_TRANSCODING"
    finally:
        for peer in (publisher, vp8_viewer, h264_viewer):
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_lost_packets_are_recovered_by_nack_and_retransmission(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    _, viewer = await view(rpc, pipeline, source)
    video = next(t for t in publisher.pc.getTransceivers() if t.kind == "video")
    video_types = {c.payloadType for c in video._codecs if c.mimeType == "video/VP8"}
    transport = video.sender.transport
    send_rtp = transport._send_rtp
    sent = dropped = 0

    async def lossy(data: bytes) -> None:
        """Drop every 25th VP8 packet on its way to the server (RTCP and RTX pass)."""
        nonlocal sent, dropped
        if len(data) > 12 and not 192 <= data[1] <= 223 and data[1] & 0x7F in video_types:
            sent += 1
            if sent % 25 == 0:
                dropped += 1
                return
        await send_rtp(data)

    retransmitted: list[int] = []
    retransmit = video.sender._retransmit

    async def counted(sequence_number: int) -> None:
        retransmitted.append(sequence_number)
        await retransmit(sequence_number)

    video.sender._retransmit = counted
    try:
        await viewer.wait_video(10)
        transport._send_rtp = lossy
        start = viewer.received.video_frames
        await asyncio.sleep(3)
        assert dropped >= 5
        # The server's receiver asked for every lost packet and the publisher resent it, so the
        # viewer kept decoding at the publisher's rate.
        assert len(retransmitted) >= dropped - 1
        assert viewer.received.video_frames - start >= 60
        # getStats describes the media stream, not the retransmission stream beside it.
        stats = await rpc.invoke(source, "getStats", mediaType="VIDEO")
        inbound = [s for s in stats.values() if s["type"] == "inboundrtp"]
        assert [s["ssrc"] for s in inbound] == [str(video.sender._ssrc)]
        assert inbound[0]["packetsReceived"] > 150
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_rtcp_alone_tells_a_receiver_its_peer_is_there() -> None:
    """A publisher that sends only RTCP (every track muted: sender reports, no RTP) is still
    there, KMS's way: its receiver's last_heard_at moves with each RTCP packet. (It did not: a
    second _handle_rtcp_packet, added for sender reports, replaced the one that set it.)"""
    from types import SimpleNamespace

    from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

    receiver = ForwardingReceiver("video", SimpleNamespace(state="connected", _stats_id="t"))
    assert receiver.last_heard_at == 0.0
    report = RtcpSrPacket(
        ssrc=1234,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=1 << 32, rtp_timestamp=0, packet_count=0, octet_count=0
        ),
    )
    await receiver._handle_rtcp_packet(report)
    assert receiver.last_heard_at > 0
