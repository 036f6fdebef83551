"""The media Kurento's QUnit suites play, made locally (their files are on the internet):

    .venv/bin/python tests/kurento_client/make_media.py DIR

writes DIR/format/small.webm (VP8 + Opus) and DIR/filter/{barcodes,fiwarecut,plates}.webm and
DIR/filter/pointerDetector.mp4 (H.264 + AAC), a few seconds of a moving pattern and a tone each;
barcodes.webm shows a QR code over the pattern (for ZBarFilter). kurento_suite.js serves DIR with
--media_dir. tests/mediaserver/test_filters.py makes its clips with `write` too.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy
import segno

SECONDS = 5
FPS = 25
RATE = 48_000
BARCODE = "https://www.kurento.org"  # the code barcodes.webm shows


def qr_code(value: str, size: int) -> numpy.ndarray:
    """A QR code of `value` as grey pixels, black on white with its quiet zone, at most `size`
    pixels square."""
    code = segno.make(value, micro=False)
    scale = max(1, size // code.symbol_size(scale=1, border=4)[0])
    dark = numpy.array(list(code.matrix_iter(scale=scale, border=4)), dtype=bool)
    return numpy.where(dark, 0, 255).astype(numpy.uint8)


def write(
    path: Path,
    video: str,
    audio: str,
    width: int = 320,
    height: int = 240,
    *,
    seconds: int = SECONDS,
    codes: tuple[str, ...] = (),
) -> None:
    """A clip of a moving bar and a tone. With `codes`, a QR code of each in turn, an equal
    share of the clip each, is drawn in the middle of the picture over the bar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [qr_code(value, min(width, height) * 9 // 10) for value in codes]
    with av.open(str(path), "w") as container:
        picture = container.add_stream(video, rate=FPS)
        picture.width, picture.height, picture.pix_fmt = width, height, "yuv420p"
        picture.bit_rate = 1_000_000  # sharp enough for the codes to read
        sound = container.add_stream(audio, rate=RATE)
        sound.layout = "stereo"
        frames = seconds * FPS
        for index in range(frames):
            image = numpy.full((height, width, 3), (40, 90, 160), numpy.uint8)
            x = (index * 8) % width
            image[:, x : x + 16] = 255
            if pictures:
                code = pictures[index * len(pictures) // frames]
                top, left = (height - code.shape[0]) // 2, (width - code.shape[1]) // 2
                image[top : top + code.shape[0], left : left + code.shape[1]] = code[..., None]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        size = sound.codec_context.frame_size or 960
        samples = 0
        while samples < seconds * RATE:
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
    write(root / "filter" / "barcodes.webm", "libvpx", "libopus", codes=(BARCODE,))
    for name in ("fiwarecut", "plates"):
        write(root / "filter" / f"{name}.webm", "libvpx", "libopus")
    write(root / "filter" / "pointerDetector.mp4", "libx264", "aac")
    print(f"test media written under {root}")


if __name__ == "__main__":
    main()
