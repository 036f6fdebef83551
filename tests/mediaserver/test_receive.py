"""The native receive path (mediaserver/receive.py, _receive.c): for the same SRTP packets it must
hand the hub the frames aiortc's receiver chain hands it (bytes, timestamps, keyframe flags) and
leave aiortc's objects (statistics per SSRC, jitter buffer, NACK missing set, payload octets) as
that chain leaves them, through reordering, loss repaired by RTX, sequence wrap, padding and
both header extension forms, for VP8 and Opus, and when the stream changes hands mid-way;
hostile datagrams must be dropped without harm."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiortc.clock
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)
from pylibsrtp import Policy

from bench.client import CountingReceiver, KurentoSignaling, Subscriber
from mediaserver import receive
from mediaserver.forwarding import FORWARDING, ForwardingDtlsTransport, ForwardingReceiver
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint
from tests.conftest import require

from .rpc import Rpc
from .test_forwarding import publish, view

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC = 0x1234ABCD, 0x5678EF01, 0x0BADCAFE
KEY = bytes(range(3, 3 + 30))
ROOT = Path(__file__).resolve().parents[2]
_CERTIFICATE: list[RTCCertificate] = []


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The native module, set up as receive.py does (also under MEDIASERVER_NATIVE=0)."""
    try:
        from mediaserver import _receive
    except ImportError:
        _receive = None
    require(_receive is not None, "the native receive module (mediaserver._receive, built)")
    if receive._native is None:
        receive.set_srtp(_receive)
        monkeypatch.setattr(receive, "_native", _receive)
    return _receive


class FakeClock:
    """time.time() for aiortc's StreamStatistics, set per packet (the native side gets the same
    through set_clock)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


def srtp_session(outbound: bool) -> pylibsrtp.Session:
    ssrc_type = Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND
    policy = Policy(
        key=KEY, ssrc_type=ssrc_type, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def extension_parameters(ids: dict[str, int]) -> list[RTCRtpHeaderExtensionParameters]:
    return [RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]


def parameters(kind: str, ids: dict[str, int]) -> RTCRtpReceiveParameters:
    if kind == "video":
        codecs = [
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96),
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96}
            ),
            RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102),
        ]
        encodings = [
            RTCRtpDecodingParameters(
                ssrc=VIDEO_SSRC, payloadType=96, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC)
            )
        ]
    else:
        codecs = [
            RTCRtpCodecParameters(
                mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111
            )
        ]
        encodings = [RTCRtpDecodingParameters(ssrc=AUDIO_SSRC, payloadType=111)]
    return RTCRtpReceiveParameters(
        codecs=codecs, encodings=encodings, headerExtensions=extension_parameters(ids), muxId="0"
    )


@dataclass
class Side:
    """One DTLS transport with one ForwardingReceiver, fed either way."""

    dtls: Any
    receiver: Any
    frames: list[Any] = field(default_factory=list)
    native: Any = None
    fallback: list[bytes] = field(default_factory=list)

    async def python(self, data: bytes, now: float) -> None:
        # what RTCDtlsTransport._recv_next does with an SRTP datagram
        try:
            plain = self.dtls._rx_srtp.unprotect(data)
        except pylibsrtp.Error:
            return
        arrival_ms = int((now + 2_208_988_800) * 1000)  # aiortc's clock.current_ms
        await self.dtls._handle_rtp_data(plain, arrival_time_ms=arrival_ms)

    def start_native(self) -> None:
        self.native = receive.NativeReceive(
            self.dtls,
            [self.receiver],
            -1,
            ("127.0.0.1", 9),
            lambda data, addr: self.fallback.append(data),
        )

    def snapshot(self) -> dict[str, Any]:
        receiver = self.receiver
        streams = receiver._RTCRtpReceiver__remote_streams
        stats = {
            ssrc: (
                s.base_seq,
                s.max_seq,
                s.cycles,
                s.packets_received,
                s.packets_lost,
                s.jitter,
                s._jitter_q4,
                s._last_arrival,
                s._last_timestamp,
                s._clockrate,
            )
            for ssrc, s in streams.items()
        }
        jitter = receiver._RTCRtpReceiver__jitter_buffer
        slots = [(p.sequence_number, p.timestamp, p._data) if p else None for p in jitter._packets]
        nack = receiver._RTCRtpReceiver__nack_generator
        return {
            "frames": [(bytes(f.packet), f.packet.pts, f.keyframe, f.codec) for f in self.frames],
            "stats": stats,
            "octets": dict(receiver.octets_received),
            "jitter": (jitter._origin, slots),
            "nack": None if nack is None else (nack.max_seq, sorted(nack.missing)),
            "feedback": (receiver.feedback_sent.nack, receiver.feedback_sent.pli),
            "ssrcs": sorted(self.dtls._rtp_router.ssrc_table),
        }


async def make_side(kind: str, ids: dict[str, int]) -> Side:
    if not _CERTIFICATE:
        _CERTIFICATE.append(RTCCertificate.generateCertificate())
    dtls = ForwardingDtlsTransport(RTCIceTransport(RTCIceGatherer()), _CERTIFICATE)
    dtls._rx_srtp = srtp_session(outbound=False)
    token = FORWARDING.set(True)
    try:
        receiver = ForwardingReceiver(kind, dtls)
    finally:
        FORWARDING.reset(token)
    side = Side(dtls, receiver)
    receiver.on_frame = side.frames.append
    await receiver.receive(parameters(kind, ids))
    receiver._set_rtcp_ssrc(42)  # so NACK and PLI are sent (and counted; sending fails quietly)
    return side


async def close_side(side: Side) -> None:
    await side.receiver.stop()


# -- packet sequences ---------------------------------------------------------------------------


def vp8_frames(count: int, rng: random.Random) -> list[tuple[bool, list[bytes]]]:
    """VP8 frames as (keyframe, payloads): descriptors with long picture ids and partitions."""
    frames = []
    for index in range(count):
        keyframe = index % 10 == 0
        size = rng.randint(300, 2600) if keyframe else rng.randint(20, 1400)
        body = bytes([0x10 if keyframe else 0x11]) + rng.randbytes(size - 1)
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        picture_id = index & 0x7FFF
        payloads = []
        for number, chunk in enumerate(chunks):
            start = 0x10 if number == 0 else 0
            partition = min(number, 7)
            descriptor = bytes(
                [0x80 | start | partition, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF]
            )
            payloads.append(descriptor + chunk)
        frames.append((keyframe, payloads))
    return frames


@dataclass
class Wire:
    """Packets as the publisher would send them (clear), then protected once."""

    ids: dict[str, int]
    sequence: int
    rtx_sequence: int = 1000
    timestamp: int = 3_000_000_000
    packets: list[RtpPacket] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)

    def extensions(self) -> HeaderExtensionsMap:
        extensions = HeaderExtensionsMap()
        extensions.configure(parameters("audio", self.ids))
        return extensions

    def add(self, packet: RtpPacket, at: float) -> None:
        if self.ids:
            packet.extensions.mid = "0"
            if ABS_SEND_TIME in self.ids:
                packet.extensions.abs_send_time = int(at * 262144) & 0xFFFFFF
        self.packets.append(packet)
        self.sent_at.append(at)

    def rtx(self, original: RtpPacket, at: float) -> None:
        packet = RtpPacket(
            payload_type=97,
            marker=original.marker,
            sequence_number=self.rtx_sequence,
            timestamp=original.timestamp,
            ssrc=RTX_SSRC,
            payload=original.sequence_number.to_bytes(2, "big") + original.payload,
        )
        self.rtx_sequence = (self.rtx_sequence + 1) & 0xFFFF
        self.add(packet, at)

    def protect(self) -> list[bytes]:
        session = srtp_session(outbound=True)
        extensions = self.extensions()
        return [session.protect(p.serialize(extensions)) for p in self.packets]


def video_wire(ids: dict[str, int], start: int, rng: random.Random, padding: bool) -> Wire:
    wire = Wire(ids, start)
    at = 100.0
    for _keyframe, payloads in vp8_frames(40, rng):
        for number, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=96,
                marker=int(number == len(payloads) - 1),
                sequence_number=wire.sequence,
                timestamp=wire.timestamp,
                ssrc=VIDEO_SSRC,
                payload=payload,
            )
            if padding and number == 0:
                packet.padding_size = rng.randint(1, 40)
            wire.sequence = (wire.sequence + 1) & 0xFFFF
            wire.add(packet, at)
            at += 0.001
        wire.timestamp = (wire.timestamp + 3000) & 0xFFFFFFFF
        at += 0.030
    return wire


def audio_wire(ids: dict[str, int], start: int, rng: random.Random) -> Wire:
    wire = Wire(ids, start)
    at = 100.0
    for _ in range(120):
        packet = RtpPacket(
            payload_type=111,
            sequence_number=wire.sequence,
            timestamp=wire.timestamp,
            ssrc=AUDIO_SSRC,
            payload=rng.randbytes(rng.randint(40, 160)),
        )
        wire.sequence = (wire.sequence + 1) & 0xFFFF
        wire.timestamp = (wire.timestamp + 960) & 0xFFFFFFFF
        wire.add(packet, at)
        at += 0.020
    return wire


def disturb(wire: Wire, rng: random.Random, *, reorder: bool, loss: bool, rtx: bool) -> None:
    """Reorder neighbours, drop some packets, and (RTX) send the lost ones again later as a
    NACK would have them: in the RTX stream (video) or as themselves (audio, a duplicate)."""
    packets, times = wire.packets, wire.sent_at
    order = list(range(len(packets)))
    if reorder:
        for i in range(1, len(order) - 1, 7):
            order[i], order[i + 1] = order[i + 1], order[i]
    lost = set(rng.sample(range(5, len(order) - 5), 6)) if loss else set()
    result = [(packets[i], times[i]) for i in order if i not in lost]
    wire.packets, wire.sent_at = [p for p, _ in result], [t for _, t in result]
    if rtx:
        for i in sorted(lost):
            original = packets[i]
            if original.ssrc == VIDEO_SSRC:
                wire.rtx(original, times[i] + 0.05)
            else:
                wire.add(original, times[i] + 0.05)
    # a repeated packet (SRTP replay: dropped by both) and a stray
    wire.packets.append(wire.packets[3])
    wire.sent_at.append(wire.sent_at[-1] + 0.001)


CASES = {
    "vp8 in order, one-byte extensions": ("video", {MID: 1, ABS_SEND_TIME: 3}, 500, {}),
    "vp8 reordered, lost, repaired by RTX, wrapping": (
        "video",
        {MID: 1, ABS_SEND_TIME: 3},
        65500,
        {"reorder": True, "loss": True, "rtx": True},
    ),
    "vp8 two-byte extensions, padding, loss without repair": (
        "video",
        {MID: 4, ABS_SEND_TIME: 20},
        65000,
        {"reorder": True, "loss": True, "rtx": False, "padding": True},
    ),
    "vp8 no extensions": ("video", {}, 0, {"reorder": True}),
    "opus in order": ("audio", {MID: 1}, 100, {}),
    "opus reordered, lost, repeated, wrapping": (
        "audio",
        {MID: 1},
        65480,
        {"reorder": True, "loss": True, "rtx": True},
    ),
}


def build(case: str, seed: int = 7) -> tuple[str, dict[str, int], list[bytes], list[float]]:
    kind, ids, start, options = CASES[case]
    rng = random.Random(seed)
    if kind == "video":
        wire = video_wire(ids, start, rng, options.get("padding", False))
    else:
        wire = audio_wire(ids, start, rng)
    if options:
        disturb(
            wire,
            rng,
            reorder=options.get("reorder", False),
            loss=options.get("loss", False),
            rtx=options.get("rtx", False),
        )
    arrivals = [t + rng.uniform(0, 0.004) for t in wire.sent_at]
    return kind, ids, wire.protect(), arrivals


async def run(
    kind: str,
    ids: dict[str, int],
    datagrams: list[bytes],
    arrivals: list[float],
    clock: FakeClock,
    native_from: int | None,
    native_until: int | None = None,
) -> dict[str, Any]:
    """Feed the datagrams one by one: through Python, except those in [native_from,
    native_until) which go through a NativeReceive started and released around them."""
    side = await make_side(kind, ids)
    try:
        for index, (data, arrival) in enumerate(zip(datagrams, arrivals, strict=True)):
            clock.now = 1_700_000_000.0 + arrival
            if native_from is not None and index == native_from:
                side.start_native()
            if side.native is not None and not side.native.released:
                side.native.native.set_clock(clock.now)
                side.native.process([data])
            else:
                await side.python(data, clock.now)
            if native_until is not None and index + 1 == native_until and side.native:
                side.native.release("test")
        if side.native is not None:
            assert side.native.native.counters()["packets"] > 0 or side.native.released
            side.native.release("test")
        await asyncio.sleep(0)  # the NACK and PLI sends
        return side.snapshot()
    finally:
        await close_side(side)


@pytest.mark.parametrize("case", list(CASES))
async def test_native_frames_and_statistics_are_aiortcs(
    native: Any, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "time", clock)
    kind, ids, datagrams, arrivals = build(case)
    expected = await run(kind, ids, datagrams, arrivals, clock, native_from=None)
    got = await run(kind, ids, datagrams, arrivals, clock, native_from=0)
    assert expected["frames"], "the sequence produced no frames"
    assert len(got["frames"]) == len(expected["frames"])
    for key in expected:
        assert got[key] == expected[key], key
    if kind == "video" and CASES[case][3].get("loss"):
        assert expected["feedback"][0] > 0  # NACKs were sent, by both


@pytest.mark.parametrize(
    "case",
    ["vp8 reordered, lost, repaired by RTX, wrapping", "opus reordered, lost, repeated, wrapping"],
)
@pytest.mark.parametrize("window", [(0, 60), (45, 130), (97, None)])
async def test_the_stream_changes_hands_midway(
    native: Any, case: str, window: tuple[int, int | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python, then native, then Python again (the jitter buffer, missing set, statistics and
    SRTP session carried over both ways) ends where Python alone ends."""
    clock = FakeClock()
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "time", clock)
    kind, ids, datagrams, arrivals = build(case, seed=11)
    expected = await run(kind, ids, datagrams, arrivals, clock, native_from=None)
    got = await run(kind, ids, datagrams, arrivals, clock, *window)
    for key in expected:
        assert got[key] == expected[key], key


async def test_the_bitrate_estimator_gets_one_sample_per_frame(native: Any) -> None:
    """REMB samples: one per frame (its packets' bytes summed, the last one's send time), the
    last frame's when the native path ends."""
    ids = {MID: 1, ABS_SEND_TIME: 3}
    wire = video_wire(ids, 100, random.Random(3), padding=True)
    side = await make_side("video", ids)
    try:
        side.start_native()
        side.native.remb_log = samples = []
        side.native.process(wire.protect())
        side.native.release("test")
        frames = sorted({p.timestamp for p in wire.packets})
        assert [s[4] for s in samples] == frames
        sizes = {t: 0 for t in frames}
        for packet in wire.packets:
            sizes[packet.timestamp] += len(packet.payload) + packet.padding_size
        assert [s[3] for s in samples] == [sizes[t] for t in frames]
        last_of = {p.timestamp: p.extensions.abs_send_time for p in wire.packets}
        assert [s[2] for s in samples] == [last_of[t] for t in frames]
        assert all(s[0] == VIDEO_SSRC for s in samples)
    finally:
        await close_side(side)


async def test_an_h264_packet_goes_back_to_python_still_encrypted(native: Any) -> None:
    side = await make_side("video", {MID: 1})
    try:
        side.start_native()
        session = srtp_session(outbound=True)
        vp8 = RtpPacket(payload_type=96, sequence_number=1, timestamp=5, ssrc=VIDEO_SSRC)
        vp8.payload = b"\x10\x10abc"
        side.native.process([session.protect(vp8.serialize())])
        assert not side.native.released
        h264 = RtpPacket(payload_type=102, sequence_number=2, timestamp=9, ssrc=VIDEO_SSRC)
        h264.payload = b"\x65abc"
        protected = session.protect(h264.serialize())
        side.native.process([protected])
        assert side.native.released
        assert side.native.reason == "a packet the native path does not handle"
        assert side.fallback == [protected]  # still encrypted, for Python to unprotect
        assert side.receiver._RTCRtpReceiver__remote_streams[VIDEO_SSRC].packets_received == 1
    finally:
        await close_side(side)


async def test_a_python_error_hands_back_instead_of_reaching_the_loop(
    native: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame's consumer raising must not reach the event loop (uvloop would close the ICE
    socket): the native path reports it and hands the transport back to Python."""
    side = await make_side("audio", {})
    try:
        side.start_native()
        seen: list[Any] = []
        monkeypatch.setattr("sys.unraisablehook", seen.append)

        def broken(frame: Any) -> None:
            raise RuntimeError("a broken hub")

        side.receiver.on_frame = broken
        session = srtp_session(outbound=True)
        for seq in range(8):  # audio frames come out after prefetch
            packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=960 * seq)
            packet.ssrc, packet.payload = AUDIO_SSRC, b"opus"
            side.native.native.datagram_received(
                session.protect(packet.serialize()), ("127.0.0.1", 9)
            )
            if side.native.released:
                break
        assert side.native.released
        assert side.native.reason == "a Python error in the native receive path"
        assert seen and isinstance(seen[0].exc_value, RuntimeError)
        assert side.native.counters()["errors"] == 1
    finally:
        await close_side(side)


async def test_hostile_datagrams_are_dropped(native: Any) -> None:
    """Random and mutated datagrams through the C parser (clear RTP: no SRTP in the way, so
    every byte reaches it), bounded in count and time; then a good stream still works."""
    side = await make_side("video", {MID: 1, ABS_SEND_TIME: 3})
    side.dtls._rx_srtp = None  # clear RTP: the native side parses what it is given
    try:
        side.native = receive.NativeReceive(
            side.dtls, [side.receiver], -1, ("127.0.0.1", 9), lambda data, addr: None
        )
        side.native.native.set_clock(1_700_000_000.0)
        rng = random.Random(1234)
        wire = video_wire({MID: 1, ABS_SEND_TIME: 3}, 100, rng, padding=True)
        extensions = wire.extensions()
        good = [p.serialize(extensions) for p in wire.packets]
        deadline = time.monotonic() + 20
        datagrams = restarts = 0
        for _ in range(3000):
            if time.monotonic() > deadline:
                break
            batch = []
            for _ in range(16):
                base = bytearray(rng.choice(good))
                mode = rng.randrange(8)
                if mode == 0:
                    base = bytearray(rng.randbytes(rng.randrange(0, 1600)))
                    base[:1] = bytes([0x80 | rng.randrange(64)])
                elif mode == 1:
                    del base[rng.randrange(len(base)) :]  # truncated
                elif mode == 2:
                    base[0] = 0x80 | 0x0F | rng.choice((0, 0x10, 0x20, 0x30))  # CSRC count 15
                elif mode == 3 and len(base) > 16:
                    base[0] |= 0x10  # an extension length pointing anywhere
                    base[14:16] = rng.randbytes(2)
                elif mode == 4:
                    base[0] |= 0x20  # padding bigger than the payload
                    base[-1] = rng.randrange(256)
                elif mode == 5:
                    base[8:12] = rng.randbytes(4)  # SSRCs never negotiated
                    base[1] = (base[1] & 0x80) | rng.choice((96, 97, 111))
                elif mode == 6:
                    base[2:4] = rng.randbytes(2)  # sequence jumps
                    base[4:8] = rng.randbytes(4)
                else:
                    for _ in range(rng.randrange(1, 12)):  # flipped bytes anywhere
                        base[rng.randrange(len(base))] = rng.randrange(256)
                    if rng.random() < 0.1:
                        base += rng.randbytes(rng.randrange(1, 4000))  # oversized
                batch.append(bytes(base))
            datagrams += len(batch)
            if side.native.released:
                # an SSRC beyond the table ended it: start again from the Python objects
                restarts += 1
                side.dtls._rtp_router.ssrc_table.clear()
                side.dtls._rtp_router.ssrc_table[VIDEO_SSRC] = side.receiver
                side.native = receive.NativeReceive(
                    side.dtls, [side.receiver], -1, ("127.0.0.1", 9), lambda data, addr: None
                )
                side.native.native.set_clock(1_700_000_000.0)
            side.native.process(batch)
        counters = side.native.counters()
        assert datagrams > 1000
        assert restarts > 0  # more SSRCs than kept went back to Python
        assert counters["parse_failures"] > 0 and counters["dropped"] > 0
        assert counters["sources"] <= receive._native.MAX_SSRCS
        # every frame handed out is within the jitter buffer's bound
        assert all(len(bytes(f.packet)) <= 512 * receive._native.DGRAM_SIZE for f in side.frames)
    finally:
        if side.native is not None:
            side.native.release("test")
        await close_side(side)


def publisher_receivers(media_server: MediaServer, endpoint: str) -> list[Any]:
    element = media_server.registry.objects[endpoint]
    assert isinstance(element, WebRtcEndpoint) and element.pc is not None
    return [t.receiver for t in element.pc.getTransceivers()]


async def wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_publisher_is_received_natively_and_handed_back(
    native: Any, media_server: MediaServer, rpc: Rpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aiortc publisher's RTP reaches the viewers through the native receive path; a new
    nomination of the ICE pair hands it back to Python mid-stream without a gap viewers would
    notice, and the native path takes over again once the pair has settled."""
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    _, viewer = await view(rpc, pipeline, source)
    try:
        await viewer.wait_video(15)
        receivers = publisher_receivers(media_server, source)
        dtls = receivers[0].transport
        assert all(r.transport is dtls for r in receivers)  # bundled
        await wait_for(lambda: dtls.native_receive is not None)
        first = dtls.native_receive
        await wait_for(lambda: first.counters()["frames"] > 30)
        # RTCP (sender reports) and consent checks go to aiortc and aioice as before
        await wait_for(lambda: first.counters()["fallbacks"] > 0)
        await wait_for(lambda: any(r.sender_clock for r in receivers))
        counters = first.counters()
        assert counters["packets"] > 0 and counters["wakeups"] > 0
        streams = [s for r in receivers for s in r.media_streams().values()]
        assert len(streams) == 2 and all(s.packets_received > 0 for s in streams)
        assert dtls._RTCDtlsTransport__rx_packets >= sum(s.packets_received for s in streams)

        # re-nomination (aioice sets the component's pair again): back to Python at once
        pairs = dtls.transport._connection._nominated
        before = viewer.received.video_frames
        pairs[1] = pairs[1]
        assert first.released and dtls.native_receive is None
        received = [s.packets_received for s in streams]
        await viewer.wait_video(before + 15)
        assert [s.packets_received for s in streams] > received  # counted by aiortc now
        # ... and native again after the pair settled, from the same statistics
        await wait_for(lambda: dtls.native_receive is not None, 5)
        second = dtls.native_receive
        await wait_for(lambda: second.counters()["frames"] > 10)
        frames = viewer.received.video_frames
        await viewer.wait_video(frames + 15)
        assert viewer.received.non_black_frames > 0

        stats = await rpc.invoke(source, "getStats", mediaType="VIDEO")
        inbound = [s for s in stats.values() if s["type"] == "inboundrtp"]
        assert inbound and inbound[0]["packetsReceived"] > 0
        protocol = dtls.transport._connection._nominated[1].protocol
        assert "datagram_received" in protocol.__dict__
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)
    # the endpoint released: the socket's reading is aioice's again
    assert second.released and dtls.native_receive is None
    assert "datagram_received" not in protocol.__dict__


async def test_a_viewers_rtcp_is_read_natively(
    native: Any, media_server: MediaServer, rpc: Rpc
) -> None:
    """A viewer's endpoint only sends, so the native path has no track to serve there, but it
    reads the viewer's RTCP: decrypted in C, its receiver reports taken by the senders at once
    (round-trip time, loss), its feedback (NACK, PLI) handed to aiortc's handlers."""
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    endpoint, viewer = await view(rpc, pipeline, source)
    try:
        await viewer.wait_video(15)
        element = media_server.registry.objects[endpoint]
        assert isinstance(element, WebRtcEndpoint) and element.pc is not None
        senders = {t.kind: t.sender for t in element.pc.getTransceivers()}
        dtls = senders["video"].transport
        await wait_for(lambda: dtls.native_receive is not None)
        reading = dtls.native_receive
        assert reading.receivers == []
        received = dtls._RTCDtlsTransport__rx_packets
        await wait_for(lambda: reading.counters()["rtcp"] >= 4)
        await wait_for(lambda: all(s.round_trip_time > 0 for s in senders.values()))
        assert dtls._RTCDtlsTransport__rx_packets >= received + 4

        video = senders["video"]
        asking = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        nacks, plis = video.feedback_received.nack, video.feedback_received.pli
        last = asking._RTCRtpReceiver__remote_streams[video._ssrc].max_seq
        await asking._send_rtcp_nack(video._ssrc, [last])
        await asking._send_rtcp_pli(video._ssrc)
        await wait_for(lambda: video.feedback_received.nack > nacks)
        await wait_for(lambda: video.feedback_received.pli > plis)
        counters = reading.counters()
        assert counters["srtp_failures"] == 0 and counters["errors"] == 0
        assert dtls.native_receive is reading  # still native
    finally:
        await publisher.close()
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_a_receiver_that_handles_its_own_packets_stays_on_python(
    native: Any, media_server: MediaServer, rpc: Rpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's counting subscriber (bench/client.py) overrides `_handle_rtp_packet` to
    count frames by the marker bit. The native path skips that method, so it must leave such a
    transport alone: with it on in the subscriber processes too, bench.mediaserver_forwarding's
    subscribers counted nothing. Here the publisher's endpoint, in the same process, is still
    received natively."""
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    with monkeypatch.context() as patch:  # the subscriber's receivers only, not the server's
        patch.setattr(aiortc.rtcpeerconnection, "RTCRtpReceiver", CountingReceiver)
        subscriber = Subscriber()
    signaling = KurentoSignaling(media_server.url)  # as the benchmark's subscribers negotiate
    try:
        await signaling.subscribe(subscriber.pc, pipeline, source)
        async with asyncio.timeout(15):
            await subscriber.media.wait()
        frames = dict(subscriber.frames)
        await asyncio.sleep(2)  # 60 video frames and 100 audio packets are sent meanwhile
        assert subscriber.frames["video"] >= frames["video"] + 30, subscriber.frames
        assert subscriber.frames["audio"] >= frames["audio"] + 50, subscriber.frames
        viewing = subscriber.receivers["video"].transport
        assert getattr(viewing, "native_receive", None) is None
        published = publisher_receivers(media_server, source)[0].transport
        assert published.native_receive is not None
    finally:
        await subscriber.pc.close()
        await signaling.close()
        await publisher.close()
    await rpc.request("release", object=pipeline)


@pytest.mark.parametrize(
    "setup",
    [
        "import os; os.environ['MEDIASERVER_NATIVE'] = '0'",
        "import sys; sys.modules['mediaserver._receive'] = None",  # the import fails
        "import os; os.environ['MEDIASERVER_NATIVE_RECEIVE'] = '0'",
    ],
    ids=["MEDIASERVER_NATIVE=0", "not built", "MEDIASERVER_NATIVE_RECEIVE=0"],
)
def test_the_python_path_is_chosen_without_the_native_one(setup: str) -> None:
    code = (
        f"{setup}\n"
        "from mediaserver import receive\n"
        "assert not receive.native_available()\n"
        "assert receive.attach(None) is None\n"
        "print(receive.describe())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_NATIVE")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Python receive path" in result.stdout


def test_the_native_receive_path_is_on_by_default(native: Any) -> None:
    code = "from mediaserver import receive\nassert receive.native_available()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_NATIVE")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _bare_receiver(native: Any, fallback: Any) -> Any:
    """A Receiver with no track, no socket and clear (S)RTP, whatever it is given going to
    `fallback` or to its RTCP callback."""
    return native.Receiver(
        None,
        0,
        -1,
        ("127.0.0.1", 9),
        fallback,
        lambda *args: None,
        lambda reason: None,
        lambda *args: None,
        None,
        aiortc.clock.current_datetime,
        (0, 0, 0, 0, 0, 0, 0),
    )


def _rtcp_expected(data: bytes) -> list[tuple[int, ...]] | None:
    """The report blocks aiortc reads from a compound of receiver reports and SDES only, with
    no padding (what the native path reads itself); None for any other compound."""
    try:
        packets = RtcpPacket.parse(data)
    except ValueError:
        return None
    position = 0
    while position + 4 <= len(data):  # aiortc parsed it: the headers are all there
        if data[position] & 0x20 or data[position + 1] not in (201, 202):
            return None
        position += 4 + int.from_bytes(data[position + 2 : position + 4], "big") * 4
    return [
        (
            p.ssrc,
            r.ssrc,
            r.fraction_lost,
            r.packets_lost,
            r.highest_sequence,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for p in packets
        if isinstance(p, RtcpRrPacket)
        for r in p.reports
    ]


def test_report_blocks_are_read_as_aiortc_reads_them(native: Any) -> None:
    """The native path reads the report blocks of an RTCP compound made of receiver reports and
    SDES, and leaves every other compound (feedback, sender reports, padding, anything aiortc
    refuses) to aiortc's parser: for known compounds and a seeded fuzz of mutated ones."""
    seen: list[tuple[bytes, Any]] = []
    fallback: list[bytes] = []
    reader = _bare_receiver(native, lambda data, addr: fallback.append(data))
    reader.set_rtcp(lambda data, blocks: seen.append((data, blocks)))

    def block(ssrc: int, lost: int) -> RtcpReceiverInfo:
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=lost & 0xFF,
            packets_lost=lost,
            highest_sequence=70_000,
            jitter=12,
            lsr=0xDEADBEEF,
            dlsr=65_536,
        )

    sdes = bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=7, items=[(1, b"{cname}")])]))
    rr = bytes(RtcpRrPacket(ssrc=7, reports=[block(0x1234, 3)]))
    two = bytes(RtcpRrPacket(ssrc=8, reports=[block(0x1234, -5), block(0xFFFFFFFF, 2**23 - 1)]))
    remb = bytes(
        RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0, fci=pack_remb_fci(300_000, [0x1234])
        )
    )
    sr = bytes(RtcpSrPacket(ssrc=7, sender_info=RtcpSenderInfo(1, 2, 3, 4), reports=[block(9, 0)]))
    padded = bytes([rr[0] | 0x20, rr[1], rr[2], rr[3] + 1]) + rr[4:] + b"\x00\x00\x00\x04"
    known = {
        "RR+SDES": (rr + sdes, True),
        "two RRs, negative and largest loss": (two + rr + sdes, True),
        "RR+REMB": (rr + remb, False),
        "SR+SDES": (sr + sdes, False),
        "padding": (padded + sdes, False),
        "a block cut short": (rr[:-4] + sdes, False),
        "SDES cut short": (rr + sdes[:-6], False),
    }
    for name, (data, fast) in known.items():
        seen.clear()
        reader.process([data])
        assert len(seen) == 1 and seen[0][0] == data, name
        assert (seen[0][1] is not None) == fast, name
        assert seen[0][1] == _rtcp_expected(data), name

    generator = random.Random(16)
    read = {True: 0, False: 0}  # by whether C read the blocks
    samples = [rr + sdes, two + sdes, rr, sdes + two, rr + remb]
    for _ in range(3_000):
        data = bytearray(generator.choice(samples))
        for _ in range(generator.randint(1, 3)):
            spot = generator.randrange(len(data))
            if generator.random() < 0.5:
                data[spot] = generator.randrange(256)
            else:
                del data[spot:]
                if len(data) < 2:
                    data = bytearray(rr)
        data[0] = 0x80 | (data[0] & 0x3F)  # still an RTCP packet to the demultiplexer
        if data[1] not in range(192, 209):
            data[1] = generator.choice((201, 202, 206))
        seen.clear()
        reader.process([bytes(data)])
        assert len(seen) == 1
        assert seen[0][1] == _rtcp_expected(bytes(data)), bytes(data).hex()
        read[seen[0][1] is not None] += 1
    assert min(read.values()) > 300, read  # both ways, many times
    assert reader.counters()["errors"] == 0


def test_a_transports_receiver_stays_small(native: Any) -> None:
    """Every connected transport (a viewer's too) has a Receiver: recvmmsg's buffers are shared
    by all of them and a track's NACK set comes with the track, so an idle one holds a few KiB
    (it held about 100 KiB, all of it touched by the allocation's zeroing: 19 KiB of RSS more
    per subscriber in bench.mediaserver_forwarding)."""
    reader = _bare_receiver(native, lambda data, addr: None)
    assert sys.getsizeof(reader) < 16 * 1024, sys.getsizeof(reader)
