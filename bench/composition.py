"""What composing a recording costs: CPU seconds per minute of a 3-person meeting, each camera at
1280x720 15 fps VP8 with Opus, composed into a 1280x720 15 fps H.264 + AAC MP4.

    python -m bench.composition [--minutes 1] [--json PATH]

The inputs are synthetic but shaped like the media server's files (WebM, millisecond timestamps
from about 0.18 s, no duration or index): a few seconds of a moving, noisy pattern and a voice-like
tone are encoded once per participant and their packets repeated for the meeting's length, as a
VP8 stream can restart at a keyframe. Only `compose` is measured: the process's CPU time (all
threads: decoders, swscale, x264) and its resident memory at every output frame. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rooms.composition import Track, compose

WIDTH, HEIGHT, FPS = 1280, 720, 15
RATE, OPUS_FRAME = 48000, 960
LOOP_SECONDS = 6  # encoded once, repeated
START_MS = 180  # a recording's first packet is a little after its time 0
MS = Fraction(1, 1000)


def _pattern(index: int, hue: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like frame: a slowly panning gradient, a moving block and sensor noise."""
    x = np.arange(WIDTH, dtype=np.int16)[None, :]
    y = np.arange(HEIGHT, dtype=np.int16)[:, None]
    image = np.empty((HEIGHT, WIDTH, 3), np.int16)
    image[..., 0] = (x // 5 + index + hue) % 256
    image[..., 1] = (y // 3 + hue) % 256
    image[..., 2] = 128 + int(60 * math.sin(index / 20 + hue))
    left = 400 + int(200 * math.sin(index / 12))
    image[200:520, left : left + 240] = (220, 180, 150)
    image += rng.integers(-8, 9, size=(HEIGHT, WIDTH, 1), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode_video(hue: int) -> list[av.Packet]:
    """LOOP_SECONDS of VP8 at about WebRTC's 720p bitrate, starting with its only keyframe."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), Fraction(FPS)
    codec.bit_rate = 1_200_000
    codec.gop_size = 10_000
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(hue)
    packets: list[av.Packet] = []
    for index in range(LOOP_SECONDS * FPS):
        frame = av.VideoFrame.from_ndarray(_pattern(index, hue, rng), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = index
        packets += codec.encode(frame)
    packets += codec.encode(None)
    return packets


def _encode_audio(pitch: float) -> list[av.Packet]:
    """LOOP_SECONDS of a wavering tone with noise in 20 ms Opus packets."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.format, codec.layout = RATE, "s16", "mono"
    codec.time_base = Fraction(1, RATE)
    codec.bit_rate = 32_000
    rng = np.random.default_rng(int(pitch))
    packets: list[av.Packet] = []
    for index in range(LOOP_SECONDS * RATE // OPUS_FRAME):
        t = (np.arange(OPUS_FRAME) + index * OPUS_FRAME) / RATE
        wave = np.sin(2 * math.pi * (pitch + 40 * math.sin(index / 25)) * t) * 6000
        samples = (wave + rng.normal(0, 300, OPUS_FRAME)).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, index * OPUS_FRAME
        packets += codec.encode(frame)
    packets += codec.encode(None)
    return packets


def write_participant(path: Path, seconds: float, hue: int, pitch: float) -> None:
    """A participant's camera and microphone for `seconds`, as the media server writes them."""
    video, audio = _encode_video(hue), _encode_audio(pitch)
    with av.open(
        str(path), "w", format="webm", container_options={"live": "1", "cluster_time_limit": "1000"}
    ) as output:
        video_stream = output.add_stream("libvpx", rate=FPS)
        video_stream.width, video_stream.height, video_stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio_stream = output.add_stream("libopus", rate=RATE)
        audio_stream.layout = "mono"
        video_ms = [
            (START_MS + round(i * 1000 / FPS), video_stream, i) for i in range(int(seconds * FPS))
        ]
        audio_ms = [
            (START_MS + i * 20, audio_stream, i) for i in range(int(seconds * RATE / OPUS_FRAME))
        ]
        for ms, stream, index in sorted(video_ms + audio_ms, key=lambda item: item[0]):
            source = video if stream is video_stream else audio
            packet = av.Packet(bytes(source[index % len(source)]))
            packet.pts = packet.dts = ms
            packet.time_base, packet.stream = MS, stream
            packet.is_keyframe = stream is audio_stream or index % len(source) == 0
            output.mux(packet)


def _rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(minutes: float) -> dict[str, float]:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        tracks = []
        for index, (name, pitch) in enumerate((("Ada", 220.0), ("Bob", 330.0), ("Cy", 495.0))):
            path = folder / f"{name}.webm"
            write_participant(path, seconds, hue=index * 80, pitch=pitch)
            tracks.append(Track(path, offset=index * 0.4, label=name))
        rss: list[float] = []

        def sample_memory() -> bool:  # called once per output frame
            rss.append(_rss_mb())
            return False

        cpu, wall = time.process_time(), time.monotonic()
        composed = compose(
            tracks,
            folder / "meeting.mp4",
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            should_stop=sample_memory,
        )
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {
        "meeting_seconds": round(composed.duration, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_meeting_minute": round(cpu * 60 / composed.duration, 2),
        "wall_seconds": round(wall, 2),
        "output_kbps": round(composed.size * 8 / composed.duration / 1000),
        "rss_mb_first_frame": round(rss[0]),
        "rss_mb_max": round(max(rss)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="the meeting's length")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.minutes)
    print(f"3 participants, {WIDTH}x{HEIGHT} {FPS} fps VP8 + Opus, composed to H.264 + AAC")
    for key, value in result.items():
        print(f"  {key:32} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
