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
import contextlib
import contextvars
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiortc.clock
import aiortc.rtcdtlstransport
import aiortc.rtcpeerconnection
import av
import pylibsrtp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTT_ALPHA, RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from aiortc.stats import RTCRemoteInboundRtpStreamStats, RTCStatsReport

from . import fanout, receive
from .frames import EncodedFrame
from .pairs import WatchedPairs
from .rtp_send import Packetizer, RtpWriter
from .transcoding import TRANSCODABLE, TranscodeWorker

logger = logging.getLogger(__name__)

# Set while the media server builds its own peer connections, so that only they forward; aiortc
# peers in the same process (tests, benchmarks) keep decoding as usual.
FORWARDING: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarding", default=False)

KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between keyframe requests sent to one publisher
# RTCP sender reports: aiortc's interval (RFC 3550 section 6.2's T, fixed at 1 s), each one
# drawn anew from [0.5, 1.5] times it (section 6.3.1).
REPORT_INTERVAL = 1.0
# A pad whose chain could not join its hub's fan-out group (its sender not started or not
# connected yet, a TURN or TCP route, a send queue not drained) asks again after this long,
# not on every frame: the check walks the sender's transports.
JOIN_RETRY_INTERVAL = 0.5
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
    """One element's outgoing stream of one kind, fanned out to every connected sink pad.

    Pads whose chain is pure forwarding (an endpoint's pad whose sender runs, connected, on a
    plain UDP socket, nothing transcoded for it) join the hub's `fanout` group: one call per
    frame writes, protects and sends every member's packets (fanout.py), and one call per
    report interval sends every member's RTCP sender report (its sender's own report loop is
    suspended meanwhile, see ForwardingSender). The other pads get each frame one by one, as
    before."""

    def __init__(self, kind: str, request_keyframe: Callable[[], None]) -> None:
        self.kind = kind
        self.sinks: list[SinkPad] = []
        self.fanout = fanout.Group()
        self._fanout_codec: str | None = None
        self._members: dict[SinkPad, Any] = {}  # pad -> its writer in the group
        self._direct: tuple[SinkPad, ...] = ()  # the sinks not in the group
        self.codec: str | None = None
        self.frames = 0
        self.last_frame_at = 0.0
        self._request_upstream = request_keyframe
        self._last_request = -KEYFRAME_REQUEST_INTERVAL
        self._pending_request: asyncio.TimerHandle | None = None
        self._reports: asyncio.TimerHandle | None = None  # the group's next sender reports
        self.transcoders: dict[str, TranscodeWorker] = {}
        self.on_transcoding: Callable[[str, bool], None] | None = None

    def push(self, frame: EncodedFrame) -> None:
        self.codec = frame.codec
        self.frames += 1
        now = self.last_frame_at = time.monotonic()
        if self._members:
            rtp = frame.rtp() if frame.codec == self._fanout_codec else None
            if rtp is None or len(rtp.payloads) > fanout.MAX_FRAME_PACKETS:
                for pad in tuple(self._members):  # they take this frame one by one below
                    pad.leave_fanout()
            elif rtp.payloads:
                try:
                    self.fanout.send(rtp.payloads, rtp.timestamp, ntp_now(), now)
                except (pylibsrtp.Error, ValueError, TypeError, RuntimeError, OSError) as exc:
                    # Not expected: the frame is lost for the group, whose pads go back to
                    # the per-subscriber path (they rejoin on their next frame).
                    logger.warning("fan-out send of a %s frame failed: %s", frame.codec, exc)
                    for pad in tuple(self._members):
                        pad.leave_fanout()
        wanted: set[str] = set()
        for sink in self._direct:
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

    def add_sink(self, pad: SinkPad) -> None:
        self.sinks.append(pad)
        self._direct = tuple(s for s in self.sinks if s not in self._members)

    def remove_sink(self, pad: SinkPad) -> None:
        self.sinks.remove(pad)
        self._direct = tuple(s for s in self.sinks if s not in self._members)

    def join(self, pad: SinkPad, writer: Any, codec: str) -> bool:
        """Send `pad`'s frames of `codec` through the group from the next frame on."""
        if self._members and codec != self._fanout_codec:
            return False
        self._fanout_codec = codec
        self._members[pad] = writer
        self.fanout.add(writer)
        self._direct = tuple(s for s in self.sinks if s not in self._members)
        if self._reports is None:
            self._schedule_reports()
        return True

    def leave(self, pad: SinkPad) -> None:
        writer = self._members.pop(pad, None)
        if writer is not None:
            self.fanout.remove(writer)
        self._direct = tuple(s for s in self.sinks if s not in self._members)
        if not self._members and self._reports is not None:
            self._reports.cancel()
            self._reports = None

    def _schedule_reports(self) -> None:
        wait = REPORT_INTERVAL * (0.5 + random.random())
        self._reports = asyncio.get_running_loop().call_later(wait, self._send_reports)

    def _send_reports(self) -> None:
        """Every member's sender report whose sender has handed its reports to the group, in
        one call; each member sees aiortc's randomized interval (the draw is the hub's)."""
        self._reports = None
        if not self._members:
            return
        try:
            self.fanout.send_reports(time.time())
        except (pylibsrtp.Error, ValueError, TypeError, RuntimeError, OSError) as exc:
            logger.warning("fan-out sender reports failed: %s", exc)  # not expected
        self._schedule_reports()

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
        if self._reports is not None:
            self._reports.cancel()
            self._reports = None


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
        self._frames = 0
        self._last_frame_at = 0.0
        self._deliver = deliver
        self._accepts = accepts
        self._waiting_keyframe = kind == "video"
        self._active = True  # an endpoint's pad turns active once its peer has negotiated
        # Set by an endpoint whose frames can go out through the hub's fan-out group: given a
        # frame just delivered, the writer to join with (or None: not pure forwarding now) and
        # the callable that undoes what joining set up.
        self.fanout: Callable[[EncodedFrame, SinkPad], tuple[Any, Callable[[], None]] | None]
        self.fanout = None  # type: ignore[assignment]
        self._member: tuple[Any, Callable[[], None]] | None = None
        self._joined_at = 0  # the hub's frame count when this pad joined its group
        self._join_retry_at = 0.0  # no attempt to join before then (monotonic)

    @property
    def frames(self) -> int:
        """Frames delivered (through the hub's group too)."""
        if self._member is not None and self.source is not None:
            return self._frames + self.source.frames - self._joined_at
        return self._frames

    @property
    def last_frame_at(self) -> float:
        if self._member is not None and self.source is not None:
            return self.source.last_frame_at
        return self._last_frame_at

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, active: bool) -> None:
        self._active = active
        self._join_retry_at = 0.0
        if not active:
            self.leave_fanout()

    def connect(self, hub: MediaHub) -> None:
        if self.source is hub:
            return
        self.disconnect()
        self._join_retry_at = 0.0
        self.source = hub
        hub.add_sink(self)
        self.resync()

    def disconnect(self) -> None:
        if self.source is not None:
            self.leave_fanout()
            self.source.remove_sink(self)
            self.source = None

    def leave_fanout(self) -> None:
        """Take frames one by one again (from the hub's next frame on)."""
        member, self._member = self._member, None
        if member is None:
            return
        hub = self.source
        if hub is not None:
            self._frames += hub.frames - self._joined_at
            self._last_frame_at = hub.last_frame_at
            hub.leave(self)
        member[1]()

    def resync(self) -> None:
        """Skip frames until the next keyframe, and ask for one."""
        self.leave_fanout()  # the chain is looked at again on the next frame delivered
        self._join_retry_at = 0.0
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
        self._frames += 1
        now = self._last_frame_at = time.monotonic()
        self._deliver(frame)
        if (
            self.fanout is not None
            and self._member is None
            and self.source is not None
            and now >= self._join_retry_at
        ):
            self._join(frame, now)

    def _join(self, frame: EncodedFrame, now: float) -> None:
        hub = self.source
        assert hub is not None
        if frame.codec != hub.codec:
            return  # transcoded for this pad
        member = self.fanout(frame, self)
        if member is None:
            self._join_retry_at = now + JOIN_RETRY_INTERVAL
            return
        if hub.join(self, member[0], frame.codec):
            self._member = member
            self._joined_at = hub.frames
        else:
            member[1]()
            self._join_retry_at = now + JOIN_RETRY_INTERVAL


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


class _NothingSent:
    """The bitrate of a sender that has no stream yet."""

    @staticmethod
    def current(now: float) -> int:
        return 0


# libsrtp keeps a replay window for the streams a session sends too, and shifts its bit vector
# for every packet protected: aiortc asks for 1024 packets, which is 1,400 of the ~5,900
# instructions a packet's protection costs. A sender's window only has to cover the packets a
# NACK may ask again under their own sequence number (retransmissions without RTX; with RTX they
# are new packets of the RTX stream): 256 covers more than a second of 720p video.
SEND_REPLAY_WINDOW = 256


class _SendWindowPolicy(pylibsrtp.Policy):
    """pylibsrtp's Policy, whose replay window is SEND_REPLAY_WINDOW for outbound streams."""

    @property
    def window_size(self) -> int:
        return pylibsrtp.Policy.window_size.fget(self)  # type: ignore[attr-defined]

    @window_size.setter
    def window_size(self, size: int) -> None:
        if self.ssrc_type == pylibsrtp.Policy.SSRC_ANY_OUTBOUND:
            size = min(size, SEND_REPLAY_WINDOW)
        pylibsrtp.Policy.window_size.fset(self, size)  # type: ignore[attr-defined]


class ForwardingDtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport, whose sent-packet and -byte counts (name-mangled `__tx_packets`,
    `__tx_bytes`, in its stats) include what its senders' writers sent, read from the writers
    when asked instead of counted per packet, and whose sending SRTP session has a smaller
    replay window (SEND_REPLAY_WINDOW)."""

    def _setup_srtp(self) -> None:
        # aiortc builds both sessions' policies in this one method, from the module's `Policy`.
        module = aiortc.rtcdtlstransport
        module.Policy = _SendWindowPolicy  # type: ignore[misc]
        try:
            super()._setup_srtp()
        finally:
            module.Policy = pylibsrtp.Policy  # type: ignore[misc]

    native_receive: receive.NativeReceive | None = None  # while its RTP is received natively
    native_refused = False  # a packet the native path does not handle came: Python's for good

    def _set_state(self, state: Any) -> None:
        super()._set_state(state)
        if state == State.CONNECTED:
            # once the receivers registered in the same step have started
            asyncio.get_running_loop().call_soon(receive.attach, self)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.writers: list[Any] = []  # fanout writers sending over this transport
        self._tx_base = [0, 0]  # what aiortc counted itself (RTCP, data)
        super().__init__(*args, **kwargs)

    def _written(self, index: int) -> int:
        # RTP and retransmissions, and the sender reports a hub's group sent
        if index == 0:
            return sum(w.wire_packets + w.rtcp_packets for w in self.writers)
        return sum(w.wire_octets + w.rtcp_octets for w in self.writers)

    _RTCDtlsTransport__tx_packets = property(
        lambda self: self._tx_base[0] + self._written(0),
        lambda self, value: self._tx_base.__setitem__(0, value - self._written(0)),
    )
    _RTCDtlsTransport__tx_bytes = property(
        lambda self: self._tx_base[1] + self._written(1),
        lambda self, value: self._tx_base.__setitem__(1, value - self._written(1)),
    )


class _NoDecoderThread:
    """Stands where aiortc keeps its decoder thread; there is none to join."""

    def join(self) -> None:
        pass


class _FrameHandoff:
    """Stands where aiortc keeps its decoder queue: each reassembled frame becomes an av.Packet."""

    def __init__(self, receiver: ForwardingReceiver) -> None:
        self._receiver = receiver
        # by payload type: the codec's name, time base and packetizer
        self._streams: dict[int, tuple[str, Fraction, Packetizer]] = {}

    def put(self, item: tuple[RTCRtpCodecParameters, object] | None) -> None:
        on_frame = self._receiver.on_frame
        if item is None or on_frame is None:
            return
        codec, jitter_frame = item
        stream = self._streams.get(codec.payloadType)
        if stream is None:
            stream = (codec_name(codec), Fraction(1, codec.clockRate), Packetizer(codec))
            self._streams[codec.payloadType] = stream
        name, time_base, packetizer = stream
        data: bytes = jitter_frame.data  # type: ignore[attr-defined]
        timestamp: int = jitter_frame.timestamp  # type: ignore[attr-defined]
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = time_base
        frame = EncodedFrame(
            packet=packet,
            codec=name,
            keyframe=is_keyframe(name, data),
            packetizer=packetizer,
            captured=self._receiver.capture_time(timestamp, codec.clockRate),
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

    _enabled_flag = True

    @property
    def _enabled(self) -> bool:
        return self._enabled_flag

    @_enabled.setter
    def _enabled(self, enabled: bool) -> None:
        self._enabled_flag = enabled
        if not enabled and self.forwarding:
            receive.release(self.transport, "receiver disabled")

    async def stop(self) -> None:
        if self.forwarding:
            receive.release(self.transport, "receiver stopped")
        await super().stop()

    def _handle_disconnect(self) -> None:
        if self.forwarding:
            receive.release(self.transport, "transport disconnected")
        super()._handle_disconnect()

    @property
    def receivable_natively(self) -> bool:
        """Whether the native receive path may serve this receiver: it skips
        `_handle_rtp_packet`, so a subclass that overrides it (the benchmark's counting
        subscriber) must see its packets in Python."""
        return self.forwarding and (
            type(self)._handle_rtp_packet is ForwardingReceiver._handle_rtp_packet
        )

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.last_heard_at = time.monotonic()
        self.octets_received[packet.ssrc] = self.octets_received.get(packet.ssrc, 0) + len(
            packet.payload
        )
        await super()._handle_rtp_packet(packet, arrival_time_ms)

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
        transport = self._RTCRtpReceiver__transport
        if transport.state == "connected":  # renegotiated: the native path takes it in too
            asyncio.get_running_loop().call_soon(receive.attach, transport)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        self.last_heard_at = time.monotonic()
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

    aiortc's `send()`, `stop()` and RTCP feedback handling stay: `_run_rtp` is replaced by a task
    that only parks while an `RtpWriter` sends (see rtp_send.py), and `_retransmit` answers NACKs
    from the writer's history. The peer's receiver reports are taken by `_take_report_block`
    (aiortc's round-trip time and loss, without a statistics object per report). The
    counters aiortc's reports and stats read (name-mangled `__packet_count`, `__octet_count`,
    `__ntp_timestamp`, `__rtp_timestamp`; the DTLS transport's `__tx_packets`, `__tx_bytes`, see
    ForwardingDtlsTransport) are read from the writer's stream when asked: frames may reach it
    through the hub's fan-out group, without passing here. PLI/FIR reach `_send_keyframe`, which
    the endpoint points at its pad.

    Sender reports: `_run_rtcp` sends aiortc's report (the same bytes, fanout.sender_report)
    at aiortc's randomized interval, except while the sender is a member of a hub's fan-out
    group: then the hub sends every member's report in one call (`Group.send_reports`) and
    this loop waits until the sender leaves the group. aiortc's round-trip time estimate reads
    the last report's `__lsr` and `__lsr_time`, from whichever sent it last."""

    _stream: Any = None  # the writer's stream, kept after the writer stops (for the counters)
    _enabled_flag = True
    _counted = (0, 0)  # packets and octets aiortc counted itself (when not forwarding)
    _clock = (0, 0)  # NTP and RTP timestamps aiortc set itself
    _own_report: tuple[int | None, float | None] = (None, None)  # aiortc's __lsr, __lsr_time
    # The peer's last report block on this stream: arrival (time.time()), the reporter's SSRC,
    # the block, and the packets sent then.
    _report_block: tuple[float, int, RtcpReceiverInfo, int] | None = None

    def __init__(self, trackOrKind: MediaStreamTrack | str, transport: Any) -> None:
        self._fanout_leave: Callable[[], None] | None = None
        self._fanout_watched: tuple[Any, Any, Any] | None = None
        # Pending while the hub's group sends this sender's reports (see _run_rtcp).
        self._reports_resumed: asyncio.Future[None] | None = None
        super().__init__(trackOrKind, transport)
        self.forwarding = FORWARDING.get()
        self.writer: RtpWriter | None = None
        self.feedback_received = RtcpFeedback()
        # From the peer's last receiver report on this stream: cumulative packets lost and the
        # fraction lost since the report before (RFC 3550, in 1/256).
        self.packets_lost = 0
        self.fraction_lost = 0
        self.last_heard_at = 0.0  # when RTCP last came from the peer for this stream

    # -- the counters aiortc reads, from the writer's stream -------------------------------------

    def _get_packet_count(self) -> int:
        stream = self._stream
        return self._counted[0] + (stream.packets if stream is not None else 0)

    def _set_packet_count(self, value: int) -> None:
        stream = self._stream
        self._counted = (value - (stream.packets if stream is not None else 0), self._counted[1])

    def _get_octet_count(self) -> int:
        stream = self._stream
        return self._counted[1] + (stream.octets if stream is not None else 0)

    def _set_octet_count(self, value: int) -> None:
        stream = self._stream
        self._counted = (self._counted[0], value - (stream.octets if stream is not None else 0))

    def _get_ntp_timestamp(self) -> int:
        stream = self._stream
        return stream.ntp_timestamp if stream is not None and stream.packets else self._clock[0]

    def _set_ntp_timestamp(self, value: int) -> None:
        self._clock = (value, self._clock[1])

    def _get_rtp_timestamp(self) -> int:
        stream = self._stream
        return stream.rtp_timestamp if stream is not None and stream.packets else self._clock[1]

    def _set_rtp_timestamp(self, value: int) -> None:
        self._clock = (self._clock[0], value)

    def _last_report(self) -> tuple[int | None, float | None]:
        """aiortc's `__lsr` and `__lsr_time`: the middle 32 bits of the last sender report's NTP
        timestamp and when it was sent, whether this sender or the hub's group sent it."""
        stream = self._stream
        own = self._own_report
        if stream is not None and stream.report_time and stream.report_time > (own[1] or 0.0):
            return (stream.report_ntp >> 16) & 0xFFFFFFFF, stream.report_time
        return own

    def _set_lsr(self, value: int | None) -> None:
        self._own_report = (value, self._own_report[1])

    def _set_lsr_time(self, value: float | None) -> None:
        self._own_report = (self._own_report[0], value)

    _RTCRtpSender__lsr = property(lambda self: self._last_report()[0], _set_lsr)
    _RTCRtpSender__lsr_time = property(lambda self: self._last_report()[1], _set_lsr_time)
    _RTCRtpSender__packet_count = property(_get_packet_count, _set_packet_count)
    _RTCRtpSender__octet_count = property(_get_octet_count, _set_octet_count)
    _RTCRtpSender__ntp_timestamp = property(_get_ntp_timestamp, _set_ntp_timestamp)
    _RTCRtpSender__rtp_timestamp = property(_get_rtp_timestamp, _set_rtp_timestamp)

    @property
    def _enabled(self) -> bool:
        return self._enabled_flag

    @_enabled.setter
    def _enabled(self, enabled: bool) -> None:
        self._enabled_flag = enabled
        if not enabled:
            self._fanout_invalidate()

    @property
    def bitrate(self) -> Any:
        """Its `current(now)`: bits per second sent over the last complete second (KMS's
        outbound `targetBitrate` is its RTP source's measured bitrate)."""
        return self._stream if self._stream is not None else _NothingSent

    # -- the hub's fan-out group ---------------------------------------------------------------

    def fanout_member(self, leave: Callable[[], None]) -> tuple[Any, Callable[[], None]] | None:
        """The writer's stream, to be sent through a hub's fan-out group, when this sender is
        pure forwarding now: running and enabled, DTLS connected, the nominated pair a plain
        UDP socket with nothing queued. `leave` is called when that stops being so (DTLS or
        ICE state change, another nominated pair, stop, disabled); the second item undoes the
        watching."""
        writer = self.writer
        if writer is None or not self._enabled or self._fanout_leave is not None:
            return None
        route = writer._sendto()
        if route is None:
            return None
        _, datagrams, address = route
        if fanout.socket_of(datagrams, address) < 0 or datagrams.get_write_buffer_size():
            return None
        dtls = self.transport
        ice = dtls.transport
        connection = ice._connection
        pairs = connection._nominated
        if type(pairs) is dict:
            pairs = connection._nominated = WatchedPairs(pairs)
        if not isinstance(pairs, WatchedPairs):
            return None
        writer.route(direct=True)
        self._fanout_leave = leave
        dtls.on("statechange", self._fanout_invalidate)
        ice.on("statechange", self._fanout_invalidate)
        pairs.watchers.append(self._fanout_invalidate)
        self._fanout_watched = (dtls, ice, pairs)
        self._hand_reports_to(writer.stream)
        return writer.stream, self._fanout_release

    def _hand_reports_to(self, stream: Any) -> None:
        """Let the group send this sender's reports, when the stream's counters are all they
        carry (nothing counted by aiortc itself) and the CNAME fits an SDES item."""
        cname = self._RTCRtpSender__cname
        data = None if cname is None else cname.encode("utf8")
        if data is not None and len(data) > fanout.MAX_CNAME:
            return
        if self._counted != (0, 0) or self._clock != (0, 0) or not self.forwarding:
            return
        stream.set_reports(data)
        if self._reports_resumed is None:
            self._reports_resumed = asyncio.get_running_loop().create_future()

    def _take_reports_back(self) -> None:
        if self._stream is not None:
            self._stream.stop_reports()
        resumed, self._reports_resumed = self._reports_resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def _fanout_release(self) -> None:
        """Stop watching (the pad left the group)."""
        self._take_reports_back()
        self._fanout_leave = None
        watched, self._fanout_watched = self._fanout_watched, None
        if watched is not None:
            dtls, ice, pairs = watched
            dtls.remove_listener("statechange", self._fanout_invalidate)
            ice.remove_listener("statechange", self._fanout_invalidate)
            if self._fanout_invalidate in pairs.watchers:
                pairs.watchers.remove(self._fanout_invalidate)
        if self.writer is not None:
            self.writer.unroute()  # looked up again on the next send

    def _fanout_invalidate(self, *args: Any) -> None:
        leave = self._fanout_leave
        if leave is not None:
            leave()  # the pad leaves, which calls _fanout_release
        self._fanout_release()

    @property
    def round_trip_time(self) -> float:
        """aiortc's estimate from the peer's receiver reports, in seconds (0 until known)."""
        return self._RTCRtpSender__rtt or 0.0

    def take_rtcp(self, packet: Any) -> bool:
        """Handle the peer's reports (the RTCP a sender gets most) at once, without the
        statistics object aiortc's handler builds for each (getStats builds it once); False for
        any other packet (`_handle_rtcp_packet`'s). The native receive path calls this first."""
        if not isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            return False
        self.last_heard_at = time.monotonic()
        for report in packet.reports:
            if report.ssrc == self._ssrc:
                self._take_report_block(packet.ssrc, report)
        return True

    def take_report(self, reporter: int, report: RtcpReceiverInfo) -> None:
        """One report block about this sender's stream, read by the native receive path."""
        self.last_heard_at = time.monotonic()
        if report.ssrc == self._ssrc:
            self._take_report_block(reporter, report)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if self.take_rtcp(packet):
            return
        self.last_heard_at = time.monotonic()
        self.feedback_received.count(packet, self._ssrc)
        await super()._handle_rtcp_packet(packet)

    def _take_report_block(self, reporter: int, report: RtcpReceiverInfo) -> None:
        """What aiortc 1.16.0's sender does with a report block about its stream: the round-trip
        time (arrival - the reported sender report's send time - DLSR, RFC 3550 section 6.4.1,
        smoothed by aiortc's RTT_ALPHA) and the loss figures; the block is kept for getStats."""
        now = time.time()
        self.packets_lost = report.packets_lost
        self.fraction_lost = report.fraction_lost
        lsr, lsr_time = self._last_report()
        if report.dlsr and lsr == report.lsr and lsr_time is not None:
            sample = now - lsr_time - report.dlsr / 65536
            rtt = self._RTCRtpSender__rtt
            smoothed = sample if rtt is None else RTT_ALPHA * rtt + (1 - RTT_ALPHA) * sample
            self._RTCRtpSender__rtt = smoothed
        self._report_block = (now, reporter, report, self._RTCRtpSender__packet_count)

    async def getStats(self) -> RTCStatsReport:
        """aiortc's sender statistics, with the remote-inbound entry its handler would have
        added for the last report block (same fields, the time it came)."""
        block = self._report_block
        if block is not None:
            at, reporter, report, packets = block
            self._RTCRtpSender__stats.add(
                RTCRemoteInboundRtpStreamStats(
                    timestamp=datetime.datetime.fromtimestamp(at, datetime.UTC),
                    type="remote-inbound-rtp",
                    id=f"remote-inbound-rtp_{id(self)}",
                    ssrc=reporter,
                    kind=self.kind,
                    transportId=self.transport._stats_id,
                    packetsReceived=packets - report.packets_lost,
                    packetsLost=report.packets_lost,
                    jitter=report.jitter,
                    roundTripTime=self._RTCRtpSender__rtt,
                    fractionLost=report.fraction_lost,
                )
            )
        return await super().getStats()

    async def _run_rtcp(self) -> None:
        """aiortc's report loop (a sender report and SDES CNAME every 0.5-1.5 s, a BYE when
        stopped), waiting while the hub's group sends the reports instead."""
        if not self.forwarding:
            await super()._run_rtcp()
            return
        self._RTCRtpSender__rtcp_started.set()
        try:
            while True:
                resumed = self._reports_resumed
                if resumed is not None:
                    await resumed
                await asyncio.sleep(REPORT_INTERVAL * (0.5 + random.random()))
                if self._reports_resumed is None:
                    await self._send_report()
        except asyncio.CancelledError:
            pass
        await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
        self._RTCRtpSender__rtcp_exited.set()

    async def _send_report(self) -> None:
        ntp_timestamp = self._RTCRtpSender__ntp_timestamp
        cname = self._RTCRtpSender__cname
        packet = fanout.sender_report(
            self._ssrc,
            ntp_timestamp,
            self._RTCRtpSender__rtp_timestamp,
            self._RTCRtpSender__packet_count,
            self._RTCRtpSender__octet_count,
            None if cname is None else cname.encode("utf8"),
        )
        self._own_report = ((ntp_timestamp >> 16) & 0xFFFFFFFF, time.time())
        with contextlib.suppress(ConnectionError):
            await self.transport._send_rtp(packet)

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
        self._stream = self.writer.stream
        if isinstance(self.transport, ForwardingDtlsTransport):
            self.transport.writers.append(self._stream)
        track = self.track
        if isinstance(track, PacketTrack):
            track.attach(self)
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels
        except asyncio.CancelledError:
            pass
        finally:
            self._fanout_invalidate()
            self.writer.unroute()
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
        # The stream counts what aiortc's _run_rtp records per packet (see the properties).
        writer.send(rtp, ntp_now())

    async def _retransmit(self, sequence_number: int) -> None:
        if self.writer is None:
            await super()._retransmit(sequence_number)
        else:
            self.writer.retransmit(sequence_number)


_NTP_UNIX_OFFSET_NS = 2_208_988_800 * 1_000_000_000  # 1900-01-01 to 1970-01-01


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp: aiortc's `clock.current_ntp_time`, computed
    from `time.time_ns()` instead of datetime arithmetic (it runs for every packet sent)."""
    seconds, nanoseconds = divmod(time.time_ns() + _NTP_UNIX_OFFSET_NS, 1_000_000_000)
    return (seconds << 32) | (nanoseconds << 32) // 1_000_000_000


def install() -> None:
    """Make aiortc's peer connections build ForwardingReceivers, ForwardingSenders and
    ForwardingDtlsTransports (idempotent), and give aiortc a cheaper clock for the per-packet
    send-time stamp (same values)."""
    aiortc.rtcpeerconnection.RTCRtpReceiver = ForwardingReceiver  # type: ignore[misc]
    aiortc.rtcpeerconnection.RTCRtpSender = ForwardingSender  # type: ignore[misc]
    aiortc.rtcpeerconnection.RTCDtlsTransport = ForwardingDtlsTransport  # type: ignore[misc]
    aiortc.clock.current_ntp_time = ntp_now
