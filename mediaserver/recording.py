"""Writing a RecorderEndpoint's media to a file: the encoded frames it receives are muxed as they
are (PyAV), never decoded, except audio in a codec the file format cannot hold.

One `RecordingWriter` per recorder owns the file and a thread of its own, so the event loop only
queues frames. The file is written so that it stays playable if the server dies mid-recording:
WebM/Matroska in clusters of at most a second, MP4 as fragments of at most a second (fragmented
MP4), every packet flushed to the operating system as it is muxed. An `http(s)://` target gets
the same bytes as a chunked POST (http_upload.py). A clean stop writes the
duration and the seek index too.

Timestamps: a frame's media time is the time since the recording started (pauses left out),
taken from its RTP timestamp so that frames keep their exact spacing, and anchored to the time it
arrived so that audio and video, which have unrelated RTP clocks, stay in sync. A stream whose
timestamps jump (a new source, a resume after a pause) is anchored again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream

from .frames import EncodedFrame
from .http_upload import HttpTarget, HttpUpload

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, 1000)  # Matroska's own unit; MP4 and FLV take it as well
_HEADER_WAIT = 1.0  # seconds of media kept while waiting for every stream before the header
_MAX_DRIFT = 1.0  # seconds between RTP time and arrival time before a stream is anchored again
_PULL = 0.02  # share of the arrival-time error corrected per frame (slow drift, no jitter)
_QUEUE_ITEMS = 4000  # about 40 s of audio and video waiting for a slow disk

# What the file formats hold without transcoding, per media kind.
_AUDIO_RATES = {"opus": 48000, "pcmu": 8000, "pcma": 8000, "g722": 16000, "aac": 48000}
AUDIO_DECODERS = {"opus": "opus", "pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722"}
_AUDIO_ENCODERS = {"opus": "libopus", "aac": "aac"}
VIDEO_DECODERS = {"vp8": "vp8", "h264": "h264"}


@dataclass(frozen=True)
class Profile:
    """A Kurento MediaProfileSpecType: the file format and what goes in it."""

    container: str  # FFmpeg muxer
    video: tuple[str, ...]  # video codecs the format takes, preferred first; () for none
    audio: str | None  # the audio codec written; None for no audio
    options: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.container]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, wanted in (("audio", self.audio), ("video", self.video)) if wanted)


_CONTENT_TYPES = {
    "webm": "video/webm",
    "matroska": "video/x-matroska",
    "mp4": "video/mp4",
    "flv": "video/x-flv",
}
_MATROSKA = {"cluster_time_limit": "1000", "flush_packets": "1"}
_FRAGMENTED_MP4 = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "1000000",
    "flush_packets": "1",
}
PROFILES: dict[str, Profile] = {
    "WEBM": Profile("webm", ("vp8",), "opus", _MATROSKA),
    "WEBM_VIDEO_ONLY": Profile("webm", ("vp8",), None, _MATROSKA),
    "WEBM_AUDIO_ONLY": Profile("webm", (), "opus", _MATROSKA),
    "MKV": Profile("matroska", ("vp8", "h264"), "opus", _MATROSKA),
    "MKV_VIDEO_ONLY": Profile("matroska", ("vp8", "h264"), None, _MATROSKA),
    "MKV_AUDIO_ONLY": Profile("matroska", (), "opus", _MATROSKA),
    "MP4": Profile("mp4", ("h264",), "opus", _FRAGMENTED_MP4),
    "MP4_VIDEO_ONLY": Profile("mp4", ("h264",), None, _FRAGMENTED_MP4),
    "MP4_AUDIO_ONLY": Profile("mp4", (), "opus", _FRAGMENTED_MP4),
    "FLV": Profile("flv", ("h264",), "aac", {"flush_packets": "1"}),
}


class MediaClock:
    """The media time of one stream's frames from their RTP timestamps, anchored to their arrival:
    for frames whose sender has not yet said when it captured them."""

    def __init__(self) -> None:
        # The RTP timestamp and the media time of the last frame.
        self._last: tuple[int, float] | None = None

    def time(self, rtp_timestamp: int, clock_rate: int, arrival: float) -> float:
        if self._last is not None:
            last_timestamp, last_time = self._last
            step = ((rtp_timestamp - last_timestamp + 2**31) % 2**32 - 2**31) / clock_rate
            predicted = last_time + step
            error = arrival - predicted
            if abs(error) <= _MAX_DRIFT:
                media_time = predicted + _PULL * error
                self._last = (rtp_timestamp, media_time)
                return media_time
        self._last = (rtp_timestamp, arrival)
        return arrival


class Timeline:
    """Media times of a recording's frames, in seconds since it started (pauses left out).

    A frame whose sender said when it captured it (RTCP sender reports) is placed at that time,
    shifted by the least delay seen from that sender, so its audio and video keep the sync they
    had when captured, whatever the network and the jitter buffers did to each. A pause shortens
    the recording's clock, and so the delay, by exactly its length. Frames without a capture time
    follow their RTP timestamps (`MediaClock`)."""

    def __init__(self) -> None:
        self.clocks: dict[str, MediaClock] = {}
        self.offsets: dict[int, float] = {}  # by sender: recording time minus capture time

    def time(self, kind: str, frame: EncodedFrame, arrival: float, sender: int) -> float:
        captured = frame.captured
        if captured is None:
            packet = frame.packet
            clock_rate = int(1 / packet.time_base) if packet.time_base else 90000
            clock = self.clocks.setdefault(kind, MediaClock())
            return clock.time(packet.pts or 0, clock_rate, arrival)
        delay = arrival - captured
        offset = self.offsets.get(sender)
        if offset is None or delay < offset or delay - offset > _MAX_DRIFT:
            offset = self.offsets[sender] = delay
        return captured + offset


@dataclass
class _Item:
    kind: str
    frame: EncodedFrame
    arrival: float  # seconds of recording (pauses left out) when it arrived
    sender: int  # which element it came from: frames of one sender share a capture clock


class RecordingWriter:
    """The file of one recorder: `push` frames from the event loop, `close` to finish it. Errors
    (a full disk, a directory that cannot be made) are reported once through `on_error`; the
    writer then drops what it is given."""

    def __init__(
        self,
        path: Path | HttpTarget,
        profile: Profile,
        *,
        on_error: Callable[[str], None],
        on_closed: Callable[[], None],
    ) -> None:
        self.path = path
        self.profile = profile
        self._on_error = on_error
        self._on_closed = on_closed
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=_QUEUE_ITEMS)
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def push(self, kind: str, frame: EncodedFrame, arrival: float, sender: int) -> None:
        try:
            self._queue.put_nowait(_Item(kind, frame, arrival, sender))
        except queue.Full:
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                logger.warning("recording %s behind: %d frames dropped", self.path, self._dropped)

    def close(self) -> None:
        """Finish the file; `on_closed` is called (from the writer's thread) once it is done."""
        self._queue.put(None)

    def _run(self) -> None:
        file = _File(self.path, self.profile)
        failed = False
        while (item := self._queue.get()) is not None:
            if failed:
                continue
            try:
                file.write(item)
            except (av.FFmpegError, OSError, ValueError) as exc:
                failed = True
                logger.error("recording %s failed: %s", self.path, exc)
                self._on_error(f"Recording to {self.path} failed: {exc}")
        try:
            if failed:
                file.abort()
            else:
                file.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            logger.error("finishing recording %s failed: %s", self.path, exc)
            self._on_error(f"Finishing the recording {self.path} failed: {exc}")
            file.abort()
        self._on_closed()


class _File:
    """The container and its streams; lives on the writer's thread only."""

    def __init__(self, path: Path | HttpTarget, profile: Profile) -> None:
        self.path = path
        self.profile = profile
        self.container: av.container.OutputContainer | None = None
        self.upload: HttpUpload | None = None
        self.streams: dict[str, av.stream.Stream] = {}
        self.timeline = Timeline()
        self.last_ms = {kind: -1 for kind in profile.kinds}
        self.video_codec: str | None = None
        self.audio: _AudioTranscoder | None = None
        self.pending: list[tuple[str, EncodedFrame, float]] = []

    def write(self, item: _Item) -> None:
        if item.kind not in self.last_ms:
            return
        media_time = self.timeline.time(item.kind, item.frame, item.arrival, item.sender)
        if self.container is None:
            self.pending.append((item.kind, item.frame, media_time))
            if not self._ready():
                return
            self._open()
            pending, self.pending = self.pending, []
            for kind, frame, at in pending:
                self._mux(kind, frame, at)
            return
        self._mux(item.kind, item.frame, media_time)

    def _ready(self) -> bool:
        """Whether the header can be written: every stream has shown itself (video with a
        keyframe, which gives its size), or the first frame waited long enough."""
        seen = {kind for kind, frame, _ in self.pending if kind == "audio" or frame.keyframe}
        waited = self.pending[-1][2] - self.pending[0][2]
        return seen >= set(self.profile.kinds) or waited >= _HEADER_WAIT

    def _open(self) -> None:
        options = dict(self.profile.options)
        if isinstance(self.path, HttpTarget):
            self.upload = HttpUpload(self.path, self.profile.content_type)
            self.container = av.open(
                self.upload, "w", format=self.profile.container, container_options=options
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(
                str(self.path), "w", format=self.profile.container, container_options=options
            )
        first = {kind: frame for kind, frame, _ in reversed(self.pending)}
        video = first.get("video")
        if "video" in self.profile.kinds:
            codec = video.codec if video is not None else self.profile.video[0]
            self.video_codec = codec
            stream = self.container.add_stream_from_template(_template(codec))
            width, height, extradata = _video_parameters(video)
            stream.width, stream.height = width, height
            if extradata:
                stream.codec_context.extradata = extradata
            stream.time_base = _TIME_BASE
            self.streams["video"] = stream
        if self.profile.audio is not None:
            audio = first.get("audio")
            source = audio.codec if audio is not None else self.profile.audio
            stream = self.container.add_stream_from_template(_template(self.profile.audio))
            stream.time_base = _TIME_BASE
            self.streams["audio"] = stream
            if source != self.profile.audio:
                self.audio = _AudioTranscoder(source, self.profile.audio)
        self.container.start_encoding()
        logger.info("recording to %s (%s)", self.path, self.profile.container)

    def _mux(self, kind: str, frame: EncodedFrame, media_time: float) -> None:
        assert self.container is not None
        stream = self.streams.get(kind)
        if stream is None:
            return
        if kind == "video" and frame.codec != self.video_codec:
            return  # a source in another codec than the file's; the hub transcodes to it
        if kind == "audio" and self.audio is not None:
            for data, at in self.audio.transcode(frame, media_time):
                self._mux_bytes(kind, stream, data, at, True)
            return
        self._mux_bytes(kind, stream, bytes(frame.packet), media_time, frame.keyframe)

    def _mux_bytes(
        self, kind: str, stream: av.stream.Stream, data: bytes, media_time: float, key: bool
    ) -> None:
        assert self.container is not None
        ms = max(int(media_time * 1000), self.last_ms[kind] + 1, 0)
        self.last_ms[kind] = ms
        packet = av.Packet(data)
        packet.pts = packet.dts = ms
        packet.time_base = _TIME_BASE
        packet.stream = stream
        packet.is_keyframe = key
        self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            if not self.pending:
                return  # nothing was recorded: no file, as there is nothing to play
            self._open()
            for kind, frame, at in self.pending:
                self._mux(kind, frame, at)
        assert self.container is not None
        self.container.close()
        if self.upload is not None:
            self.upload.finish()
        logger.info("recording %s finished", self.path)

    def abort(self) -> None:
        """After a failure: let go of the container and the upload, whatever state they are in."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
        if self.upload is not None:
            self.upload.abort()


class _AudioTranscoder:
    """Audio in a codec the file cannot hold (G.711 into WebM, Opus into FLV), re-encoded."""

    def __init__(self, source: str, target: str) -> None:
        self.decoder = av.CodecContext.create(AUDIO_DECODERS[source], "r")
        if source in ("pcmu", "pcma"):
            self.decoder.sample_rate = 8000
            self.decoder.layout = "mono"
        self.encoder = av.CodecContext.create(_AUDIO_ENCODERS[target], "w")
        self.encoder.sample_rate = _AUDIO_RATES[target]
        self.encoder.layout = "stereo"
        self.encoder.format = "s16" if target == "opus" else "fltp"
        self.encoder.time_base = Fraction(1, self.encoder.sample_rate)
        self.encoder.open()
        self.resampler = av.AudioResampler(
            format=self.encoder.format.name,
            layout="stereo",
            rate=self.encoder.sample_rate,
            frame_size=self.encoder.frame_size,
        )
        self.samples = 0
        self.start: float | None = None

    def transcode(self, frame: EncodedFrame, media_time: float) -> list[tuple[bytes, float]]:
        if self.start is None:
            self.start = media_time
        out: list[tuple[bytes, float]] = []
        try:
            decoded = self.decoder.decode(av.Packet(bytes(frame.packet)))
        except av.FFmpegError:
            return out
        rate = self.encoder.sample_rate
        for picture in decoded:
            picture.pts = None
            for chunk in self.resampler.resample(picture):
                chunk.pts = self.samples
                self.samples += chunk.samples
                for packet in self.encoder.encode(chunk):
                    out.append((bytes(packet), self.start + (packet.pts or 0) / rate))
        return out


def _video_parameters(frame: EncodedFrame | None) -> tuple[int, int, bytes]:
    """Width, height and (H.264) the parameter sets of a stream, from its first keyframe."""
    if frame is None:
        return 640, 480, b""
    decoder = av.CodecContext.create(VIDEO_DECODERS[frame.codec], "r")
    width, height = 640, 480
    try:
        for picture in decoder.decode(av.Packet(bytes(frame.packet))):
            width, height = picture.width, picture.height
    except av.FFmpegError:
        pass
    extradata = _h264_parameter_sets(bytes(frame.packet)) if frame.codec == "h264" else b""
    return width, height, extradata


def _h264_parameter_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex-B keyframe, as Annex-B (what MP4 muxing needs)."""
    units = []
    for chunk in data.split(b"\x00\x00\x01")[1:]:
        unit = chunk.rstrip(b"\x00")
        if unit and unit[0] & 0x1F in (7, 8):
            units.append(b"\x00\x00\x00\x01" + unit)
    return b"".join(units)


# -- stream templates --------------------------------------------------------------------------
# PyAV opens an encoder for every output stream it creates by codec name (libvpx at 720p: 25 MB
# and 25 ms per stream) unless the stream is made from a template stream. The templates are read
# once per process from a tiny file made in memory.

_templates: dict[str, tuple[av.container.InputContainer, av.stream.Stream]] = {}
_templates_lock = threading.Lock()
_TEMPLATE_ENCODERS = {"vp8": "libvpx", "h264": "libx264", "opus": "libopus", "aac": "aac"}


def _template(codec: str) -> av.stream.Stream:
    with _templates_lock:
        if codec not in _templates:
            _templates[codec] = _make_template(codec)
        return _templates[codec][1]


def _make_template(codec: str) -> tuple[av.container.InputContainer, av.stream.Stream]:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as output:
        if codec in VIDEO_DECODERS:
            stream = output.add_stream(_TEMPLATE_ENCODERS[codec], rate=30)
            stream.width = stream.height = 16
            stream.pix_fmt = "yuv420p"
            frame: av.VideoFrame | av.AudioFrame = av.VideoFrame(16, 16, "yuv420p")
        else:
            stream = output.add_stream(_TEMPLATE_ENCODERS[codec], rate=48000)
            stream.layout = "stereo"
            samples = stream.codec_context.frame_size or 960
            frame = av.AudioFrame(format=stream.format.name, layout="stereo", samples=samples)
            frame.sample_rate = 48000
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    buffer.seek(0)
    container = av.open(buffer, format="matroska")
    return container, container.streams[0]
