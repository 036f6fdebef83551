"""The benchmark's native subscriber (bench/native_receiver.py) counts what aiortc would have
counted: once it has taken over a viewer's socket, every RTP packet the media server forwards is
decrypted with the viewer's own SRTP session and counted, frames by the marker bit, with no loss
on loopback; aiortc's own receivers get nothing more, and ICE and DTLS carry on (STUN and RTCP
still reach aiortc)."""

from __future__ import annotations

import asyncio

from bench.native_receiver import NativeReceiver
from mediaserver.server import MediaServer

from .rpc import Rpc
from .test_forwarding import publish, view


async def test_native_receiver_counts_every_forwarded_packet(
    media_server: MediaServer, rpc: Rpc
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    _, viewer = await view(rpc, pipeline, source)
    try:
        await viewer.wait_video(10)
        payload_types = {
            t.kind: next(
                pt
                for pt, codec in t.receiver._RTCRtpReceiver__codecs.items()  # type: ignore[attr-defined]
                if codec.name != "rtx"
            )
            for t in viewer.pc.getTransceivers()
        }
        native = NativeReceiver(viewer.pc, payload_types)
        assert native.attach()
        decoded = viewer.received.video_frames
        await asyncio.sleep(3)

        video_frames, video_expected, video_received, video_bytes = native.counters("video")
        audio_frames, audio_expected, audio_received, audio_bytes = native.counters("audio")
        # PatternTrack sends 30 fps and ToneTrack 50 packets a second; 3 s of each, give or take
        # the moments around the switch and a slow first second.
        assert 60 <= video_frames <= 100, video_frames
        assert 120 <= audio_frames <= 160, audio_frames
        assert video_received >= video_frames and video_bytes > 100 * video_received
        assert audio_received == audio_frames and audio_bytes > 0
        assert (video_expected, audio_expected) == (video_received, audio_received)  # no loss
        assert native.rejected == 0
        # aiortc decodes nothing more: every packet went to the native counter.
        assert viewer.received.video_frames - decoded <= 2
        # ICE consent and RTCP still flow: the endpoint keeps the viewer connected.
        viewing = [
            obj
            for obj in media_server.registry.objects.values()
            if getattr(obj, "pc", None) is not None and obj.pc.connectionState == "connected"
        ]
        assert len(viewing) == 2
    finally:
        await viewer.close()
        await publisher.close()
        await rpc.request("release", object=pipeline)
