"""A fixed, repeatable workload for the media server's per-subscriber send path: push the same
encoded frames through one hub to N connected subscribers and count what it costs.

    python -m bench.send_path [--subscribers 20] [--seconds 4] [--loop uvloop|asyncio]
                              [--reports 20]
    valgrind --tool=callgrind --instr-atstart=no python -m bench.send_path --subscribers 10

The media server runs in this process. A source WebRtcEndpoint without a peer is connected to N
viewing WebRtcEndpoints negotiated with aiortc subscribers (bench/client.py's, which never
decode). Once every subscriber receives media, the server's outgoing packets are redirected to a
socket nobody reads, so the subscribers' receiving stays out of the measurement; then
`--seconds` of the benchmark's media (VP8 640x480@30 with a keyframe every 2 s, Opus 20 ms) are
pushed into the source's hubs as fast as the server forwards them, and the process CPU time of
that part is printed. Under callgrind (`--instr-atstart=no`) only that part is instrumented, so
its instruction count is exact and repeatable: compare it before and after a change.

`--reports R` then times RTCP sender reports for every subscriber stream, R rounds each way: the
hub's fan-out group (`Group.send_reports`, one call per hub and round), each sender's own report
(`ForwardingSender._send_report`, what its loop sends while it is not a member), and aiortc's
(its `RtcpSrPacket` and `RtcpSdesPacket` through `RTCRtpSender._send_rtcp`, what aiortc's
`_run_rtcp` does per interval, its timer left out).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
from aioice.candidate import Candidate
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from mediaserver import fanout, ice
from mediaserver.config import Config
from mediaserver.forwarding import EncodedFrame, is_keyframe
from mediaserver.rtp_send import Packetizer
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint
from signaling.kurento import KurentoClient

from .client import Subscriber, negotiate
from .media import AUDIO_FRAME, AUDIO_TIME_BASE, FPS, VIDEO_TIME_BASE, EncodedMedia, encode_media

MEDIA_CACHE = Path(tempfile.gettempdir()) / "bench-send-path-media.pickle"
# One packetizer per pushed stream, as the server's receivers have.
PACKETIZERS = {
    "video": Packetizer(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)),
    "audio": Packetizer(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)),
}


class Callgrind:
    """Callgrind's client requests (start/stop instrumentation, zero and dump the counters),
    through a tiny C library built on first use; no-ops when not running under valgrind."""

    SOURCE = r"""
    #include <valgrind/callgrind.h>
    void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
    void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("send-path"); }
    """

    def __init__(self) -> None:
        self.active = "vgpreload" in Path("/proc/self/maps").read_text()
        self._lib: ctypes.CDLL | None = None
        if self.active:
            build = Path(tempfile.mkdtemp())
            (build / "cg.c").write_text(self.SOURCE)
            subprocess.run(
                ["cc", "-shared", "-fPIC", "-O1", "-o", str(build / "cg.so"), str(build / "cg.c")],
                check=True,
            )
            self._lib = ctypes.CDLL(str(build / "cg.so"))

    def start(self) -> None:
        if self._lib is not None:
            self._lib.start()

    def stop(self) -> None:
        if self._lib is not None:
            self._lib.stop()

    def instructions(self) -> int | None:
        """The instructions counted between start() and stop(), read from the dump callgrind
        wrote (callgrind.out.PID.N in the working directory, the default name); None when not
        running under callgrind or when the dump is elsewhere."""
        if not self.active:
            return None
        for dump in sorted(Path.cwd().glob(f"callgrind.out.{os.getpid()}*"), reverse=True):
            text = dump.read_text(errors="replace")
            if "send-path" not in text:
                continue
            for line in text.splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        return None


def load_media() -> EncodedMedia:
    if MEDIA_CACHE.exists():
        return EncodedMedia.load(MEDIA_CACHE)
    media = encode_media()
    media.save(MEDIA_CACHE)
    return media


def frames_in_order(media: EncodedMedia, seconds: float) -> list[tuple[str, bytes, int]]:
    """(kind, data, pts) for `seconds` of media, audio and video interleaved by time."""
    out: list[tuple[float, str, bytes, int]] = []
    for i in range(int(seconds * FPS)):
        out.append((i / FPS, "video", media.video[i % len(media.video)], i * 90000 // FPS))
    for i in range(int(seconds * 50)):
        out.append((i / 50, "audio", media.audio[i % len(media.audio)], i * AUDIO_FRAME))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(kind, data, pts) for _, kind, data, pts in out]


def encoded_frame(kind: str, data: bytes, pts: int) -> EncodedFrame:
    """A frame as the server's receiver hands it to a hub."""
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = VIDEO_TIME_BASE if kind == "video" else AUDIO_TIME_BASE
    codec = "vp8" if kind == "video" else "opus"
    return EncodedFrame(
        packet=packet, codec=codec, keyframe=is_keyframe(codec, data), packetizer=PACKETIZERS[kind]
    )


def push(source: WebRtcEndpoint, frames: list[tuple[str, EncodedFrame]]) -> None:
    """Hand the frames to the source's hubs one after the other, without giving the event loop
    a turn: what is measured is the send path alone (a frame's packetizing, every subscriber's
    writing, protecting and sending), not the timers of every peer connection in the process
    (RTCP, ICE consent), which fire more often per packet the slower valgrind makes the push."""
    for kind, frame in frames:
        source.hubs[kind].push(frame)


def packets_sent(viewers: list[WebRtcEndpoint]) -> int:
    """RTP packets the viewers' senders sent so far (aiortc's count, as sender reports carry)."""
    return sum(
        t.sender._RTCRtpSender__packet_count  # type: ignore[attr-defined]
        for viewer in viewers
        if viewer.pc is not None
        for t in viewer.pc.getTransceivers()
    )


async def time_reports(source: WebRtcEndpoint, viewers: list[WebRtcEndpoint], rounds: int) -> None:
    """CPU time per sender report, sent three ways (see the module's docstring)."""
    senders = [t.sender for v in viewers if v.pc is not None for t in v.pc.getTransceivers()]
    hubs = list(source.hubs.values())
    reporting = sum(1 for hub in hubs for w in hub.fanout.writers if w.reporting)
    cpu = time.process_time()
    for _ in range(rounds):
        for hub in hubs:
            hub.fanout.send_reports(time.time())
    group = (time.process_time() - cpu) / max(1, rounds * reporting)
    cpu = time.process_time()
    for _ in range(rounds):
        for sender in senders:
            await sender._send_report()
    own = (time.process_time() - cpu) / (rounds * len(senders))
    cpu = time.process_time()
    for _ in range(rounds):
        for sender in senders:
            await RTCRtpSender._send_rtcp(sender, aiortc_report(sender))
    aiortc = (time.process_time() - cpu) / (rounds * len(senders))
    print(
        f"sender reports ({reporting} of {len(senders)} streams in groups, {rounds} rounds): "
        f"group {group * 1e6:.1f} us, each sender's own {own * 1e6:.1f} us, "
        f"aiortc's {aiortc * 1e6:.1f} us per report (CPU, kernel included)"
    )


def aiortc_report(sender: Any) -> list[Any]:
    """The packets aiortc's `_run_rtcp` builds for one report."""
    cname = sender._RTCRtpSender__cname
    info = RtcpSenderInfo(
        ntp_timestamp=sender._RTCRtpSender__ntp_timestamp,
        rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
        packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
        octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF,
    )
    packets: list[Any] = [RtcpSrPacket(ssrc=sender._ssrc, sender_info=info)]
    if cname is not None:
        chunk = RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])
        packets.append(RtcpSdesPacket(chunks=[chunk]))
    return packets


def blackhole(viewers: list[WebRtcEndpoint], address: tuple[str, int]) -> None:
    """Point every viewer's selected ICE pair at `address` (a socket nobody reads)."""
    for viewer in viewers:
        assert viewer.pc is not None
        for transceiver in viewer.pc.getTransceivers():
            connection = transceiver.sender.transport.transport._connection
            pair = connection._nominated[1]
            pair.remote_candidate = Candidate(
                foundation="blackhole",
                component=1,
                transport="udp",
                priority=1,
                host=address[0],
                port=address[1],
                type="host",
            )


async def run(args: argparse.Namespace) -> None:
    callgrind = Callgrind()
    ice.use_host_addresses(("127.0.0.1",))
    media = load_media()
    server = MediaServer(Config(port=0))
    await server.start()
    rpc = KurentoClient(server.url, request_timeout=120)
    subscribers: list[Subscriber] = []
    try:
        pipeline = await rpc.create("MediaPipeline")
        source_id = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        for _ in range(args.subscribers):
            subscriber = Subscriber()
            subscribers.append(subscriber)
            endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
            await rpc.invoke(source_id, "connect", sink=endpoint)
            await negotiate(rpc, subscriber.pc, endpoint)
        objects = server.registry.objects
        source = objects[source_id]
        viewers = [o for o in objects.values() if isinstance(o, WebRtcEndpoint) and o is not source]
        assert isinstance(source, WebRtcEndpoint) and len(viewers) == args.subscribers

        # Warm up in real time until every subscriber has received audio and video.
        warmup = frames_in_order(media, 30)
        deadline = time.monotonic() + (600 if callgrind.active else 60)
        index = 0
        while not all(s.media.is_set() for s in subscribers):
            if time.monotonic() > deadline:
                sys.exit("subscribers got no media")
            kind, data, pts = warmup[index % len(warmup)]
            source.hubs[kind].push(encoded_frame(kind, data, pts))
            index += 1
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)

        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        blackhole(viewers, sink.getsockname())
        # Start the measured stream at a keyframe, as every sink waits for one after a gap; a
        # resync also makes each pad leave its hub's fan-out group and look up its (redirected)
        # route again.
        # The frames as the server's receivers would hand them over, made before the measured
        # part: what is measured starts at the hub (packetizing, writing, protecting, sending).
        frames = [
            (kind, encoded_frame(kind, data, pts))
            for kind, data, pts in frames_in_order(media, args.seconds)
        ]
        for viewer in viewers:
            for pad in viewer.pads.values():
                pad.resync()

        sent = packets_sent(viewers)
        profile = cProfile.Profile() if args.profile else None
        callgrind.start()
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        push(source, frames)
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        callgrind.stop()
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        instructions = callgrind.instructions()
        if args.reports:
            await time_reports(source, viewers, args.reports)
        sink.close()
        sent = packets_sent(viewers) - sent

        video = sum(1 for kind, _ in frames if kind == "video")
        grouped = sum(len(hub.fanout) for hub in source.hubs.values())
        print(f"send path: {fanout.describe()}; {grouped} subscriber streams in fan-out groups")
        print(
            f"subscribers={args.subscribers} frames={len(frames)} (video {video}) "
            f"packets sent={sent} cpu={cpu * 1000:.1f} ms wall={wall * 1000:.1f} ms "
            f"cpu per packet sent={cpu / max(sent, 1) * 1e6:.2f} us"
        )
        if instructions is not None:
            print(
                f"callgrind: {instructions} instructions, "
                f"{instructions / max(sent, 1):,.0f} per packet sent"
            )
    finally:
        await asyncio.gather(*(s.pc.close() for s in subscribers), return_exceptions=True)
        await rpc.close()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0, help="media pushed (default 4 s)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the push")
    parser.add_argument("--reports", type=int, default=0, help="time R rounds of sender reports")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
