"""The forwarding plane: encoded media from a publishing element to every connected sink, never
decoded.

aiortc decodes every received frame on a thread of its own. In the media server's peer
connections the receivers are `ForwardingReceiver`s instead: they keep aiortc's SRTP, RTX
unwrapping, NACK generation, receiver reports and jitter buffer, and hand each reassembled
encoded frame to the element's `MediaHub` as an `av.Packet`. A hub fans the frame out to its
`SinkPad`s; a WebRtcEndpoint's pad hands it through a `PacketTrack` to a `ForwardingSender`,
which sends it at once: the frame is packetized once for all subscribers and each subscriber's
packets only get their own header (rtp_send.py).

The internals this relies on (name-mangled `RTCRtpReceiver` and `RTCRtpSender` state, the
module-level receiver and sender classes in `aiortc.rtcpeerconnection`) are why aiortc is pinned
exactly in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiortc.clock
import aiortc.rtcpeerconnection
import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)

from .frames import EncodedFrame
from .rtp_send import Packetizer, RtpWriter
from .transcoding import TRANSCODABLE, TranscodeWorker

logger = logging.getLogger(__name__)

# Set while the media server builds its own peer connections, so that only they forward; aiortc
# peers in the same process (tests, benchmarks) keep decoding as usual.
FORWARDING: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarding", default=False)

KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between keyframe requests sent to one publisher
# Frames kept for a sender that has not started yet; beyond that video restarts at a keyframe.
VIDEO_WAITING_FRAMES = 30
AUDIO_WAITING_FRAMES = 50

# Fire-and-forget RTCP sends, referenced until done so the loop cannot drop them.
_background: set[asyncio.Future[None]] = set()


def codec_name(codec: RTCRtpCodecParameters) -> str:
    return codec.mimeType.split("/", 1)[1].lower()


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether a reassembled encoded frame can be decoded on its own."""
    if not data:
        return False
    if codec == "vp8":
        return data[0] & 0x01 == 0  # the P bit of the VP8 frame tag
    if codec == "h264":
        return _h264_has_idr(data)
    return True  # audio frames stand alone


def _h264_has_idr(data: bytes) -> bool:
    # aiortc reassembles H.264 frames as Annex-B: NAL units behind 00 00 01 start codes.
    index = data.find(b"\x00\x00\x01")
    while index != -1 and index + 3 < len(data):
        if data[index + 3] & 0x1F in (5, 7):  # IDR slice, or the SPS that precedes one
            return True
        index = data.find(b"\x00\x00\x01", index + 3)
    return False


class MediaHub:
    """One element's outgoing stream of one kind, fanned out to every connected sink pad."""

    def __init__(self, kind: str, request_keyframe: Callable[[], None]) -> None:
        self.kind = kind
        self.sinks: list[SinkPad] = []
        self.codec: str | None = None
        self.frames = 0
        self.last_frame_at = 0.0
        self._request_upstream = request_keyframe
        self._last_request = -KEYFRAME_REQUEST_INTERVAL
        self._pending_request: asyncio.TimerHandle | None = None
        self.transcoders: dict[str, TranscodeWorker] = {}
        self.on_transcoding: Callable[[str, bool], None] | None = None

    def push(self, frame: EncodedFrame) -> None:
        self.codec = frame.codec
        self.frames += 1
        self.last_frame_at = time.monotonic()
        wanted: set[str] = set()
        for sink in tuple(self.sinks):
            target = sink.target_codec(frame.codec)
            if target is None:
                sink.deliver(frame)
            else:
                wanted.add(target)
        for target in wanted:
            self._transcoder(frame.codec, target).push(frame)
        for target in tuple(self.transcoders):
            if target not in wanted:
                self._stop_transcoder(target)

    def deliver_transcoded(self, frame: EncodedFrame) -> None:
        for sink in tuple(self.sinks):
            if sink.target_codec(self.codec or "") == frame.codec:
                sink.deliver(frame)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per interval; a request inside the
        interval is kept and sent when it ends, so a new subscriber never waits for nothing."""
        for transcoder in self.transcoders.values():
            transcoder.force_keyframe()
        now = time.monotonic()
        wait = self._last_request + KEYFRAME_REQUEST_INTERVAL - now
        if wait <= 0:
            self._last_request = now
            self._request_upstream()
        elif self._pending_request is None:
            self._pending_request = asyncio.get_running_loop().call_later(wait, self._send_pending)

    def _send_pending(self) -> None:
        self._pending_request = None
        self._last_request = time.monotonic()
        self._request_upstream()

    def _transcoder(self, source: str, target: str) -> TranscodeWorker:
        transcoder = self.transcoders.get(target)
        if transcoder is None or transcoder.source != source:
            if transcoder is not None:
                transcoder.close()
            transcoder = TranscodeWorker(source, target, self.deliver_transcoded)
            self.transcoders[target] = transcoder
            self._request_upstream()  # the decoder starts at a keyframe
            if self.on_transcoding is not None:
                self.on_transcoding(target, True)
        return transcoder

    def _stop_transcoder(self, target: str) -> None:
        self.transcoders.pop(target).close()
        if self.on_transcoding is not None:
            self.on_transcoding(target, False)

    def close(self) -> None:
        for sink in tuple(self.sinks):
            sink.disconnect()
        for target in tuple(self.transcoders):
            self._stop_transcoder(target)
        if self._pending_request is not None:
            self._pending_request.cancel()
            self._pending_request = None


class SinkPad:
    """One element's incoming stream of one kind. It has at most one source hub: connecting a new
    source replaces the old one, as in Kurento. Video starts at a keyframe."""

    def __init__(
        self,
        kind: str,
        deliver: Callable[[EncodedFrame], None],
        accepts: Callable[[], tuple[str, ...]] = lambda: (),
    ) -> None:
        self.kind = kind
        self.source: MediaHub | None = None
        self.frames = 0
        self.last_frame_at = 0.0
        self._deliver = deliver
        self._accepts = accepts
        self._waiting_keyframe = kind == "video"
        self.active = True  # an endpoint's pad turns active once its peer has negotiated

    def connect(self, hub: MediaHub) -> None:
        if self.source is hub:
            return
        self.disconnect()
        self.source = hub
        hub.sinks.append(self)
        self.resync()

    def disconnect(self) -> None:
        if self.source is not None:
            self.source.sinks.remove(self)
            self.source = None

    def resync(self) -> None:
        """Skip frames until the next keyframe, and ask for one."""
        if self.kind == "video":
            self._waiting_keyframe = True
            if self.active:
                self.request_keyframe()

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    def target_codec(self, codec: str) -> str | None:
        """The codec this sink needs instead of `codec`, or None when it takes `codec` as is."""
        if self.kind != "video":
            return None  # audio is never transcoded
        accepted = self._accepts()
        if not accepted or codec in accepted:
            return None
        return next((c for c in accepted if c in TRANSCODABLE), None)

    def deliver(self, frame: EncodedFrame) -> None:
        if not self.active:
            return
        if self._waiting_keyframe:
            if not frame.keyframe:
                return
            self._waiting_keyframe = False
        self.frames += 1
        self.last_frame_at = time.monotonic()
        self._deliver(frame)


class PacketTrack(MediaStreamTrack):
    """The hand-off from an endpoint's sink pad to its `ForwardingSender`: once the sender runs,
    each frame put here is sent at once and nothing queues; the track is never pulled (`recv`).

    Frames put before the sender starts (between negotiation and the DTLS handshake) wait here
    and are sent when it starts, so a viewer begins at the keyframe its pad waited for. Beyond
    30 video (50 audio) frames they are dropped and `on_overflow` (the pad's resync) makes the
    stream start again at the next keyframe."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.sender: ForwardingSender | None = None
        self.on_overflow: Callable[[], None] | None = None
        self._waiting: list[EncodedFrame] = []
        self._limit = VIDEO_WAITING_FRAMES if kind == "video" else AUDIO_WAITING_FRAMES

    def put(self, frame: EncodedFrame) -> None:
        if self.sender is not None:
            self.sender.send_frame(frame)
            return
        if self.readyState != "live":
            return  # its sender has stopped
        if len(self._waiting) >= self._limit:
            self._waiting.clear()
            if self.on_overflow is not None and self.kind == "video":
                self.on_overflow()
                return
        self._waiting.append(frame)

    def attach(self, sender: ForwardingSender | None) -> None:
        self.sender = sender
        waiting, self._waiting = self._waiting, []
        if sender is not None:
            for frame in waiting:
                sender.send_frame(frame)

    async def recv(self) -> av.Packet:
        raise MediaStreamError("a PacketTrack is pushed to its ForwardingSender, never pulled")


@dataclass
class RtcpFeedback:
    """The RTCP feedback one side of a stream sent or received, as KMS's RTP statistics count
    it: picture loss and full intra requests, NACK packets, and the last REMB bitrate."""

    pli: int = 0
    fir: int = 0
    nack: int = 0
    remb: int = 0

    def count(self, packet: object, ssrc: int | None = None) -> None:
        """Count one feedback packet; a REMB counts only when it names `ssrc` (if given)."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nack += 1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            self.pli += 1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            self.fir += 1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if ssrc is None or ssrc in ssrcs:
                self.remb = bitrate


class BitrateMeter:
    """Bits per second sent over the last complete second (KMS's outbound `targetBitrate` is
    its RTP source's measured bitrate)."""

    def __init__(self) -> None:
        self._second = 0
        self._octets = 0
        self.bitrate = 0

    def add(self, octets: int, now: float) -> None:
        second = int(now)
        if second != self._second:
            self.bitrate = self._octets * 8 if second == self._second + 1 else 0
            self._second, self._octets = second, 0
        self._octets += octets

    def current(self, now: float) -> int:
        return self.bitrate if int(now) <= self._second + 1 else 0


class _NoDecoderThread:
    """Stands where aiortc keeps its decoder thread; there is none to join."""

    def join(self) -> None:
        pass


class _FrameHandoff:
    """Stands where aiortc keeps its decoder queue: each reassembled frame becomes an av.Packet."""

    def __init__(self, receiver: ForwardingReceiver) -> None:
        self._receiver = receiver
        self._packetizers: dict[int, Packetizer] = {}  # by payload type

    def put(self, item: tuple[RTCRtpCodecParameters, object] | None) -> None:
        on_frame = self._receiver.on_frame
        if item is None or on_frame is None:
            return
        codec, jitter_frame = item
        data: bytes = jitter_frame.data  # type: ignore[attr-defined]
        packet = av.Packet(data)
        packet.pts = jitter_frame.timestamp  # type: ignore[attr-defined]
        packet.time_base = Fraction(1, codec.clockRate)
        name = codec_name(codec)
        packetizer = self._packetizers.get(codec.payloadType)
        if packetizer is None:
            packetizer = self._packetizers[codec.payloadType] = Packetizer(codec)
        frame = EncodedFrame(
            packet=packet,
            codec=name,
            keyframe=is_keyframe(name, data),
            packetizer=packetizer,
            captured=self._receiver.capture_time(jitter_frame.timestamp, codec.clockRate),  # type: ignore[attr-defined]
        )
        on_frame(frame)


class ForwardingReceiver(RTCRtpReceiver):
    """aiortc's receiver, minus the decoder, when created by the media server."""

    def __init__(self, kind: str, transport: object) -> None:
        super().__init__(kind, transport)  # type: ignore[arg-type]
        self.forwarding = FORWARDING.get()
        self.on_frame: Callable[[EncodedFrame], None] | None = None
        self.sender_clock: tuple[int, int] | None = None  # NTP and RTP time of the last report
        if self.forwarding:
            self._RTCRtpReceiver__decoder_queue = _FrameHandoff(self)
        self.feedback_sent = RtcpFeedback()
        self.octets_received: dict[int, int] = {}  # RTP payload octets by SSRC
        self.last_heard_at = 0.0  # when RTP or RTCP last came from the peer (monotonic)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.last_heard_at = time.monotonic()
        self.octets_received[packet.ssrc] = self.octets_received.get(packet.ssrc, 0) + len(
            packet.payload
        )
        await super()._handle_rtp_packet(packet, arrival_time_ms)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        self.last_heard_at = time.monotonic()
        await super()._handle_rtcp_packet(packet)

    async def _send_rtcp(self, packet: Any) -> None:
        self.feedback_sent.count(packet)
        await super()._send_rtcp(packet)

    async def receive(self, parameters) -> None:  # type: ignore[no-untyped-def]
        if not self.forwarding:
            await super().receive(parameters)
            return
        if self._RTCRtpReceiver__started:
            return
        for codec in parameters.codecs:
            self._RTCRtpReceiver__codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._RTCRtpReceiver__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self._RTCRtpReceiver__decoder_thread = _NoDecoderThread()
        self._RTCRtpReceiver__transport._register_rtp_receiver(self, parameters)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        await super()._handle_rtcp_packet(packet)
        if (
            isinstance(packet, RtcpSrPacket)
            and packet.sender_info.ntp_timestamp
            and packet.ssrc in self.media_streams()  # not a sender that has sent nothing yet
        ):
            info = packet.sender_info
            self.sender_clock = (info.ntp_timestamp, info.rtp_timestamp)

    def capture_time(self, frame_timestamp: int, clock_rate: int) -> float | None:
        """When the sender captured the frame with this (aiortc's, zero-based) timestamp, in
        seconds of its wall clock: its last sender report maps its RTP clock to that (RFC 3550
        section 6.4.1)."""
        origin = self._RTCRtpReceiver__timestamp_mapper._origin
        if self.sender_clock is None or origin is None:
            return None
        ntp, reported = self.sender_clock
        rtp_timestamp = (frame_timestamp + origin) % 2**32
        step = ((rtp_timestamp - reported + 2**31) % 2**32 - 2**31) / clock_rate
        return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32 + step

    def media_streams(self) -> dict[int, Any]:
        """aiortc's receive statistics per media SSRC (retransmission streams left out)."""
        rtx = self._RTCRtpReceiver__rtx_ssrc
        streams = self._RTCRtpReceiver__remote_streams
        return {ssrc: stream for ssrc, stream in streams.items() if ssrc not in rtx}

    @staticmethod
    def fraction_lost(stream: Any) -> int:
        """The fraction lost (in 1/256) the next receiver report will carry for this stream.
        aiortc's `fraction_lost` property starts a new interval when read, so reading it for
        statistics would skew the reports; this reads the same counters without touching them."""
        expected = stream.packets_expected - stream._expected_prior
        lost = expected - (stream.packets_received - stream._received_prior)
        return (lost << 8) // expected if expected > 0 and lost > 0 else 0

    @staticmethod
    def jitter_seconds(stream: Any) -> float:
        return stream.jitter / stream._clockrate if stream._clockrate else 0.0

    def request_keyframe(self) -> None:
        """Send a PLI for every media stream received lately (RFC 4585 section 6.3.1)."""
        rtx = self._RTCRtpReceiver__rtx_ssrc
        for source in self.getSynchronizationSources():
            if source.source in rtx:
                continue
            task = asyncio.ensure_future(self._send_rtcp_pli(source.source))
            _background.add(task)
            task.add_done_callback(_background.discard)


class ForwardingSender(RTCRtpSender):
    """aiortc's sender, when created by the media server, sending frames as its `PacketTrack`
    hands them over instead of pulling, packetizing and awaiting each packet in `_run_rtp`.

    aiortc's `send()`, `stop()`, RTCP (sender reports, SDES, BYE, round-trip time) and RTCP
    feedback handling stay: `_run_rtp` is replaced by a task that only parks while an `RtpWriter`
    sends (see rtp_send.py), `_retransmit` answers NACKs from the writer's history, and the
    counters aiortc's reports and stats read (name-mangled `__packet_count`, `__octet_count`,
    `__ntp_timestamp`, `__rtp_timestamp`; the DTLS transport's `__tx_packets`, `__tx_bytes`) are
    kept up to date here. PLI/FIR reach `_send_keyframe`, which the endpoint points at its pad."""

    def __init__(self, trackOrKind: MediaStreamTrack | str, transport: Any) -> None:
        super().__init__(trackOrKind, transport)
        self.forwarding = FORWARDING.get()
        self.writer: RtpWriter | None = None
        self.feedback_received = RtcpFeedback()
        self.bitrate = BitrateMeter()
        # From the peer's last receiver report on this stream: cumulative packets lost and the
        # fraction lost since the report before (RFC 3550, in 1/256).
        self.packets_lost = 0
        self.fraction_lost = 0
        self.last_heard_at = 0.0  # when RTCP last came from the peer for this stream

    @property
    def round_trip_time(self) -> float:
        """aiortc's estimate from the peer's receiver reports, in seconds (0 until known)."""
        return self._RTCRtpSender__rtt or 0.0

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        self.last_heard_at = time.monotonic()
        self.feedback_received.count(packet, self._ssrc)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    self.packets_lost = report.packets_lost
                    self.fraction_lost = report.fraction_lost
        await super()._handle_rtcp_packet(packet)

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        if not self.forwarding:
            await super()._run_rtp(codec)
            return
        self._RTCRtpSender__rtp_started.set()
        self.writer = RtpWriter(
            transport=self.transport,
            ssrc=self._ssrc,
            payload_type=codec.payloadType,
            rtx_ssrc=self._rtx_ssrc,
            rtx_payload_type=self._RTCRtpSender__rtx_payload_type,
            extensions_map=self._RTCRtpSender__rtp_header_extensions_map,
            mid=self._RTCRtpSender__mid,
        )
        track = self.track
        if isinstance(track, PacketTrack):
            track.attach(self)
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels
        except asyncio.CancelledError:
            pass
        finally:
            self.writer = None
            if isinstance(track, PacketTrack) and track.sender is self:
                track.attach(None)
                track.stop()  # as aiortc's _run_rtp does when it ends
            self._RTCRtpSender__rtp_exited.set()

    def send_frame(self, frame: EncodedFrame) -> None:
        writer = self.writer
        if writer is None or not self._enabled:
            return
        rtp = frame.rtp()
        if not rtp.payloads:
            return
        ntp_time = ntp_now()
        timestamp = writer.send(rtp, ntp_time)
        if timestamp is None:
            return
        # What aiortc's _run_rtp records per packet, for sender reports and getStats.
        self._RTCRtpSender__ntp_timestamp = ntp_time
        self._RTCRtpSender__rtp_timestamp = timestamp
        self._RTCRtpSender__packet_count += len(rtp.payloads)
        self._RTCRtpSender__octet_count += rtp.octets
        self.bitrate.add(writer.wire_octets, time.monotonic())
        self._count_wire(len(rtp.payloads), writer.wire_octets)

    async def _retransmit(self, sequence_number: int) -> None:
        if self.writer is None:
            await super()._retransmit(sequence_number)
        elif self.writer.retransmit(sequence_number):
            self._count_wire(1, self.writer.wire_octets)

    def _count_wire(self, packets: int, octets: int) -> None:
        """What `RTCDtlsTransport._send_rtp` counts for the transport's stats."""
        transport = self.transport
        transport._RTCDtlsTransport__tx_packets += packets
        transport._RTCDtlsTransport__tx_bytes += octets


_NTP_UNIX_OFFSET_NS = 2_208_988_800 * 1_000_000_000  # 1900-01-01 to 1970-01-01


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp: aiortc's `clock.current_ntp_time`, computed
    from `time.time_ns()` instead of datetime arithmetic (it runs for every packet sent)."""
    seconds, nanoseconds = divmod(time.time_ns() + _NTP_UNIX_OFFSET_NS, 1_000_000_000)
    return (seconds << 32) | (nanoseconds << 32) // 1_000_000_000


def install() -> None:
    """Make aiortc's peer connections build ForwardingReceivers and ForwardingSenders
    (idempotent), and give aiortc a cheaper clock for the per-packet send-time stamp (same
    values)."""
    aiortc.rtcpeerconnection.RTCRtpReceiver = ForwardingReceiver  # type: ignore[misc]
    aiortc.rtcpeerconnection.RTCRtpSender = ForwardingSender  # type: ignore[misc]
    aiortc.clock.current_ntp_time = ntp_now
