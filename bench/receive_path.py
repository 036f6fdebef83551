"""What the media server's receive path costs per RTP packet a publisher sends it: socket to hub.

    python -m bench.receive_path [--publishers 8] [--seconds 5] [--subscribers-each 0] [--stages]
    valgrind --tool=callgrind --instr-atstart=no python -m bench.receive_path --publishers 1 \
        --stages

The media server runs in this process; P aiortc publishers (bench/client.py's, replaying the
benchmark's pre-encoded VP8 640x480@30 and Opus 20 ms in real time) run in a child process
(`python -m bench.client publisher`, never traced by valgrind) and publish to P WebRtcEndpoints of
one pipeline over the Kurento Protocol; `--subscribers-each K` connects K native benchmark
subscribers to each (another child process; default none: then a frame's hub push has no sink).
Once every endpoint's hubs have frames and `--settle` seconds passed, a window of `--seconds` is
measured in this process only: what the server did for the packets that arrived in it (uvloop,
aioice, the DTLS transport's SRTP unprotect, RTP parsing, aiortc's receiver with its statistics,
NACK, bandwidth estimation and jitter buffer, the hand-off to the hubs), plus the per-second
timers of the peer connections (RTCP reports, ICE consent). Printed: the RTP packets received
(the receivers' statistics, RTX included), the process CPU time per packet (user and kernel,
`getrusage`) and, under callgrind (`--instr-atstart=no`; send_path's `Callgrind`), the
instructions per packet and their split by where they ran (`callgrind_annotate` of the window).

`--stages` then replays a few seconds of one publisher's packets, captured after the window,
through each stage of that path on its own (SRTP unprotect with the negotiated profile, aioice's
STUN check, RTP parsing, statistics, NACK, REMB, depayloading, jitter buffer, frame hand-off and
hub push), timed and, under callgrind, counted per stage; what the window costs beyond their sum
is the event loop, the queue between aioice and the DTLS transport, the coroutines and timers.
The callgrind dumps are kept as receive-path.PID.N.LABEL.callgrind in the working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylibsrtp
from aioice import stun
from aiortc import clock
from aiortc.codecs import depayload, is_rtx
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics, TimestampMapper
from aiortc.rtp import RtpPacket

from mediaserver import fanout, ice, receive
from mediaserver.config import Config
from mediaserver.forwarding import ForwardingReceiver, MediaHub, _FrameHandoff
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint

from .proc import Child, Worker
from .send_path import MEDIA_CACHE, Callgrind, load_media

CAPTURE_PACKETS = 600  # --stages: packets of one publisher replayed through each stage

# Where the window's instructions ran, by the function and object callgrind_annotate names.
PLACES = (
    "native receive path (_receive.c)",
    "libsrtp unprotect + crypto",
    "cffi wrapper (pylibsrtp)",
    "uvloop (C)",
    "malloc/free (libc + pymalloc)",
    "CPython interpreter and builtins",
    "other C (libc, ld.so, other extensions)",
)
ALLOCATOR = re.compile(r"malloc|free\b|_free|realloc|calloc|pymalloc|obmalloc|_PyObject_Free|^free")


def place(source: str, function: str, where: str) -> str:
    """One of PLACES for a row of callgrind_annotate (`file:function [object]`; the object is
    left out for the interpreter's own)."""
    if "mediaserver/_receive" in where:
        return PLACES[0]
    if "_cffi_backend" in where or ("_binding" in where and function.startswith("_cffi_")):
        return PLACES[2]
    if "pylibsrtp/_binding" in where:
        return PLACES[1]
    if "/uvloop/" in where:
        return PLACES[3]
    if ALLOCATOR.search(function):
        return PLACES[4]
    if "libpython" in where or "lib-dynload" in where or "/Python-3" in source:
        return PLACES[5]
    return PLACES[6]


def endpoints_of(server: MediaServer, ids: list[str]) -> list[WebRtcEndpoint]:
    objects = server.registry.objects
    found = [objects[i] for i in ids]
    assert all(isinstance(e, WebRtcEndpoint) for e in found)
    return found  # type: ignore[return-value]


def receivers_of(endpoints: list[WebRtcEndpoint]) -> list[ForwardingReceiver]:
    return [r for e in endpoints for rs in e.receivers.values() for r in rs]


def counters(endpoints: list[WebRtcEndpoint]) -> dict[str, int]:
    """What the server received so far from the publishers: RTP packets (every SSRC, RTX
    included), media packets expected (by sequence number), datagrams through the DTLS
    transports (RTP, RTCP, DTLS), frames handed to the hubs, and NACKs and PLIs sent."""
    out = dict.fromkeys(
        ("rtp", "rtx", "expected", "media", "datagrams", "frames", "nack", "pli"), 0
    )
    transports = set()
    for receiver in receivers_of(endpoints):
        rtx = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        for ssrc, stream in receiver._RTCRtpReceiver__remote_streams.items():  # type: ignore[attr-defined]
            out["rtp"] += stream.packets_received
            if ssrc in rtx:
                out["rtx"] += stream.packets_received
            else:
                out["media"] += stream.packets_received
                out["expected"] += stream.packets_expected
        out["nack"] += receiver.feedback_sent.nack
        out["pli"] += receiver.feedback_sent.pli
        transports.add(receiver.transport)
    out["datagrams"] = sum(t._RTCDtlsTransport__rx_packets for t in transports)  # type: ignore[attr-defined]
    out["frames"] = sum(hub.frames for e in endpoints for hub in e.hubs.values())
    return out


def rusage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Dumps:
    """Callgrind's counts, read with send_path's `Callgrind`: each dump is renamed once read
    (receive-path.PID.N.LABEL.callgrind), so the next `instructions()` finds the next one."""

    def __init__(self, callgrind: Callgrind) -> None:
        self.callgrind = callgrind
        self.count = 0

    def read(self, label: str) -> tuple[int | None, Path | None]:
        instructions = self.callgrind.instructions()
        if instructions is None:
            return None, None
        pid = os.getpid()
        newest = max(
            Path.cwd().glob(f"callgrind.out.{pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
        )
        self.count += 1
        kept = newest.with_name(f"receive-path.{pid}.{self.count}.{label}.callgrind")
        newest.rename(kept)
        return instructions, kept


def places(dump: Path) -> list[tuple[str, int]]:
    """The dump's instructions by where they ran (PLACES), from callgrind_annotate's rows."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", "--show-percs=no", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    totals = dict.fromkeys(PLACES, 0)
    row = re.compile(r"^\s*([\d,]+)\s+(\S+?):(\S+)(?: \[(.*)\])?\s*$")
    for line in text.splitlines():
        match = row.match(line)
        if match is None or "PROGRAM TOTALS" in line:
            continue
        count, where = int(match.group(1).replace(",", "")), match.group(4) or ""
        totals[place(match.group(2), match.group(3), where)] += count
    return [(name, count) for name, count in totals.items() if count]


# -- --stages: one publisher's packets through each stage on its own ----------------------------


class Capture:
    """The next CAPTURE_PACKETS decrypted RTP packets of one endpoint's DTLS transport."""

    def __init__(self, endpoint: WebRtcEndpoint) -> None:
        receiver = receivers_of([endpoint])[0]
        self.dtls = receiver.transport
        # the stages replay what aiortc's chain sees: this transport goes back to Python
        self.dtls.native_refused = True
        receive.release(self.dtls, "bench capture")
        self.packets: list[tuple[bytes, int]] = []
        self.done = asyncio.Event()
        original = self.dtls._handle_rtp_data

        async def capture(data: bytes, arrival_time_ms: int) -> None:
            if len(self.packets) < CAPTURE_PACKETS:
                self.packets.append((data, arrival_time_ms))
            elif not self.done.is_set():
                self.done.set()
            await original(data, arrival_time_ms)

        self.dtls._handle_rtp_data = capture

    def stop(self) -> None:
        del self.dtls._handle_rtp_data


def srtp_pair(dtls: Any) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """A sending and a receiving SRTP session with the profile the transport negotiated, the
    receiving one set up as aiortc sets up its own (replay window of 1,024 packets)."""
    selected = dtls._ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
    key = os.urandom(profile.key_length + profile.salt_length)
    sessions = []
    for direction in (pylibsrtp.Policy.SSRC_ANY_OUTBOUND, pylibsrtp.Policy.SSRC_ANY_INBOUND):
        policy = pylibsrtp.Policy(
            key=key, ssrc_type=direction, srtp_profile=profile.libsrtp_profile
        )
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        sessions.append(pylibsrtp.Session(policy))
    return sessions[0], sessions[1]


def stages(capture: Capture, endpoint: WebRtcEndpoint) -> list[tuple[str, Callable[[], Any]]]:
    """(label, work) per stage, each over all the captured packets, prepared beforehand."""
    dtls = capture.dtls
    extensions = dtls._rtp_header_extensions_map
    plain = [data for data, _ in capture.packets]
    arrivals = [arrival for _, arrival in capture.packets]
    tx, rx = srtp_pair(dtls)
    protected = [tx.protect(data) for data in plain]
    parsed = [RtpPacket.parse(data, extensions) for data in plain]
    by_ssrc: dict[int, ForwardingReceiver] = {}
    for packet in parsed:
        receiver = dtls._rtp_router.route_rtp(packet)
        assert isinstance(receiver, ForwardingReceiver)
        by_ssrc[packet.ssrc] = receiver
    codecs = {}
    for packet in parsed:
        receiver = by_ssrc[packet.ssrc]
        codec = receiver._RTCRtpReceiver__codecs[packet.payload_type]  # type: ignore[attr-defined]
        if is_rtx(codec):  # as aiortc unwraps it; rare here (no loss on loopback)
            continue
        codecs[id(packet)] = codec
    media = [p for p in parsed if id(p) in codecs]
    video = [p for p in media if by_ssrc[p.ssrc]._RTCRtpReceiver__kind == "video"]  # type: ignore[attr-defined]
    video_ids = {id(p) for p in video}
    for packet in media:
        packet._data = depayload(codecs[id(packet)], packet.payload)  # type: ignore[attr-defined]
    hubs = {kind: MediaHub(kind, lambda: None) for kind in ("audio", "video")}

    def unprotect() -> None:
        for data in protected:
            rx.unprotect(data)

    def stun_check() -> None:
        # aioice's StunProtocol.datagram_received tries every datagram as STUN first.
        for data in protected:
            with contextlib.suppress(ValueError):
                stun.parse_message(data)

    def parse() -> None:
        for data in plain:
            RtpPacket.parse(data, extensions)

    def statistics() -> None:
        # Routing, ForwardingReceiver's and aiortc's per-packet bookkeeping, RTP statistics.
        streams: dict[int, StreamStatistics] = {}
        octets: dict[int, int] = {}
        active: dict[int, Any] = {}
        for packet in parsed:
            receiver = dtls._rtp_router.route_rtp(packet)
            receiver.last_heard_at = time.monotonic()
            octets[packet.ssrc] = octets.get(packet.ssrc, 0) + len(packet.payload)
            active[packet.ssrc] = clock.current_datetime()
            codec = receiver._RTCRtpReceiver__codecs.get(packet.payload_type)
            if packet.ssrc not in streams:
                streams[packet.ssrc] = StreamStatistics(codec.clockRate)
            streams[packet.ssrc].add(packet)

    def nack() -> None:
        generator = NackGenerator()
        for packet in video:
            generator.add(packet)

    def remb() -> None:
        estimator = RemoteBitrateEstimator()
        for packet, arrival in zip(parsed, arrivals, strict=True):
            if id(packet) in video_ids and packet.extensions.abs_send_time is not None:
                estimator.add(
                    abs_send_time=packet.extensions.abs_send_time,
                    arrival_time_ms=arrival,
                    payload_size=len(packet.payload) + packet.padding_size,
                    ssrc=packet.ssrc,
                )

    def depayloading() -> None:
        for packet in media:
            depayload(codecs[id(packet)], packet.payload)

    frames: list[tuple[ForwardingReceiver, Any, Any]] = []

    def jitter() -> None:
        buffers = {
            "audio": JitterBuffer(capacity=16, prefetch=4),
            "video": JitterBuffer(capacity=512, is_video=True),
        }
        for packet in media:
            receiver = by_ssrc[packet.ssrc]
            _, frame = buffers[receiver._RTCRtpReceiver__kind].add(packet)  # type: ignore[attr-defined]
            if frame is not None:
                frames.append((receiver, codecs[id(packet)], frame))

    def handoff() -> None:
        mappers: dict[int, TimestampMapper] = {}
        handoffs: dict[int, _FrameHandoff] = {}
        for receiver, codec, frame in frames:
            key = id(receiver)
            if key not in handoffs:
                mappers[key] = TimestampMapper()
                # A stand-in receiver whose frames go to a hub without sinks.
                stand_in = _StandIn(receiver, hubs[receiver._RTCRtpReceiver__kind].push)  # type: ignore[attr-defined]
                handoffs[key] = _FrameHandoff(stand_in)  # type: ignore[arg-type]
            frame.timestamp = mappers[key].map(frame.timestamp)
            handoffs[key].put((codec, frame))

    del endpoint
    return [
        ("unprotect", unprotect),
        ("stun-check", stun_check),
        ("rtp-parse", parse),
        ("statistics", statistics),
        ("nack", nack),
        ("remb", remb),
        ("depayload", depayloading),
        ("jitter-buffer", jitter),
        ("handoff-push", handoff),
    ]


class _StandIn:
    """What _FrameHandoff reads of its receiver: `on_frame` and `capture_time`."""

    def __init__(self, receiver: ForwardingReceiver, on_frame: Callable[[Any], None]) -> None:
        self.on_frame = on_frame
        self.capture_time = receiver.capture_time


async def run(args: argparse.Namespace) -> None:
    callgrind = Callgrind()
    dumps = Dumps(callgrind)
    ice.use_host_addresses(("127.0.0.1",))
    load_media()  # the publisher process replays MEDIA_CACHE
    server = MediaServer(Config(port=0))
    await server.start()
    log_dir = Path(tempfile.mkdtemp(prefix="receive-path-"))
    slow = 10 if callgrind.active else 1
    try:
        publisher = await Worker.launch(
            "receive-path-publishers", ["publisher", server.url, str(MEDIA_CACHE)], log_dir
        )
        pipeline = (await publisher.call("create_pipeline"))["pipeline"]
        ids = [
            (await publisher.call("publish", pipeline=pipeline))["endpoint"]
            for _ in range(args.publishers)
        ]
        if args.subscribers_each:
            viewers = await Worker.launch(
                "receive-path-subscribers", ["subscriber", server.url, "native"], log_dir
            )
            reply = await viewers.call(
                "subscribe", pipeline=pipeline, sources=ids * args.subscribers_each
            )
            if reply["errors"]:
                sys.exit(f"subscribers failed: {reply['errors'][:3]}")
            await viewers.call("wait_media", seconds=30.0 * slow)
        endpoints = endpoints_of(server, ids)

        deadline = time.monotonic() + 60 * slow
        while not all(hub.frames for e in endpoints for hub in e.hubs.values()):
            if time.monotonic() > deadline:
                sys.exit(f"no media from the publishers\n{publisher.log_tail()}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)

        before = counters(endpoints)
        user, kernel = rusage()
        profile = cProfile.Profile() if args.profile else None
        wall = time.perf_counter()
        callgrind.start()
        if profile is not None:
            profile.enable()
        await asyncio.sleep(args.seconds)
        if profile is not None:
            profile.disable()
        callgrind.stop()
        wall = time.perf_counter() - wall
        after_user, after_kernel = rusage()
        after = counters(endpoints)
        instructions, dump = dumps.read("window")
        got = {key: after[key] - before[key] for key in after}
        rtp = max(got["rtp"], 1)
        user, kernel = after_user - user, after_kernel - kernel
        lost = got["expected"] - got["media"]

        transports = {r.transport for r in receivers_of(endpoints)}
        native = sum(1 for t in transports if getattr(t, "native_receive", None) is not None)
        print(f"send path: {fanout.describe()}")
        print(
            f"receive path: {receive.describe()}; {native} of {len(transports)} transports native"
        )
        print(
            f"publishers={args.publishers} subscribers each={args.subscribers_each} "
            f"window={wall:.2f} s: RTP packets received={got['rtp']} (RTX {got['rtx']}), "
            f"datagrams={got['datagrams']}, frames to hubs={got['frames']}, "
            f"lost={lost} ({100 * lost / max(got['expected'], 1):.2f} %), "
            f"NACKs sent={got['nack']}, PLIs sent={got['pli']}"
        )
        print(
            f"cpu={1000 * (user + kernel):.1f} ms (user {1000 * user:.1f}, kernel "
            f"{1000 * kernel:.1f}) = {1e6 * (user + kernel) / rtp:.2f} us per RTP packet "
            f"received (user {1e6 * user / rtp:.2f}, kernel {1e6 * kernel / rtp:.2f}); "
            f"{got['rtp'] / wall:.0f} packets/s"
        )
        if profile is not None:
            pstats.Stats(profile).sort_stats(os.environ.get("RX_SORT", "tottime")).print_stats(30)
        if instructions is not None and dump is not None:
            print(
                f"callgrind: {instructions} instructions, "
                f"{instructions / rtp:,.0f} per RTP packet received ({dump.name})"
            )
            for name, count in places(dump):
                print(f"  {name:<40} {count / rtp:>9,.0f}  {100 * count / instructions:5.1f} %")

        if args.remb_check:
            await remb_check(endpoints[0], args.remb_check)

        if args.stages:
            capture = Capture(endpoints[0])
            try:
                await asyncio.wait_for(capture.done.wait(), 60 * slow)
            finally:
                capture.stop()
            work = stages(capture, endpoints[0])
            count = len(capture.packets)
            print(f"stages, each over {count} captured packets of one publisher (per packet):")
            total = 0
            for label, stage in work:
                cpu = time.process_time()
                callgrind.start()
                stage()
                callgrind.stop()
                cpu = time.process_time() - cpu
                counted, _ = dumps.read(label)
                total += counted or 0
                shown = f"{counted / count:>9,.0f} instructions" if counted is not None else ""
                print(f"  {label:<15} {1e6 * cpu / count:7.2f} us {shown}")
            if instructions is not None:
                rest = instructions / rtp - total / count
                print(f"  {'sum':<15} {'':>10} {total / count:>9,.0f} instructions")
                print(f"  window less the sum: {rest:,.0f} instructions per packet")
    finally:
        await Child.stop_all()
        await server.stop()


# A REMB sample from the native path: SSRC, arrival ms, abs-send-time, size, RTP timestamp.
Sample = tuple[int, int, int, int, int]


def remb_estimates(samples: list[Sample]) -> list[tuple[int, int]]:
    """aiortc's RemoteBitrateEstimator fed these samples: the (arrival ms, bitrate) of each REMB
    it would send."""
    estimator = RemoteBitrateEstimator()
    out = []
    for ssrc, arrival_ms, abs_send_time, size, _ in samples:
        result = estimator.add(
            abs_send_time=abs_send_time, arrival_time_ms=arrival_ms, payload_size=size, ssrc=ssrc
        )
        if result is not None:
            out.append((arrival_ms, result[0]))
    return out


def per_frame(samples: list[Sample]) -> list[Sample]:
    """The samples as _receive.c groups them: consecutive packets of one SSRC and RTP timestamp
    summed, with the last one's arrival and send time."""
    grouped: list[Sample] = []
    for sample in samples:
        ssrc, arrival_ms, abs_send_time, size, timestamp = sample
        if grouped and grouped[-1][0] == ssrc and grouped[-1][4] == timestamp:
            size += grouped[-1][3]
            grouped[-1] = (ssrc, arrival_ms, abs_send_time, size, timestamp)
        else:
            grouped.append(sample)
    return grouped


async def remb_check(endpoint: WebRtcEndpoint, seconds: float) -> None:
    """Record one publisher's per-packet REMB samples from the native path for `seconds`, then
    compare aiortc's estimator fed per packet (as aiortc does) with it fed per frame (as the
    native path does by default)."""
    dtls = receivers_of([endpoint])[0].transport
    native = getattr(dtls, "native_receive", None)
    if native is None:
        print("remb check: the transport is not received natively")
        return
    native.native.remb_per_frame = False
    native.remb_log = samples = []
    await asyncio.sleep(seconds)
    native.remb_log = None
    native.native.remb_per_frame = True
    packets = remb_estimates(samples)
    frames = remb_estimates(per_frame(samples))
    print(
        f"remb check over {seconds:.0f} s: {len(samples)} video packets with abs-send-time, "
        f"{len(per_frame(samples))} frame groups; REMBs per packet {len(packets)}, "
        f"per frame {len(frames)}"
    )
    if not packets or not frames:
        return
    # compare the estimate in force at each second of the recording
    start = samples[0][1]
    worst = 0.0
    for second in range(1, int(seconds) + 1):
        at = start + 1000 * second
        a = next((b for t, b in reversed(packets) if t <= at), None)
        b = next((b for t, b in reversed(frames) if t <= at), None)
        if a is None or b is None:
            continue
        worst = max(worst, abs(a - b) / a)
        print(f"  t={second:>3} s  per packet {a:>10,} bps  per frame {b:>10,} bps")
    print(f"  largest difference: {100 * worst:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window (default 5 s)")
    parser.add_argument("--subscribers-each", type=int, default=0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after media flows")
    parser.add_argument("--stages", action="store_true", help="also replay each stage alone")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the window")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--remb-check",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="compare the REMB estimate fed per packet and per frame over a recording",
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
