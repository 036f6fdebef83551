"""Reading a PlayerEndpoint's source (player.py is the Kurento object): a file or a network stream,
demuxed by PyAV on a thread of its own and sent in real time, as the file's timestamps say.

What a WebRTC peer takes goes out as it is: VP8, H.264 (made Annex-B, what the H.264 packetizer
takes, when it comes from MP4 or Matroska) and Opus. Anything else is decoded and encoded once:
video to VP8, audio to Opus at 48 kHz. H.264 with B-frames is transcoded too: its frames come out
of order, which WebRTC receivers do not expect.

A file forwarded as it is may have a keyframe only every few seconds, and a new viewer sees
nothing until the next one. So the video is decoded all along (unless the client asked for
`useEncodedMedia`), and when a sink asks for a keyframe the stream is re-encoded from the current
picture, starting with a keyframe, until the file's next keyframe; from there it goes out as it
is again. Decoding costs far less than encoding, and encoding happens only for those few seconds.

Timing: each frame is due at the time its timestamp says, on a clock anchored when playing
starts, resumes or seeks. Its RTP timestamp and capture time are that due time, on a clock the
element keeps for its whole life, so audio and video stay in sync and timestamps only go forward
across pauses, seeks and restarts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
import av.container
import av.stream
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.bitstream import BitStreamFilterContext
from av.video.frame import PictureType

from .forwarding import is_keyframe
from .frames import EncodedFrame
from .rtp_send import Packetizer
from .transcoding import open_opus_encoder, open_video_encoder

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
OPEN_TIMEOUT = 10.0  # seconds to open a network source
READ_TIMEOUT = 10.0  # seconds a network source may stay silent before it counts as broken
# The codecs a playing element sends (as they are, or transcoded to), packetized once for all
# its sinks.
_SENT_CODECS = (
    ("vp8", "video/VP8", VIDEO_CLOCK),
    ("h264", "video/H264", VIDEO_CLOCK),
    ("opus", "audio/opus", AUDIO_CLOCK),
)
_MAX_LATE = 0.5  # seconds behind schedule (a stalled network source) before the clock restarts
_OPUS_FRAME = 960  # samples: 20 ms at 48 kHz
_BITRATE_RANGE = (300_000, 4_000_000)  # re-encoded video, around the source's own bitrate
# Demuxers a source may be read with: media containers only, none that opens further files or
# URLs named inside it (playlists, concat lists), so a URI reaches what it names and nothing else.
_FORMATS = "matroska,webm,mov,mp4,avi,flv,mpegts,ogg,mp3,wav,aac,ivf,h264,rtsp"
_FILE_PROTOCOLS = "file"
_NETWORK_PROTOCOLS = {
    "http": "http,https,tcp,tls",
    "https": "http,https,tcp,tls",
    "rtsp": "rtsp,rtp,srtp,udp,tcp,tls,http,https",
}
NETWORK_SCHEMES = tuple(_NETWORK_PROTOCOLS)

# Error types KMS's player reports (PlayerEndpointImpl: invalid-uri and invalid-media signals).
INVALID_URI = "INVALID_URI"
INVALID_MEDIA = "INVALID_MEDIA"


def packetizers() -> dict[str, Packetizer]:
    """A packetizer per codec a playing element sends (PlayerEndpoint, HttpPostEndpoint)."""
    return {
        codec: Packetizer(RTCRtpCodecParameters(mimeType=mime, clockRate=rate, payloadType=0))
        for codec, mime, rate in _SENT_CODECS
    }


@dataclass(frozen=True)
class Source:
    """What FFmpeg opens: a local path or a network URL, and the options it opens it with."""

    location: str
    options: dict[str, str]
    network: bool


def file_source(path: str) -> Source:
    return Source(
        path, {"protocol_whitelist": _FILE_PROTOCOLS, "format_whitelist": _FORMATS}, False
    )


def network_source(url: str, scheme: str, network_cache_ms: int) -> Source:
    """A network URL; `network_cache_ms` is what RTSP may hold back to reorder packets (KMS's
    networkCache: the RTSP source's latency)."""
    options = {"protocol_whitelist": _NETWORK_PROTOCOLS[scheme], "format_whitelist": _FORMATS}
    if scheme == "rtsp":
        options["max_delay"] = str(max(network_cache_ms, 0) * 1000)
    return Source(url, options, True)


@dataclass(frozen=True)
class SourceInfo:
    """What a client learns about the source once it is open (Kurento's VideoInfo)."""

    seekable: bool
    duration: float  # seconds; 0 for a live stream


@dataclass(frozen=True)
class Clock:
    """An element's time line for what it sends: monotonic and wall-clock time of its origin."""

    monotonic: float
    wall: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.monotonic(), time.time())


class PlaybackListener(Protocol):
    """What a playback reports, called on the event loop's thread."""

    def on_playback_frame(self, playback: Playback, kind: str, frame: EncodedFrame) -> None: ...

    def on_playback_opened(self, playback: Playback, info: SourceInfo) -> None: ...

    def on_playback_ended(self, playback: Playback) -> None: ...

    def on_playback_failed(self, playback: Playback, error_type: str, message: str) -> None: ...

    def on_playback_transcoding(
        self, playback: Playback, kind: str, codec: str, on: bool
    ) -> None: ...

    def on_playback_closed(self, playback: Playback) -> None: ...


@dataclass(slots=True)
class _Outgoing:
    """A frame ready to go, due at `media_time` (seconds into the source)."""

    kind: str
    media_time: float
    data: bytes
    keyframe: bool


class Playback:
    """One source played from its beginning on a thread of its own, until it ends, fails or is
    closed. Commands (`play`, `pause`, `seek`, `request_keyframe`, `close`) may come at any time
    from the event loop; they take effect within a frame."""

    def __init__(
        self,
        source: Source,
        listener: PlaybackListener,
        *,
        clock: Clock,
        packetizers: dict[str, Packetizer],
        repair_keyframes: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.source = source
        self.position = 0.0  # seconds into the source of the last frame sent
        self.info: SourceInfo | None = None
        self._listener = listener
        self._clock = clock
        self._packetizers = packetizers
        self._repair_keyframes = repair_keyframes
        self._loop = loop
        self._condition = threading.Condition()
        self._playing = False
        self._closing = False
        self._seek: tuple[float, concurrent.futures.Future[bool]] | None = None
        self._keyframe = threading.Event()
        self._anchor: tuple[float, float] | None = None  # (monotonic time, media time)
        self._last_ticks: dict[str, int] = {}
        self._video_codec = "vp8"
        self._thread = threading.Thread(target=self._run, name="player", daemon=True)
        self._thread.start()

    # -- commands, from the event loop ---------------------------------------------------------

    def play(self) -> None:
        with self._condition:
            self._playing = True
            self._condition.notify()

    def pause(self) -> None:
        with self._condition:
            self._playing = False
            self._condition.notify()

    def seek(self, seconds: float) -> concurrent.futures.Future[bool]:
        """Go to the keyframe at or before `seconds`; the future tells whether it worked."""
        result: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._condition:
            if self._seek is not None:
                self._seek[1].set_result(False)  # overtaken by this one
            self._seek = (max(seconds, 0.0), result)
            self._condition.notify()
        return result

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()

    # -- the thread ----------------------------------------------------------------------------

    def _report(self, method: str, *args: object) -> None:
        """Call the listener on the event loop, unless the loop has closed (server stopped)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(getattr(self._listener, method), self, *args)

    def _run(self) -> None:
        try:
            container = av.open(
                self.source.location,
                container_options=self.source.options,
                timeout=(OPEN_TIMEOUT, READ_TIMEOUT) if self.source.network else None,
            )
        except (av.FFmpegError, OSError) as exc:
            self._fail(_open_error_type(exc), f"cannot open {self.source.location}: {exc}")
            self._finish(None)
            return
        try:
            self._play(container)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._fail(INVALID_MEDIA, f"reading {self.source.location} failed: {exc}")
        finally:
            self._finish(container)

    def _fail(self, error_type: str, message: str) -> None:
        logger.warning("player: %s", message)
        self._report("on_playback_failed", error_type, message)

    def _finish(self, container: av.container.InputContainer | None) -> None:
        if container is not None:
            container.close()
        with self._condition:
            if self._seek is not None:
                self._seek[1].set_result(False)
                self._seek = None
        self._report("on_playback_closed")

    def _play(self, container: av.container.InputContainer) -> None:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None and audio is None:
            self._fail(INVALID_MEDIA, f"{self.source.location} has no audio or video")
            return
        start = (container.start_time or 0) / 1_000_000
        outputs: dict[int, _VideoOutput | _AudioOutput] = {}
        if video is not None:
            video_output = _VideoOutput(video, start, self._keyframe, self._repair_keyframes)
            outputs[video.index] = video_output
            self._video_codec = video_output.codec
        if audio is not None:
            outputs[audio.index] = _AudioOutput(audio, start)
        for output in outputs.values():
            if output.transcoding:
                self._report("on_playback_transcoding", output.kind, output.codec, True)
        duration = (container.duration or 0) / 1_000_000
        self.info = SourceInfo(seekable=duration > 0, duration=duration)
        self._report("on_playback_opened", self.info)
        packets = container.demux(*(s for s in (video, audio) if s is not None))
        pending: list[_Outgoing] = []
        while True:
            with self._condition:
                while not self._closing and self._seek is None and not self._playing:
                    self._anchor = None  # paused: the clock starts again on resume
                    self._condition.wait()
                if self._closing:
                    return
                seek, self._seek = self._seek, None
            if seek is not None:
                pending.clear()
                seek[1].set_result(self._do_seek(container, start, seek[0], outputs))
                continue
            if not pending:
                packet = next(packets, None)
                if packet is None:
                    self._report("on_playback_ended")
                    return
                if packet.size:
                    pending.extend(outputs[packet.stream.index].convert(packet))
                continue
            if self._wait_until(self._due(pending[0].media_time)):
                self._send(pending.pop(0))

    def _do_seek(
        self,
        container: av.container.InputContainer,
        start: float,
        seconds: float,
        outputs: dict[int, _VideoOutput | _AudioOutput],
    ) -> bool:
        if self.info is None or not self.info.seekable:
            return False
        try:
            container.seek(int((start + seconds) * 1_000_000), backward=True)
        except av.FFmpegError as exc:
            logger.warning("player: seeking %s failed: %s", self.source.location, exc)
            return False
        for output in outputs.values():
            output.reset()
        self._anchor = None
        self.position = seconds
        return True

    def _due(self, media_time: float) -> float:
        """When a frame is due, on the monotonic clock. A source that fell behind (a stalled
        network) starts the clock again rather than sending what it missed in a burst."""
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, media_time)
        started, origin = self._anchor
        due = started + media_time - origin
        if now - due > _MAX_LATE:
            self._anchor = (started + now - due, origin)
            due = now
        return due

    def _wait_until(self, due: float) -> bool:
        """Wait for a frame's time; False when a command came first (it is handled, then the
        frame waits again)."""
        with self._condition:
            while not self._closing and self._seek is None and self._playing:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    return True
                self._condition.wait(remaining)
        return False

    def _send(self, item: _Outgoing) -> None:
        assert self._anchor is not None
        started, origin = self._anchor
        at = started + item.media_time - origin - self._clock.monotonic  # on the element's clock
        rate = VIDEO_CLOCK if item.kind == "video" else AUDIO_CLOCK
        ticks = max(round(at * rate), self._last_ticks.get(item.kind, -1) + 1)
        self._last_ticks[item.kind] = ticks
        packet = av.Packet(item.data)
        packet.pts = ticks
        packet.time_base = Fraction(1, rate)
        codec = "opus" if item.kind == "audio" else self._video_codec
        frame = EncodedFrame(
            packet=packet,
            codec=codec,
            keyframe=item.keyframe,
            packetizer=self._packetizers[codec],
            captured=self._clock.wall + ticks / rate,
        )
        self.position = max(item.media_time, 0.0)
        self._report("on_playback_frame", item.kind, frame)


class _VideoOutput:
    """One video stream's packets made into frames a WebRTC peer takes (see the module's
    docstring): as they are, repaired from a decoded picture until the next keyframe when a sink
    asks for one, or transcoded to VP8."""

    kind = "video"

    def __init__(
        self, stream: av.stream.Stream, start: float, keyframe: threading.Event, repair: bool
    ) -> None:
        context = stream.codec_context
        name = context.name
        self.as_is = name == "vp8" or (name == "h264" and not context.has_b_frames)
        self.codec = name if self.as_is else "vp8"
        self.transcoding = not self.as_is
        self.start = start
        self.keyframe = keyframe
        self.decoding = repair or not self.as_is
        # One thread each: frame threads would hold pictures back a few frames, and encoder
        # threads spin on a busy machine (libvpx at 640x480: 4 ms a frame alone, 20-40 with
        # threads while other work ran on this 2-core machine).
        context.thread_count = 1
        self.decoder = context
        extradata = context.extradata or b""
        # avcC parameter sets (MP4, Matroska) begin with version 1; Annex-B needs no filter.
        self.annexb = (
            BitStreamFilterContext("h264_mp4toannexb", stream)
            if name == "h264" and extradata[:1] == b"\x01"
            else None
        )
        rate = stream.guessed_rate or 30
        self.frame_ticks = max(int(VIDEO_CLOCK / rate), 1)
        bitrate = context.bit_rate or stream.bit_rate or 1_000_000
        self.bitrate = min(max(bitrate, _BITRATE_RANGE[0]), _BITRATE_RANGE[1])
        self.encoder: av.VideoCodecContext | None = None
        self.encoded = 0
        self.repairing = False
        self.force_keyframe = True

    def convert(self, packet: av.Packet) -> list[_Outgoing]:
        media_time = _seconds(packet) - self.start
        wanted = self.keyframe.is_set()
        self.keyframe.clear()
        pictures = self._decode(packet) if self.decoding else []
        if not self.as_is:
            self.force_keyframe |= wanted
            return [
                out
                for picture in pictures
                for out in self._encode(picture, float(picture.time or 0.0) - self.start)
            ]
        data = self._bitstream(packet)
        natural = is_keyframe(self.codec, data)
        if natural:
            self.repairing = False
        elif wanted and self.decoding:
            self.repairing = self.force_keyframe = True
        if not self.repairing:
            return [_Outgoing("video", media_time, data, natural)]
        return [out for picture in pictures for out in self._encode(picture, media_time)]

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return list(self.decoder.decode(packet))
        except av.FFmpegError as exc:
            logger.debug("player: video decode failed: %s", exc)
            return []

    def _bitstream(self, packet: av.Packet) -> bytes:
        if self.annexb is None:
            return bytes(packet)
        return b"".join(bytes(out) for out in self.annexb.filter(packet))

    def _encode(self, picture: av.VideoFrame, media_time: float) -> list[_Outgoing]:
        if self.encoder is None or (self.encoder.width, self.encoder.height) != (
            picture.width,
            picture.height,
        ):
            self.encoder = open_video_encoder(
                self.codec, picture.width, picture.height, self.bitrate, threads=1
            )
            self.force_keyframe = True
        frame = picture.reformat(format="yuv420p")
        frame.pts = self.encoded * self.frame_ticks
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self.encoded += 1
        if self.force_keyframe:
            self.force_keyframe = False
            frame.pict_type = PictureType.I
        return [
            _Outgoing("video", media_time, bytes(out), bool(out.is_keyframe))
            for out in self.encoder.encode(frame)
        ]

    def reset(self) -> None:
        """After a seek: the decoder starts again at the keyframe the seek landed on."""
        self.decoder.flush_buffers()
        self.repairing = False
        self.force_keyframe = True


class _AudioOutput:
    """One audio stream's packets: Opus as it is, anything else decoded and encoded to Opus."""

    kind = "audio"

    def __init__(self, stream: av.stream.Stream, start: float) -> None:
        self.decoder = stream.codec_context
        self.as_is = self.decoder.name == "opus"
        self.codec = "opus"
        self.transcoding = not self.as_is
        self.start = start
        self._open_encoder()

    def _open_encoder(self) -> None:
        self.encoder: av.AudioCodecContext | None = None
        self.resampler: av.AudioResampler | None = None
        self.first: float | None = None  # media time of the first sample encoded
        self.samples = 0
        if self.as_is:
            return
        self.encoder = open_opus_encoder("stereo")
        self.resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=AUDIO_CLOCK, frame_size=_OPUS_FRAME
        )

    def convert(self, packet: av.Packet) -> list[_Outgoing]:
        media_time = _seconds(packet) - self.start
        if self.as_is:
            return [_Outgoing("audio", media_time, bytes(packet), True)]
        assert self.encoder is not None and self.resampler is not None
        try:
            decoded = self.decoder.decode(packet)
        except av.FFmpegError as exc:
            logger.debug("player: audio decode failed: %s", exc)
            return []
        out: list[_Outgoing] = []
        for samples in decoded:
            if self.first is None:
                self.first = media_time
            samples.pts = None
            for chunk in self.resampler.resample(samples):
                chunk.pts = self.samples
                self.samples += chunk.samples
                for encoded in self.encoder.encode(chunk):
                    at = self.first + (encoded.pts or 0) / AUDIO_CLOCK
                    out.append(_Outgoing("audio", at, bytes(encoded), True))
        return out

    def reset(self) -> None:
        self.decoder.flush_buffers()
        self._open_encoder()


def _seconds(packet: av.Packet) -> float:
    timestamp = packet.pts if packet.pts is not None else packet.dts
    if timestamp is None or packet.time_base is None:
        return 0.0
    return float(timestamp * packet.time_base)


def _open_error_type(exc: Exception) -> str:
    """KMS tells a source it cannot reach (INVALID_URI) from one that is not media it can play
    (INVALID_MEDIA)."""
    if isinstance(exc, av.error.InvalidDataError | av.error.ArgumentError):
        return INVALID_MEDIA
    return INVALID_URI
