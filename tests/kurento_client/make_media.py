"""The media Kurento's QUnit suites play, made locally (their files are on the internet):

    .venv/bin/python tests/kurento_client/make_media.py DIR

writes DIR/format/small.webm (VP8 + Opus) and DIR/filter/{barcodes,fiwarecut,plates}.webm and
DIR/filter/pointerDetector.mp4 (H.264 + AAC), a few seconds of a moving pattern and a tone each.
kurento_suite.js serves DIR with --media_dir.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy

SECONDS = 5
FPS = 25
RATE = 48_000


def write(path: Path, video: str, audio: str, width: int = 320, height: int = 240) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        picture = container.add_stream(video, rate=FPS)
        picture.width, picture.height, picture.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream(audio, rate=RATE)
        sound.layout = "stereo"
        for index in range(SECONDS * FPS):
            image = numpy.full((height, width, 3), (40, 90, 160), numpy.uint8)
            x = (index * 8) % width
            image[:, x : x + 16] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        size = sound.codec_context.frame_size or 960
        samples = 0
        while samples < SECONDS * RATE:
            t = (numpy.arange(size) + samples) / RATE
            tone = (numpy.sin(2 * math.pi * 440 * t) * 0.3).astype(numpy.float32)
            frame = av.AudioFrame.from_ndarray(
                numpy.stack([tone, tone]).reshape(1, -1), format="flt", layout="stereo"
            )
            frame.sample_rate, frame.pts = RATE, samples
            container.mux(sound.encode(frame))
            samples += size
        container.mux(sound.encode(None))


def main() -> None:
    root = Path(sys.argv[1])
    write(root / "format" / "small.webm", "libvpx", "libopus")
    for name in ("barcodes", "fiwarecut", "plates"):
        write(root / "filter" / f"{name}.webm", "libvpx", "libopus")
    write(root / "filter" / "pointerDetector.mp4", "libx264", "aac")
    print(f"test media written under {root}")


if __name__ == "__main__":
    main()
