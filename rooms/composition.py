"""Composing a meeting's recordings (one WebM file per published stream) into one MP4 that a
browser plays: the active videos in a grid, all voices mixed, each stream at its place in time.

Pure file processing (PyAV and numpy), streamed: every input is decoded once, in time order, and
the output is encoded as it goes, so memory stays bounded however long the meeting was. Inputs
may come from a media server that was killed mid-recording (no duration, no index, a cut last
cluster) or hold broken packets: whatever cannot be read is skipped and logged.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
_AUDIO_FRAME = 1024  # samples per AAC frame: the mix is made in the encoder's own frame size
_AUDIO_BIT_RATE = 96_000
# ultrafast costs under half the CPU of veryfast; with CABAC and the deblocking filter back on
# (cheap) its files are only about a tenth bigger than veryfast's (bench/composition.py).
_X264_OPTIONS = {"preset": "ultrafast", "crf": "23", "x264-params": "cabac=1:deblock=1"}
_KEYFRAME_SECONDS = 2  # a keyframe every two seconds keeps seeking in the browser quick
# Audio frames that start within this of where the previous one ended are joined to it: the
# recorder rounds timestamps to milliseconds, and a click at every frame would be audible.
_JOIN_SECONDS = 0.02
_KNEE = 0.8  # the mix is bent smoothly towards full scale above this level instead of clipped
# Dark grey in limited-range YUV, so that letterboxing reads as a frame, not as missing video.
_BACKGROUND = (24, 128, 128)
_STRIP_SHARE = 4  # with a shared screen, the cameras get a strip of 1/4 of the frame's width


class CompositionError(Exception):
    """The recording cannot be composed (nothing readable, cancelled); the message says why."""


@dataclass(frozen=True)
class Track:
    """One per-stream recording and where it sits in the meeting."""

    path: Path
    offset: float  # seconds from the meeting recording's start to this file's time 0
    label: str  # who; not drawn (no font renderer among the dependencies)
    screen: bool = False  # a shared screen: gets the largest cell


@dataclass(frozen=True)
class Composed:
    """The finished MP4."""

    path: Path
    duration: float  # seconds
    size: int  # bytes
    video_frames: int


@dataclass(frozen=True)
class Rect:
    """A rectangle of the output picture, in pixels; even, as 4:2:0 chroma needs."""

    x: int
    y: int
    width: int
    height: int


def compose(
    tracks: Sequence[Track],
    output: Path,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    should_stop: Callable[[], bool] | None = None,
) -> Composed:
    """Compose `tracks` into the MP4 `output` (H.264 + AAC, faststart).

    The file is written under a temporary name next to `output` and renamed when complete, so
    that a crash or a cancel never leaves a half file under the final name. Raises
    `CompositionError` when no track can be read or when `should_stop` returns true.
    """
    if width % 2 or height % 2 or width <= 0 or height <= 0 or fps <= 0:
        raise ValueError(f"cannot compose at {width}x{height} {fps} fps: even sizes needed")
    output.parent.mkdir(parents=True, exist_ok=True)
    videos: list[_VideoSource] = []
    audios: list[_AudioSource] = []
    try:
        for track in tracks:
            video, audio = _open_track(track, fps)
            videos += [video] if video else []
            audios += [audio] if audio else []
        if not videos and not audios:
            raise CompositionError(f"none of the {len(tracks)} recordings could be read")
        descriptor, name = tempfile.mkstemp(
            dir=output.parent, prefix=f".{output.name}.", suffix=".part"
        )
        os.close(descriptor)
        temp = Path(name)
        try:
            frames, duration = _write(temp, videos, audios, width, height, fps, should_stop)
            os.replace(temp, output)
        finally:
            temp.unlink(missing_ok=True)
    finally:
        for source in [*videos, *audios]:
            source.close()
    size = output.stat().st_size
    logger.info("composed %s: %.1f s, %d frames, %d bytes", output, duration, frames, size)
    return Composed(path=output, duration=duration, size=size, video_frames=frames)


def _write(
    path: Path,
    videos: list[_VideoSource],
    audios: list[_AudioSource],
    width: int,
    height: int,
    fps: int,
    should_stop: Callable[[], bool] | None,
) -> tuple[int, float]:
    """Encode output frames tick by tick until every source has ended; returns the number of
    video frames and the duration. Audio is mixed up to the end of each video frame, so both
    advance together and the muxer never has to hold much."""
    with av.open(
        str(path), "w", format="mp4", container_options={"movflags": "+faststart"}
    ) as container:
        video_stream = _add_video_stream(container, width, height, fps)
        audio_stream = _add_audio_stream(container)
        canvas = _Canvas(width, height)
        mixer = _Mixer(audios)
        tick = 0
        while True:
            if should_stop is not None and should_stop():
                raise CompositionError("composition cancelled")
            now = tick / fps
            if all(v.ended(now) for v in videos) and all(a.ended(mixer.position) for a in audios):
                break
            shown = [(v.screen, v, frame) for v in videos if (frame := v.frame_at(now))]
            picture = canvas.render(shown)
            picture.pts = tick
            container.mux(video_stream.encode(picture))
            tick += 1
            for chunk in mixer.mix_until(round(tick * SAMPLE_RATE / fps)):
                container.mux(audio_stream.encode(chunk))
        if tick == 0:
            raise CompositionError("the recordings hold no readable audio or video")
        container.mux(video_stream.encode(None))
        container.mux(audio_stream.encode(None))
    return tick, tick / fps


def _add_video_stream(
    container: av.container.OutputContainer, width: int, height: int, fps: int
) -> av.stream.Stream:
    stream = container.add_stream(
        "libx264", rate=fps, options={**_X264_OPTIONS, "g": str(fps * _KEYFRAME_SECONDS)}
    )
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    return stream


def _add_audio_stream(container: av.container.OutputContainer) -> av.stream.Stream:
    stream = container.add_stream("aac", rate=SAMPLE_RATE)
    stream.layout = "stereo"
    stream.format = "fltp"
    stream.bit_rate = _AUDIO_BIT_RATE
    stream.options = {"aac_coder": "fast"}  # the default (twoloop) costs twice the CPU for speech
    stream.codec_context.time_base = Fraction(1, SAMPLE_RATE)
    return stream


# -- reading the inputs ------------------------------------------------------------------------


def _open_track(track: Track, fps: int) -> tuple[_VideoSource | None, _AudioSource | None]:
    """The track's video and audio, each read through a container of its own so that they are
    decoded at their own pace; (None, None) for a file that cannot be opened."""
    try:
        container = av.open(str(track.path))
    except (av.FFmpegError, OSError) as exc:
        logger.warning("recording %s skipped: it cannot be opened (%s)", track.path, exc)
        return None, None
    has_video, has_audio = bool(container.streams.video), bool(container.streams.audio)
    if not has_video and not has_audio:
        logger.warning("recording %s skipped: it holds no audio or video", track.path)
        container.close()
        return None, None
    video = _VideoSource(track, container, fps) if has_video else None
    audio = None
    if has_audio:
        try:
            audio = _AudioSource(track, av.open(str(track.path)) if video else container)
        except (av.FFmpegError, OSError) as exc:  # the file went away between the two opens
            logger.warning("audio of recording %s skipped: %s", track.path, exc)
    return video, audio


def _decoded(
    container: av.container.InputContainer, stream: av.stream.Stream, track: Track
) -> Iterator[tuple[float, av.VideoFrame | av.AudioFrame]]:
    """The stream's frames with their meeting time (offset + timestamp), in file order. A packet
    that does not decode (a broken one, the cut last packet of a killed recording) is skipped;
    a file that cannot be read further ends the stream there."""
    packets = container.demux(stream)
    time_base = stream.time_base or Fraction(1, 1000)
    failures = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.FFmpegError, OSError) as exc:
            logger.warning("recording %s: read stopped at a damaged spot: %s", track.path, exc)
            break
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as exc:
            failures += 1
            if failures == 1:
                logger.warning(
                    "recording %s: a %s packet was skipped: %s", track.path, stream.type, exc
                )
            continue
        for frame in frames:
            if frame.pts is not None:
                yield track.offset + float(frame.pts * time_base), frame
    if failures > 1:
        logger.warning("recording %s: %d %s packets skipped", track.path, failures, stream.type)


class _VideoSource:
    """One track's pictures in meeting time, decoded one frame ahead so that it knows when its
    last frame has passed. At each output instant it shows the frame nearest in time (the last
    one starting before the middle of the output frame), which keeps pictures within half an
    output frame of their sound."""

    def __init__(self, track: Track, container: av.container.InputContainer, fps: int) -> None:
        self.track = track
        self.screen = track.screen
        self._container = container
        self._half = 0.5 / fps
        self._hold = 1.0 / fps  # how long the last frame stays on screen
        self._frames = _decoded(container, container.streams.video[0], track)
        self._current: tuple[float, av.VideoFrame] | None = None
        self._next = next(self._frames, None)
        self._reformatter = VideoReformatter()
        self._scaled: tuple[av.VideoFrame, int, int, tuple[np.ndarray, ...]] | None = None

    def frame_at(self, now: float) -> av.VideoFrame | None:
        """The picture to show at `now`, or None outside the track's first-to-last frame."""
        edge = now + self._half
        while self._next is not None and self._next[0] <= edge:
            self._current, self._next = self._next, next(self._frames, None)
        if self._current is None or self.ended(now):
            return None
        return self._current[1]

    def ended(self, now: float) -> bool:
        if self._next is not None:
            return False
        return self._current is None or now + self._half >= self._current[0] + self._hold

    def scaled(self, frame: av.VideoFrame, width: int, height: int) -> tuple[np.ndarray, ...]:
        """The frame's Y, U and V planes at width x height; the same frame shown again at the
        same size (a camera slower than the output) is not scaled again."""
        if self._scaled and self._scaled[0] is frame and self._scaled[1:3] == (width, height):
            return self._scaled[3]
        picture = self._reformatter.reformat(
            frame,
            width=width,
            height=height,
            format="yuv420p",
            interpolation=Interpolation.BILINEAR,
            threads=1,
        )
        planes = tuple(_plane_array(plane) for plane in picture.planes)
        self._scaled = (frame, width, height, planes)
        return planes

    def close(self) -> None:
        self._scaled = None
        self._container.close()


class _AudioSource:
    """One track's sound as 48 kHz stereo samples at their place in the meeting, decoded only as
    far as the mix has asked for. Held as segments (not one array) so that a long silence
    between frames costs nothing."""

    def __init__(self, track: Track, container: av.container.InputContainer) -> None:
        self.track = track
        self._container = container
        self._frames = _decoded(container, container.streams.audio[0], track)
        self._resampler = _resampler()
        self._segments: deque[tuple[int, np.ndarray]] = deque()  # (position, 2 x n samples)
        self._queued_end: int | None = None  # the position after the last queued sample
        self._exhausted = False
        self._join = round(_JOIN_SECONDS * SAMPLE_RATE)

    def add_to(self, mix: np.ndarray, start: int) -> None:
        """Add the samples at positions start .. start + len(mix) into `mix` (2 x n)."""
        end = start + mix.shape[1]
        self._fill(end)
        for position, samples in self._segments:
            low, high = max(start, position), min(end, position + samples.shape[1])
            if low < high:
                mix[:, low - start : high - start] += samples[:, low - position : high - position]
        while self._segments and self._segments[0][0] + self._segments[0][1].shape[1] <= end:
            self._segments.popleft()

    def ended(self, position: int) -> bool:
        """Whether nothing is left at or after `position`."""
        self._fill(position + 1)
        return self._exhausted and (self._queued_end is None or self._queued_end <= position)

    def _fill(self, end: int) -> None:
        while not self._exhausted and (self._queued_end is None or self._queued_end < end):
            item = next(self._frames, None)
            if item is None:
                self._exhausted = True
                return
            self._queue(round(item[0] * SAMPLE_RATE), self._convert(item[1]))

    def _convert(self, frame: av.AudioFrame) -> np.ndarray:
        try:
            converted = self._resampler.resample(frame)
        except ValueError:  # the stream changed its sample format or layout: start afresh
            self._resampler = _resampler()
            converted = self._resampler.resample(frame)
        if not converted:
            return np.zeros((2, 0), np.float32)
        return np.concatenate([c.to_ndarray() for c in converted], axis=1)

    def _queue(self, position: int, samples: np.ndarray) -> None:
        if self._queued_end is not None and position - self._queued_end <= self._join:
            cut = self._queued_end - position  # > 0: overlaps what is queued, which wins
            samples = samples[:, max(cut, 0) :]
            position = self._queued_end
        if samples.shape[1]:
            self._segments.append((position, samples))
            self._queued_end = position + samples.shape[1]

    def close(self) -> None:
        self._segments.clear()
        self._container.close()


def _resampler() -> av.AudioResampler:
    return av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)


class _Mixer:
    """All tracks' sound summed into AAC-sized frames, in order."""

    def __init__(self, sources: list[_AudioSource]) -> None:
        self.sources = sources
        self.position = 0  # samples mixed so far

    def mix_until(self, end: int) -> Iterator[av.AudioFrame]:
        """Frames up to sample `end` (whole AAC frames, so up to one frame further)."""
        while self.position < end:
            mix = np.zeros((2, _AUDIO_FRAME), np.float32)
            for source in self.sources:
                source.add_to(mix, self.position)
            frame = av.AudioFrame.from_ndarray(_limit(mix), format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self.position
            frame.time_base = Fraction(1, SAMPLE_RATE)
            self.position += _AUDIO_FRAME
            yield frame


def _limit(mix: np.ndarray) -> np.ndarray:
    """Voices talking at once can add up beyond full scale; a hard clip would crackle, so the
    peaks above the knee are bent smoothly towards 1 (quieter samples are left as they are)."""
    over = np.abs(mix) > _KNEE
    if over.any():
        loud = mix[over]
        room = 1.0 - _KNEE
        mix[over] = np.sign(loud) * (_KNEE + room * np.tanh((np.abs(loud) - _KNEE) / room))
    return mix


# -- the picture -------------------------------------------------------------------------------


class _Canvas:
    """The output picture: the shown frames pasted into their cells over a dark background,
    redrawn only when what is shown changes."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._planes = (
            np.empty((height, width), np.uint8),
            np.empty((height // 2, width // 2), np.uint8),
            np.empty((height // 2, width // 2), np.uint8),
        )
        self._drawn: list[av.VideoFrame] | None = None

    def render(self, shown: list[tuple[bool, _VideoSource, av.VideoFrame]]) -> av.VideoFrame:
        frames = [frame for _, _, frame in shown]
        if (
            self._drawn is None
            or len(frames) != len(self._drawn)
            or any(a is not b for a, b in zip(frames, self._drawn, strict=False))
        ):
            self._draw(shown)
            self._drawn = frames
        picture = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, source in zip(picture.planes, self._planes, strict=True):
            _plane_array(plane)[:] = source
        return picture

    def _draw(self, shown: list[tuple[bool, _VideoSource, av.VideoFrame]]) -> None:
        for plane, value in zip(self._planes, _BACKGROUND, strict=True):
            plane.fill(value)
        cells = layout([screen for screen, _, _ in shown], self.width, self.height)
        for (_, source, frame), cell in zip(shown, cells, strict=True):
            box = fit(frame.width, frame.height, cell)
            if box.width < 2 or box.height < 2:
                continue
            scaled = source.scaled(frame, box.width, box.height)
            for index, (plane, picture) in enumerate(zip(self._planes, scaled, strict=True)):
                shift = 0 if index == 0 else 1  # chroma planes are half size both ways
                x, y = box.x >> shift, box.y >> shift
                plane[y : y + picture.shape[0], x : x + picture.shape[1]] = picture


def _plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A numpy view of one picture plane without its row padding."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def layout(screens: Sequence[bool], width: int, height: int) -> list[Rect]:
    """Cells for the shown pictures, in their order (True marks a shared screen).

    Without a screen, all share a grid that fits the count. Shared screens must stay readable,
    so they get the main area and the cameras a strip beside it (below it on a portrait frame).
    """
    full = Rect(0, 0, width, height)
    count = len(screens)
    screen_count = sum(screens)
    if screen_count in (0, count):
        return grid(count, full)
    if width >= height:
        strip = _even(width // _STRIP_SHARE)
        main, side = Rect(0, 0, width - strip, height), Rect(width - strip, 0, strip, height)
    else:
        strip = _even(height // _STRIP_SHARE)
        main, side = Rect(0, 0, width, height - strip), Rect(0, height - strip, width, strip)
    main_cells = iter(grid(screen_count, main))
    side_cells = iter(grid(count - screen_count, side))
    return [next(main_cells) if screen else next(side_cells) for screen in screens]


def grid(count: int, area: Rect, aspect: float = 16 / 9) -> list[Rect]:
    """`count` cells filling `area` row by row, in as many columns as makes a picture of the
    given aspect largest (ties go to more columns: two people sit side by side)."""
    if count <= 0:
        return []

    def picture_area(columns: int) -> float:
        rows = math.ceil(count / columns)
        cell_width, cell_height = area.width / columns, area.height / rows
        return min(cell_width, cell_height * aspect) * min(cell_height, cell_width / aspect)

    columns = max(range(1, count + 1), key=lambda c: (round(picture_area(c)), c))
    rows = math.ceil(count / columns)
    cells = []
    for index in range(count):
        row, column = divmod(index, columns)
        left = area.x + _even(area.width * column // columns)
        right = area.x + _even(area.width * (column + 1) // columns)
        top = area.y + _even(area.height * row // rows)
        bottom = area.y + _even(area.height * (row + 1) // rows)
        cells.append(Rect(left, top, right - left, bottom - top))
    return cells


def fit(width: int, height: int, cell: Rect) -> Rect:
    """The largest even-sized box of the picture's aspect ratio centred in the cell."""
    scale = min(cell.width / width, cell.height / height)
    box_width = min(_even(round(width * scale)), cell.width)
    box_height = min(_even(round(height * scale)), cell.height)
    x = cell.x + _even((cell.width - box_width) // 2)
    y = cell.y + _even((cell.height - box_height) // 2)
    return Rect(x, y, box_width, box_height)


def _even(value: int) -> int:
    return value - value % 2
