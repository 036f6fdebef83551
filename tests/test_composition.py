"""Composing per-stream meeting recordings into one MP4 (rooms/composition.py), from WebM files
made here the way the media server writes them: VP8 + Opus, millisecond timestamps starting
after 0, clusters of a second, and (like a killed server's files) no duration or index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream
import numpy as np
import pytest

from rooms.composition import CompositionError, Rect, Track, compose, grid, layout

RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 40), (40, 60, 230), (50, 50, 50)
WIDTH, HEIGHT, FPS = 320, 180, 15
RATE = 48000
START = 0.18  # media time of a recording's first packet


@dataclass
class Decoded:
    """An output file, fully decoded (outputs in tests are a few seconds long)."""

    duration: float
    codecs: set[str]
    frames: list[tuple[float, np.ndarray]]  # (time, RGB picture)
    audio: np.ndarray  # mono, sample 0 at time 0

    def picture_at(self, time: float) -> np.ndarray:
        return min(self.frames, key=lambda item: abs(item[0] - time))[1]

    def sound(self, start: float, end: float) -> np.ndarray:
        return self.audio[round(start * RATE) : round(end * RATE)]


def write_recording(
    path: Path,
    *,
    seconds: float = 3.0,
    colour: tuple[int, int, int] | None = RED,
    tone: float | None = 440.0,
    flashes: bool = False,
    sizes: tuple[tuple[int, int], ...] = ((160, 120),),
) -> Path:
    """A WebM like the media server's: VP8 video (its size switching through `sizes` at equal
    intervals, each at a keyframe) and Opus audio, both from media time START. With `flashes`,
    the picture is white and a beep sounds for 100 ms at each whole second of the recording."""
    output = av.open(
        str(path), "w", format="webm", container_options={"live": "1", "cluster_time_limit": "1000"}
    )
    video = audio = None
    if colour is not None:
        video = output.add_stream("libvpx", rate=FPS)
        video.width, video.height = sizes[0]
        video.pix_fmt = "yuv420p"
    if tone is not None:
        audio = output.add_stream("libopus", rate=RATE)
        audio.layout = "mono"
    encoders: list[av.VideoCodecContext] = []
    frames = round(seconds * FPS)
    samples_written = 0
    for index in range(frames):
        media_time = START + index / FPS
        if video is not None and colour is not None:
            segment = index * len(sizes) // frames
            if segment == len(encoders):
                if encoders:
                    _mux_all(output, video, encoders[-1].encode(None))
                encoders.append(_vp8_encoder(*sizes[segment]))
            width, height = sizes[segment]
            flash = flashes and index % FPS == 0
            picture = _solid((255, 255, 255) if flash else colour, width, height)
            picture.pts, picture.time_base = round(media_time * 1000), Fraction(1, 1000)
            _mux_all(output, video, encoders[-1].encode(picture))
        if audio is not None and tone is not None:
            until = round((index + 1) * RATE / FPS)
            while samples_written + 960 <= until:
                frame = _tone(tone, samples_written, flashes)
                frame.pts = round(START * RATE) + samples_written
                frame.time_base = Fraction(1, RATE)
                output.mux(audio.encode(frame))
                samples_written += 960
    if encoders:
        _mux_all(output, video, encoders[-1].encode(None))
    if audio is not None:
        output.mux(audio.encode(None))
    output.close()
    return path


def _vp8_encoder(width: int, height: int) -> av.VideoCodecContext:
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 1000)
    encoder.framerate = Fraction(FPS)
    encoder.options = {"deadline": "realtime", "cpu-used": "8"}
    return encoder


def _mux_all(
    output: av.container.OutputContainer, stream: av.stream.Stream, packets: list[av.Packet]
) -> None:
    for packet in packets:
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        output.mux(packet)


def _solid(colour: tuple[int, int, int], width: int, height: int) -> av.VideoFrame:
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = colour
    return av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")


def _tone(frequency: float, first: int, beeps: bool) -> av.AudioFrame:
    index = np.arange(first, first + 960)
    wave = 0.3 * np.sin(2 * np.pi * frequency * index / RATE)
    if beeps:
        wave = wave * ((index % RATE) < RATE // 10)
    frame = av.AudioFrame.from_ndarray(
        wave.astype(np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = RATE
    return frame


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        duration = (container.duration or 0) / av.time_base
        codecs = {stream.codec_context.name for stream in container.streams}
        frames = [
            (float(frame.time), frame.to_ndarray(format="rgb24"))
            for frame in container.decode(video=0)
        ]
    audio = np.zeros(round((duration + 1) * RATE), np.float32)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            at = round(frame.time * RATE)
            samples = frame.to_ndarray().mean(axis=0)
            if at < 0:
                samples, at = samples[-at:], 0
            audio[at : at + len(samples)] = samples[: len(audio) - at]
    return Decoded(duration, codecs, frames, audio)


def share(picture: np.ndarray, colour: tuple[int, int, int]) -> float:
    """The fraction of the picture's pixels that are (about) `colour`."""
    near = np.all(np.abs(picture.astype(int) - colour) < 45, axis=2)
    return float(near.mean())


def centre(picture: np.ndarray, colour: tuple[int, int, int]) -> tuple[float, float]:
    rows, columns = np.nonzero(np.all(np.abs(picture.astype(int) - colour) < 45, axis=2))
    return float(columns.mean()), float(rows.mean())


def level(sound: np.ndarray, frequency: float) -> float:
    """The amplitude of `frequency` in the sound (windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound)))) / (len(sound) / 4)
    bins = np.fft.rfftfreq(len(sound), 1 / RATE)
    near = np.abs(bins - frequency) < 10
    return float(spectrum[near].max())


def run(tracks: list[Track], output: Path, **options) -> Decoded:
    composed = compose(tracks, output, width=WIDTH, height=HEIGHT, fps=FPS, **options)
    assert composed.path == output and output.stat().st_size == composed.size
    decoded = decode(output)
    assert composed.video_frames == len(decoded.frames)
    return decoded


def test_three_tracks_at_their_offsets(tmp_path: Path) -> None:
    tracks = [
        Track(write_recording(tmp_path / "a.webm", colour=RED, tone=300), 0.0, "Ada"),
        Track(write_recording(tmp_path / "b.webm", colour=GREEN, tone=800), 1.0, "Bob"),
        Track(write_recording(tmp_path / "c.webm", colour=BLUE, tone=1900), 2.5, "Cy"),
    ]
    out = run(tracks, tmp_path / "meeting.mp4")

    assert out.codecs == {"h264", "aac"}
    data = (tmp_path / "meeting.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: plays while downloading
    assert out.duration == pytest.approx(2.5 + START + 3.0, rel=0.05)
    alone = out.picture_at(0.6)
    assert share(alone, RED) > 0.6
    together = out.picture_at(3.0)
    centres = {centre(together, colour) for colour in (RED, GREEN, BLUE)}
    assert all(share(together, colour) > 0.1 for colour in (RED, GREEN, BLUE))
    assert len({(x // (WIDTH / 2), y // (HEIGHT / 2)) for x, y in centres}) == 3
    assert share(out.picture_at(5.2), BLUE) > 0.6

    first, all_three, last = out.sound(0.3, 0.9), out.sound(2.8, 3.1), out.sound(4.5, 5.4)
    assert level(first, 300) > 0.1
    assert level(first, 800) < 0.01 and level(first, 1900) < 0.01
    assert min(level(all_three, f) for f in (300, 800, 1900)) > 0.1
    assert level(last, 1900) > 0.1
    assert level(last, 300) < 0.01 and level(last, 800) < 0.01


def test_picture_and_sound_stay_in_sync(tmp_path: Path) -> None:
    recording = write_recording(
        tmp_path / "a.webm", seconds=4, colour=GREY, flashes=True, tone=1000
    )
    out = run([Track(recording, 0.52, "Ada")], tmp_path / "meeting.mp4")

    bright = [time for time, picture in out.frames if picture.mean() > 150]
    flashes = [t for t in bright if not any(0 < t - other < 0.5 for other in bright)]
    loud = np.flatnonzero(np.abs(out.audio) > 0.1) / RATE
    onsets = [loud[0], *loud[1:][np.diff(loud) > 0.5]]
    expected = [0.52 + START + second for second in range(4)]
    assert flashes == pytest.approx(expected, abs=0.04)
    assert onsets == pytest.approx(expected, abs=0.04)
    assert np.allclose(flashes, onsets, atol=0.04)


def test_damaged_and_unreadable_recordings(tmp_path: Path) -> None:
    truncated = write_recording(tmp_path / "cut.webm", colour=RED, tone=300)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])  # killed mid-write: the last cluster cut
    broken = write_recording(tmp_path / "broken.webm", colour=GREEN, tone=800)
    data = bytearray(broken.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 300] = bytes(range(256)) + bytes(44)
    broken.write_bytes(bytes(data))
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3 not really a recording" * 10)
    missing = tmp_path / "missing.webm"

    tracks = [
        Track(truncated, 0.0, "Ada"),
        Track(broken, 0.5, "Bob"),
        Track(garbage, 0.0, "Cy"),
        Track(missing, 0.0, "Di"),
    ]
    out = run(tracks, tmp_path / "meeting.mp4")
    assert out.duration == pytest.approx(0.5 + START + 3.0, rel=0.05)
    assert share(out.picture_at(1.5), RED) > 0.2 and share(out.picture_at(1.5), GREEN) > 0.2


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"nothing to see" * 100)
    output = tmp_path / "meeting.mp4"
    with pytest.raises(CompositionError, match="could be read"):
        compose([Track(garbage, 0, "Ada"), Track(tmp_path / "gone.webm", 1, "Bob")], output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.webm"]


def test_cancel_leaves_no_file(tmp_path: Path) -> None:
    recording = write_recording(tmp_path / "a.webm")
    calls = iter(range(10**6))
    should_stop: Callable[[], bool] = lambda: next(calls) >= 5  # noqa: E731
    with pytest.raises(CompositionError, match="cancelled"):
        compose([Track(recording, 0, "Ada")], tmp_path / "meeting.mp4", should_stop=should_stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.webm"]


def test_audio_only_and_video_only(tmp_path: Path) -> None:
    voice = write_recording(tmp_path / "voice.webm", colour=None, tone=600)
    camera = write_recording(tmp_path / "camera.webm", colour=GREEN, tone=None, seconds=2)
    out = run([Track(voice, 0.0, "Ada"), Track(camera, 0.5, "Bob")], tmp_path / "meeting.mp4")

    assert out.codecs == {"h264", "aac"}
    assert out.duration == pytest.approx(START + 3.0, rel=0.05)
    assert out.picture_at(0.3).mean() < 40  # only a voice so far: a dark frame
    assert share(out.picture_at(1.5), GREEN) > 0.6
    assert out.picture_at(3.0).mean() < 40  # the camera has ended: a dark frame
    assert level(out.sound(1.0, 2.0), 600) > 0.1


def test_resolution_change_mid_track(tmp_path: Path) -> None:
    recording = write_recording(tmp_path / "a.webm", seconds=4, sizes=((160, 120), (96, 160)))
    out = run([Track(recording, 0.0, "Ada")], tmp_path / "meeting.mp4")

    def aspect(time: float) -> float:
        rows, columns = np.nonzero(np.all(np.abs(out.picture_at(time).astype(int) - RED) < 45, 2))
        return (columns.max() - columns.min() + 1) / (rows.max() - rows.min() + 1)

    assert aspect(1.0) == pytest.approx(160 / 120, rel=0.05)
    assert aspect(3.5) == pytest.approx(96 / 160, rel=0.05)


def test_shared_screen_gets_the_biggest_cell(tmp_path: Path) -> None:
    tracks = [
        Track(write_recording(tmp_path / "a.webm", colour=RED, tone=None), 0, "Ada"),
        Track(write_recording(tmp_path / "b.webm", colour=GREEN, tone=None), 0, "Bob"),
        Track(
            write_recording(tmp_path / "s.webm", colour=BLUE, tone=None, sizes=((192, 108),)),
            0,
            "Ada (screen)",
            screen=True,
        ),
    ]
    picture = run(tracks, tmp_path / "meeting.mp4").picture_at(1.5)
    assert share(picture, BLUE) > 4 * max(share(picture, RED), share(picture, GREEN)) > 0


def test_grid_fits_the_count() -> None:
    frame = Rect(0, 0, 1280, 720)
    assert grid(1, frame) == [frame]
    assert grid(2, frame) == [Rect(0, 0, 640, 720), Rect(640, 0, 640, 720)]
    assert {(c.width, c.height) for c in grid(4, frame)} == {(640, 360)}
    assert len({c.y for c in grid(3, frame)}) == 2
    assert len({c.x for c in grid(6, frame)}) == 3 and len({c.y for c in grid(6, frame)}) == 2
    screen, *cameras = layout([True, False, False], 1280, 720)
    assert screen == Rect(0, 0, 960, 720)
    assert all(c.x == 960 and c.width == 320 for c in cameras)
