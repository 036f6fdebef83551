"""Pre-encoded media for the benchmark's publishers: VP8 640x480@30 and Opus 20 ms, encoded once.

Publishers must not spend the machine's cores on real-time encoding, so a few seconds of a moving,
noisy test pattern and a tone are encoded here once; `LoopTrack` then replays the encoded frames in
a loop at real-time pace as `av.Packet`s, which aiortc's RTCRtpSender packetizes without encoding.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

WIDTH, HEIGHT, FPS = 640, 480, 30
AUDIO_RATE, AUDIO_FRAME = 48000, 960  # Opus at 48 kHz in 20 ms frames
VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)


@dataclass
class EncodedMedia:
    video: list[bytes]
    keyframes: list[int]  # indexes into `video` of frames that decode on their own
    audio: list[bytes]
    fps: int = FPS

    @property
    def video_kbps(self) -> float:
        return sum(len(f) for f in self.video) * 8 * self.fps / len(self.video) / 1000

    @property
    def audio_kbps(self) -> float:
        return sum(len(f) for f in self.audio) * 8 * 50 / len(self.audio) / 1000

    def save(self, path: Path) -> None:
        path.write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: Path) -> EncodedMedia:
        media = pickle.loads(path.read_bytes())
        assert isinstance(media, EncodedMedia)
        return media


def _pattern(index: int, rng: numpy.random.Generator) -> numpy.ndarray:
    """A frame of a moving colour gradient with a sweeping bar and some sensor-like noise."""
    x = numpy.arange(WIDTH, dtype=numpy.int16)[None, :]
    y = numpy.arange(HEIGHT, dtype=numpy.int16)[:, None]
    shift = index * 4
    image = numpy.empty((HEIGHT, WIDTH, 3), numpy.int16)
    image[..., 0] = (x + shift) % 256
    image[..., 1] = (y + shift // 2) % 256
    image[..., 2] = 128 + int(64 * math.sin(index / 15))
    bar = (index * 8) % WIDTH
    image[:, bar : bar + 24] = 255
    image += rng.integers(-10, 11, size=(HEIGHT, WIDTH, 1), dtype=numpy.int16)
    return numpy.clip(image, 0, 255).astype(numpy.uint8)


def _vp8_encoder(kbps: int) -> av.VideoCodecContext:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = WIDTH, HEIGHT
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, FPS)
    codec.framerate = Fraction(FPS, 1)
    codec.bit_rate = kbps * 1000
    codec.gop_size = 10_000  # the only keyframe is each segment's first frame
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(kbps * 1000),
        "maxrate": str(kbps * 1000),
        "bufsize": str(kbps * 2000),
        "max-intra-rate": "0",
    }
    return codec  # type: ignore[return-value]


def encode_video(seconds: float, kbps: int, keyframe_every: float) -> tuple[list[bytes], list[int]]:
    """Encode `seconds` of the pattern in segments of `keyframe_every` seconds, each from a fresh
    encoder so that every segment starts with a full-size keyframe, as after a camera's PLI."""
    rng = numpy.random.default_rng(1)
    frames: list[bytes] = []
    segment = int(keyframe_every * FPS)
    codec = _vp8_encoder(kbps)
    for index in range(int(seconds * FPS)):
        if index and index % segment == 0:
            frames.extend(bytes(p) for p in codec.encode(None))
            codec = _vp8_encoder(kbps)
        frame = av.VideoFrame.from_ndarray(_pattern(index, rng), format="rgb24").reformat(
            format="yuv420p"
        )
        frame.pts = index % segment
        frame.time_base = codec.time_base
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    keyframes = [i for i, data in enumerate(frames) if data and data[0] & 0x01 == 0]
    return frames, keyframes


def encode_audio(seconds: float, kbps: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.format = "s16"
    codec.layout = "stereo"
    codec.bit_rate = kbps * 1000
    codec.time_base = AUDIO_TIME_BASE
    codec.options = {"application": "voip"}
    rng = numpy.random.default_rng(2)
    packets: list[bytes] = []
    for index in range(int(seconds * 50)):
        t = (numpy.arange(AUDIO_FRAME) + index * AUDIO_FRAME) / AUDIO_RATE
        tone = numpy.sin(2 * math.pi * (440 + 60 * math.sin(index / 25)) * t) * 6000
        mono = (tone + rng.normal(0, 300, AUDIO_FRAME)).astype(numpy.int16)
        stereo = numpy.repeat(mono, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * AUDIO_FRAME
        frame.time_base = AUDIO_TIME_BASE
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return packets


def encode_media(
    seconds: float = 4.0, video_kbps: int = 750, audio_kbps: int = 32, keyframe_every: float = 2.0
) -> EncodedMedia:
    video, keyframes = encode_video(seconds, video_kbps, keyframe_every)
    return EncodedMedia(video=video, keyframes=keyframes, audio=encode_audio(seconds, audio_kbps))


class LoopTrack(MediaStreamTrack):
    """Replays encoded frames in a loop at real-time pace, as av.Packets with monotonic pts.

    A keyframe request (a PLI reaching the publisher's sender) makes the next frame the loop's
    nearest keyframe at or before the current position, as a real encoder would emit a keyframe."""

    def __init__(self, kind: str, frames: list[bytes], keyframes: list[int] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._frames = frames
        self._keyframes = keyframes or []
        if kind == "video":
            self._period = 1 / FPS
            self._ticks = 90000 // FPS
            self._time_base = VIDEO_TIME_BASE
        else:
            self._period = AUDIO_FRAME / AUDIO_RATE
            self._ticks = AUDIO_FRAME
            self._time_base = AUDIO_TIME_BASE
        self._start: float | None = None
        self.sent = 0  # frames sent so far: the pts clock
        self._position = 0  # index into the loop
        self._keyframe_wanted = False
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True
        self.keyframe_requests += 1

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent * self._period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._keyframe_wanted and self._keyframes:
            self._keyframe_wanted = False
            self._position = max(k for k in self._keyframes if k <= self._position)
        packet = av.Packet(self._frames[self._position])
        packet.pts = self.sent * self._ticks
        packet.time_base = self._time_base
        self.sent += 1
        self._position = (self._position + 1) % len(self._frames)
        return packet
