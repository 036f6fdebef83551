"""The forwarding plane: encoded media from a publishing element to every connected sink, never
decoded.

aiortc decodes every received frame on a thread of its own. In the media server's peer
connections the receivers are `ForwardingReceiver`s instead: they keep aiortc's SRTP, RTX
unwrapping, NACK generation, receiver reports and jitter buffer, and hand each reassembled
encoded frame to the element's `MediaHub` as an `av.Packet`. A hub fans the frame out to its
`SinkPad`s; a WebRtcEndpoint's pad feeds a `PacketTrack`, which aiortc's sender packetizes
without encoding (its `av.Packet` path).

The internals this relies on (name-mangled `RTCRtpReceiver` state, the module-level receiver
class in `aiortc.rtcpeerconnection`) are why aiortc is pinned exactly in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
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

from .transcoding import TRANSCODABLE, TranscodeWorker

logger = logging.getLogger(__name__)

# Set while the media server builds its own peer connections, so that only they forward; aiortc
# peers in the same process (tests, benchmarks) keep decoding as usual.
FORWARDING: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarding", default=False)

KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between keyframe requests sent to one publisher
VIDEO_QUEUE_FRAMES = 30  # a sink further behind than this skips to the next keyframe
AUDIO_QUEUE_FRAMES = 50

# Fire-and-forget RTCP sends, referenced until done so the loop cannot drop them.
_background: set[asyncio.Future[None]] = set()


@dataclass(slots=True)
class EncodedFrame:
    """One encoded audio or video frame as it travels from a hub to its sinks."""

    packet: av.Packet
    codec: str  # lower-case codec name: "vp8", "h264", "opus", "pcmu"...
    keyframe: bool


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
    """What an RTCRtpSender sends: encoded frames from a sink pad, packetized as they are."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frames: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._limit = VIDEO_QUEUE_FRAMES if kind == "video" else AUDIO_QUEUE_FRAMES
        self.on_overflow: Callable[[], None] | None = None

    def put(self, frame: EncodedFrame) -> None:
        if len(self._frames) >= self._limit:
            # The peer cannot keep up: drop what is queued and restart at a keyframe.
            self._frames.clear()
            if self.on_overflow is not None and self.kind == "video":
                self.on_overflow()
                return
        self._frames.append(frame.packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class _NoDecoderThread:
    """Stands where aiortc keeps its decoder thread; there is none to join."""

    def join(self) -> None:
        pass


class _FrameHandoff:
    """Stands where aiortc keeps its decoder queue: each reassembled frame becomes an av.Packet."""

    def __init__(self, receiver: ForwardingReceiver) -> None:
        self._receiver = receiver

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
        on_frame(EncodedFrame(packet=packet, codec=name, keyframe=is_keyframe(name, data)))


class ForwardingReceiver(RTCRtpReceiver):
    """aiortc's receiver, minus the decoder, when created by the media server."""

    def __init__(self, kind: str, transport: object) -> None:
        super().__init__(kind, transport)  # type: ignore[arg-type]
        self.forwarding = FORWARDING.get()
        self.on_frame: Callable[[EncodedFrame], None] | None = None
        if self.forwarding:
            self._RTCRtpReceiver__decoder_queue = _FrameHandoff(self)

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

    def media_streams(self) -> dict[int, Any]:
        """aiortc's receive statistics per media SSRC (retransmission streams left out)."""
        rtx = self._RTCRtpReceiver__rtx_ssrc
        streams = self._RTCRtpReceiver__remote_streams
        return {ssrc: stream for ssrc, stream in streams.items() if ssrc not in rtx}

    def request_keyframe(self) -> None:
        """Send a PLI for every media stream received lately (RFC 4585 section 6.3.1)."""
        rtx = self._RTCRtpReceiver__rtx_ssrc
        for source in self.getSynchronizationSources():
            if source.source in rtx:
                continue
            task = asyncio.ensure_future(self._send_rtcp_pli(source.source))
            _background.add(task)
            task.add_done_callback(_background.discard)


_NTP_UNIX_OFFSET_NS = 2_208_988_800 * 1_000_000_000  # 1900-01-01 to 1970-01-01


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp: aiortc's `clock.current_ntp_time`, computed
    from `time.time_ns()` instead of datetime arithmetic (it runs for every packet sent)."""
    seconds, nanoseconds = divmod(time.time_ns() + _NTP_UNIX_OFFSET_NS, 1_000_000_000)
    return (seconds << 32) | (nanoseconds << 32) // 1_000_000_000


def install() -> None:
    """Make aiortc's peer connections build ForwardingReceivers (idempotent), and give aiortc a
    cheaper clock for the per-packet send-time stamp (same values)."""
    aiortc.rtcpeerconnection.RTCRtpReceiver = ForwardingReceiver  # type: ignore[misc]
    aiortc.clock.current_ntp_time = ntp_now
