"""The Composite's mixing engine (hubs.py has the Kurento objects): every port's video decoded and
tiled on one picture, every port's audio decoded and mixed, on a worker thread of its own.

The thread keeps a steady clock: every 1/framerate s it draws the latest picture of each port into
a grid (KMS's layout: as many columns as the square root of the count, rounded up, each picture
scaled to its cell keeping its aspect, on black) and encodes it once to VP8, for every port; every
20 ms it takes 20 ms of each port's audio (48 kHz mono) and, as KMS's audio mixer does, gives each
port the sum of the others, encoded to Opus for that port alone. So a participant sees itself in
the grid but does not hear itself.

Output starts with the first input frame and stops when no input came for `IDLE_AFTER` seconds;
a port whose video stopped that long leaves the grid. The event loop only queues frames here and
hands what comes out to the ports' hubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
import numpy
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from .frames import EncodedFrame
from .recording import AUDIO_DECODERS, VIDEO_DECODERS
from .rtp_send import Packetizer
from .transcoding import open_opus_encoder, open_video_encoder

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_FRAME = 960  # samples: 20 ms at 48 kHz, one Opus frame
AUDIO_PTIME = AUDIO_FRAME / AUDIO_RATE
IDLE_AFTER = 2.0  # seconds without input before output stops (and a silent port leaves the grid)
VIDEO_BITRATE = 1_000_000
_AUDIO_PRIMED = 2 * AUDIO_FRAME  # a port's audio joins the mix with 40 ms buffered (jitter)
_AUDIO_KEPT = 10 * AUDIO_FRAME  # beyond 200 ms buffered the oldest samples go (bounded delay)
_QUEUE_ITEMS = 500  # input frames waiting for the thread (about 2 s of four publishers)
_MAX_LATE = 0.2  # seconds behind its clock before the thread skips ticks instead of catching up
_BLACK = (16, 128, 128)  # Y, U, V


@dataclass(frozen=True)
class Tile:
    """A rectangle of the output picture, in pixels (it may reach outside the picture)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Placement:
    """Where a port's picture goes: into `tile`, scaled to fill it or, with `keep_aspect`, to
    the largest rectangle of its own aspect inside it."""

    key: int
    tile: Tile
    keep_aspect: bool


class Layout(Protocol):
    """How the pictures of the ports (by key: width and height) make one picture."""

    def size(self, pictures: Mapping[int, tuple[int, int]]) -> tuple[int, int]:
        """The output picture's size."""
        ...

    def place(
        self, pictures: Mapping[int, tuple[int, int]], width: int, height: int
    ) -> list[Placement]:
        """Where each picture goes, the one drawn first (at the bottom) first."""
        ...


@dataclass(frozen=True)
class GridLayout:
    """The Composite's: every picture in a grid of equal cells, in port order, keeping its
    aspect (KMS's compositemixer)."""

    width: int
    height: int

    def size(self, pictures: Mapping[int, tuple[int, int]]) -> tuple[int, int]:
        return self.width, self.height

    def place(
        self, pictures: Mapping[int, tuple[int, int]], width: int, height: int
    ) -> list[Placement]:
        keys = sorted(pictures)
        return [
            Placement(key, tile, True)
            for key, tile in zip(keys, grid(len(keys), width, height), strict=True)
        ]


@dataclass(frozen=True)
class PortGeometry:
    """A port's picture in an AlphaBlending, relative to the master picture's size."""

    x: float
    y: float
    width: float
    height: float
    z_order: int


@dataclass(frozen=True)
class BlendLayout:
    """The AlphaBlending's (KMS's alphablending): the master port's picture sets the output size
    and fills it; a port given a geometry is scaled into its rectangle, any other port fills the
    picture; drawn by z-order (the master's, 5 unless set; 1 for ports without a geometry),
    highest on top. Without a master picture the output is 640x480."""

    master: int | None = 0
    master_z: int = 5
    geometry: Mapping[int, PortGeometry] = field(default_factory=dict)

    def size(self, pictures: Mapping[int, tuple[int, int]]) -> tuple[int, int]:
        return pictures.get(self.master, (640, 480)) if self.master is not None else (640, 480)

    def place(
        self, pictures: Mapping[int, tuple[int, int]], width: int, height: int
    ) -> list[Placement]:
        whole = Tile(0, 0, width, height)
        layers: list[tuple[int, Placement]] = []
        for key in sorted(pictures):
            shape = self.geometry.get(key)
            if key == self.master:
                layers.append((self.master_z, Placement(key, whole, False)))
            elif shape is None:
                layers.append((1, Placement(key, whole, False)))
            else:
                tile = Tile(
                    round(shape.x * width) & ~1,
                    round(shape.y * height) & ~1,
                    max(round(shape.width * width) & ~1, 2),
                    max(round(shape.height * height) & ~1, 2),
                )
                layers.append((shape.z_order, Placement(key, tile, False)))
        layers.sort(key=lambda layer: layer[0])
        return [placement for _, placement in layers]


def grid(count: int, width: int, height: int) -> list[Tile]:
    """KMS's composite layout for `count` pictures: ceil(sqrt(count)) columns, as many rows as
    needed, cells of equal size filled row by row."""
    if count <= 0:
        return []
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_width, cell_height = width // columns, height // rows
    return [
        Tile((i % columns) * cell_width, (i // columns) * cell_height, cell_width, cell_height)
        for i in range(count)
    ]


def fit(width: int, height: int, cell: Tile) -> Tile:
    """The largest rectangle of the picture's aspect inside the cell, centred; even coordinates
    and sizes, as 4:2:0 chroma needs."""
    scale = min(cell.width / width, cell.height / height)
    fitted_width = max(int(width * scale) & ~1, 2)
    fitted_height = max(int(height * scale) & ~1, 2)
    x = (cell.x + (cell.width - fitted_width) // 2) & ~1
    y = (cell.y + (cell.height - fitted_height) // 2) & ~1
    return Tile(x, y, fitted_width, fitted_height)


def black_picture(width: int, height: int) -> av.VideoFrame:
    picture = av.VideoFrame(width, height, "yuv420p")
    for plane, value in zip(picture.planes, _BLACK, strict=True):
        _plane_array(plane)[:] = value
    return picture


def paste(canvas: av.VideoFrame, picture: av.VideoFrame, x: int, y: int) -> None:
    """Copy a yuv420p picture into the canvas with its top left corner at (x, y), both even;
    what falls outside the canvas is left out."""
    for index, (target, source) in enumerate(zip(canvas.planes, picture.planes, strict=True)):
        shift = 0 if index == 0 else 1
        left, top = x >> shift, y >> shift
        skip_x, skip_y = max(0, -left), max(0, -top)
        columns = min(source.width, target.width - left)
        rows = min(source.height, target.height - top)
        if columns <= skip_x or rows <= skip_y:
            continue
        _plane_array(target)[top + skip_y : top + rows, left + skip_x : left + columns] = (
            _plane_array(source)[skip_y:rows, skip_x:columns]
        )


def _plane_array(plane: av.video.plane.VideoPlane) -> numpy.ndarray:
    """A writable view of a picture plane, rows by line size."""
    return numpy.frombuffer(plane, numpy.uint8).reshape(-1, plane.line_size)[: plane.height]


class _Input:
    """One port as the thread sees it: its decoders, its latest picture and its buffered audio,
    and the Opus encoder of what it hears."""

    def __init__(self) -> None:
        self.video_codec = ""
        self.video_decoder: av.VideoCodecContext | None = None
        self.picture: av.VideoFrame | None = None
        self.picture_at = 0.0
        self.reformatter = VideoReformatter()
        self.scaled: tuple[av.VideoFrame, tuple[int, int], av.VideoFrame] | None = None
        self.audio_codec = ""
        self.audio_decoder: av.AudioCodecContext | None = None
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        self.audio = numpy.zeros(0, numpy.int16)
        self.primed = False
        self.encoder: av.AudioCodecContext | None = None
        self.packetizer = Packetizer(
            RTCRtpCodecParameters(
                mimeType="audio/opus", clockRate=AUDIO_RATE, channels=2, payloadType=0
            )
        )

    def decode_video(self, frame: EncodedFrame, now: float) -> bool:
        """Keep the last picture of the frame; False when it could not be decoded."""
        if frame.codec != self.video_codec or self.video_decoder is None:
            if frame.codec not in VIDEO_DECODERS:
                return True  # a codec the mixer cannot show: the port stays out of the grid
            self.video_codec = frame.codec
            self.video_decoder = av.CodecContext.create(VIDEO_DECODERS[frame.codec], "r")
            self.video_decoder.thread_count = 1
        try:
            pictures = self.video_decoder.decode(frame.packet)
        except av.FFmpegError as exc:
            logger.debug("composite: video decode failed: %s", exc)
            return False
        if pictures:
            self.picture, self.picture_at = pictures[-1], now
        return True

    def scaled_to(self, width: int, height: int) -> av.VideoFrame:
        """The latest picture at this size (scaled once per new picture or size)."""
        assert self.picture is not None
        cached = self.scaled
        if cached is not None and cached[0] is self.picture and cached[1] == (width, height):
            return cached[2]
        scaled = self.reformatter.reformat(
            self.picture,
            width=width,
            height=height,
            format="yuv420p",
            interpolation=Interpolation.BILINEAR,
        )
        self.scaled = (self.picture, (width, height), scaled)
        return scaled

    def decode_audio(self, frame: EncodedFrame) -> None:
        if frame.codec != self.audio_codec or self.audio_decoder is None:
            if frame.codec not in AUDIO_DECODERS:
                return
            self.audio_codec = frame.codec
            self.audio_decoder = av.CodecContext.create(AUDIO_DECODERS[frame.codec], "r")
            if frame.codec in ("pcmu", "pcma"):
                self.audio_decoder.sample_rate = 8000
                self.audio_decoder.layout = "mono"
        try:
            decoded = self.audio_decoder.decode(av.Packet(bytes(frame.packet)))
        except av.FFmpegError as exc:
            logger.debug("composite: audio decode failed: %s", exc)
            return
        chunks = [self.audio]
        for samples in decoded:
            samples.pts = None
            chunks.extend(out.to_ndarray().reshape(-1) for out in self.resampler.resample(samples))
        self.audio = numpy.concatenate(chunks)[-_AUDIO_KEPT:]

    def take_audio(self) -> numpy.ndarray | None:
        """The next 20 ms of this port's audio as int32, or None while it has none buffered."""
        if not self.primed and len(self.audio) >= _AUDIO_PRIMED:
            self.primed = True
        if not self.primed:
            return None
        chunk = numpy.zeros(AUDIO_FRAME, numpy.int32)
        taken = self.audio[:AUDIO_FRAME]
        chunk[: len(taken)] = taken
        self.audio = self.audio[len(taken) :]
        if len(taken) < AUDIO_FRAME:
            self.primed = False  # ran dry: wait until it has a margin again
        return chunk

    def encode_audio(self, mix: numpy.ndarray, pts: int) -> list[av.Packet]:
        if self.encoder is None:
            self.encoder = open_opus_encoder("mono")
        samples = numpy.clip(mix, -32768, 32767).astype(numpy.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = Fraction(1, AUDIO_RATE)
        return list(self.encoder.encode(frame))


class CompositeMixer:
    """Mixes the ports' media on a worker thread; called from the event loop. `on_video` gets
    the one encoded grid for every port, `on_audio` each port's own mix, `on_broken_input` the
    port whose video could not be decoded (it needs a keyframe); all on the event loop.
    `listening` tells (from the thread) whether a port's audio goes anywhere: a port nobody
    listens to gets no mix encoded.

    Without a `layout` only audio is mixed (video is not even decoded). `hearing` says which
    ports each port hears; None (the Composite's) means every port but itself."""

    def __init__(
        self,
        *,
        layout: Layout | None,
        framerate: int,
        on_video: Callable[[EncodedFrame], None],
        on_audio: Callable[[int, EncodedFrame], None],
        on_broken_input: Callable[[int], None],
        listening: Callable[[int], bool],
    ) -> None:
        # Both replaced, never changed in place, from the event loop.
        self.layout = layout
        self.hearing: Mapping[int, frozenset[int]] | None = None
        self.framerate = framerate
        self._on_video = on_video
        self._on_audio = on_audio
        self._on_broken_input = on_broken_input
        self._listening = listening
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[tuple[str, int, str, EncodedFrame | None] | None] = queue.Queue()
        self._keyframe = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._video_packetizer = Packetizer(
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=VIDEO_CLOCK, payloadType=0)
        )
        self.running = False  # whether output is being produced (read by tests and stats)

    # -- from the event loop -------------------------------------------------------------------

    def add_port(self, key: int) -> None:
        self._queue.put(("add", key, "", None))

    def remove_port(self, key: int) -> None:
        self._queue.put(("remove", key, "", None))

    def push(self, key: int, kind: str, frame: EncodedFrame) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="composite", daemon=True)
            self._thread.start()
        if self._queue.qsize() >= _QUEUE_ITEMS:
            logger.warning("composite is behind; %s frame dropped", kind)
            return
        self._queue.put(("frame", key, kind, frame))

    def force_keyframe(self) -> None:
        self._keyframe.set()

    def close(self) -> None:
        """Stop the thread after what it is doing; it drops everything it holds."""
        self._closed = True
        self._queue.put(None)

    # -- the thread ----------------------------------------------------------------------------

    def _report(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is gone
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        inputs: dict[int, _Input] = {}
        clock = _TickClock(self.framerate)
        encoder: av.VideoCodecContext | None = None
        last_input = 0.0
        while True:
            timeout = clock.wait() if self.running else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ("tick", -1, "", None)
            if item is None:
                return
            now = time.monotonic()
            command, key, kind, frame = item
            if command == "add":
                inputs[key] = _Input()
            elif command == "remove":
                inputs.pop(key, None)
            elif command == "frame" and frame is not None and key in inputs:
                last_input = now
                if not self.running:
                    self.running = True
                    clock.restart(now)
                self._take_input(inputs[key], key, kind, frame, now)
            if self.running and now - last_input > IDLE_AFTER:
                self.running = False
                encoder = None  # the next run starts with a keyframe
                continue
            if not self.running:
                continue
            try:
                if clock.audio_due(now):
                    self._mix_audio(inputs, clock.audio_pts())
                if self.layout is not None and clock.video_due(now):
                    encoder = self._mix_video(inputs, encoder, clock.video_pts(), now)
            except (av.FFmpegError, ValueError) as exc:
                logger.error("composite: mixing failed: %s", exc)

    def _take_input(
        self, port: _Input, key: int, kind: str, frame: EncodedFrame, now: float
    ) -> None:
        if kind == "audio":
            port.decode_audio(frame)
        elif self.layout is not None and not port.decode_video(frame, now):
            self._report(self._on_broken_input, key)

    def _mix_audio(self, inputs: dict[int, _Input], pts: int) -> None:
        """Each port gets the sum of what it hears: by default the others (KMS's audio mixer
        leaves a port's own audio out)."""
        chunks = {key: port.take_audio() for key, port in inputs.items()}
        if all(chunk is None for chunk in chunks.values()):
            return
        hearing = self.hearing
        total = numpy.sum([c for c in chunks.values() if c is not None], axis=0)
        for key, port in inputs.items():
            if not self._listening(key):
                port.encoder = None  # a new listener starts a fresh stream
                continue
            if hearing is None:
                own = chunks[key]
                mix = total - own if own is not None else total
            else:
                heard = [chunks[k] for k in hearing.get(key, ()) if chunks.get(k) is not None]
                if not heard:
                    continue
                mix = numpy.sum(heard, axis=0)
            for packet in port.encode_audio(mix, pts):
                packet.time_base = Fraction(1, AUDIO_RATE)
                out = EncodedFrame(
                    packet=packet,
                    codec="opus",
                    keyframe=True,
                    packetizer=port.packetizer,
                    captured=time.time(),
                )
                self._report(self._on_audio, key, out)

    def _mix_video(
        self,
        inputs: dict[int, _Input],
        encoder: av.VideoCodecContext | None,
        pts: int,
        now: float,
    ) -> av.VideoCodecContext:
        shown: dict[int, av.VideoFrame] = {
            key: port.picture
            for key, port in inputs.items()
            if port.picture is not None and now - port.picture_at < IDLE_AFTER
        }
        sizes = {key: (picture.width, picture.height) for key, picture in shown.items()}
        layout = self.layout
        width, height = (max(side & ~1, 16) for side in layout.size(sizes))
        canvas = black_picture(width, height)
        for placement in layout.place(sizes, width, height):
            picture_width, picture_height = sizes[placement.key]
            tile = placement.tile
            if placement.keep_aspect:
                tile = fit(picture_width, picture_height, tile)
            scaled = inputs[placement.key].scaled_to(tile.width, tile.height)
            paste(canvas, scaled, tile.x, tile.y)
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            encoder = open_video_encoder("vp8", width, height, VIDEO_BITRATE, threads=1)
            self._keyframe.set()
        canvas.pts = pts
        canvas.time_base = Fraction(1, VIDEO_CLOCK)
        if self._keyframe.is_set():
            self._keyframe.clear()
            canvas.pict_type = PictureType.I
        for packet in encoder.encode(canvas):
            packet.time_base = Fraction(1, VIDEO_CLOCK)
            out = EncodedFrame(
                packet=packet,
                codec="vp8",
                keyframe=bool(packet.is_keyframe),
                packetizer=self._video_packetizer,
                captured=time.time(),
            )
            self._report(self._on_video, out)
        return encoder


class _TickClock:
    """When the next audio (every 20 ms) and video (every 1/framerate s) output is due, and its
    timestamp; timestamps only go forward, across pauses of the output too."""

    def __init__(self, framerate: int) -> None:
        self.origin = time.monotonic()
        self.video_period = 1.0 / framerate
        self.framerate = framerate
        self.audio_tick = 0
        self.video_tick = 0

    def restart(self, now: float) -> None:
        self.audio_tick = max(self.audio_tick, math.ceil((now - self.origin) / AUDIO_PTIME))
        self.video_tick = max(self.video_tick, math.ceil((now - self.origin) / self.video_period))

    def _audio_at(self) -> float:
        return self.origin + self.audio_tick * AUDIO_PTIME

    def _video_at(self) -> float:
        return self.origin + self.video_tick * self.video_period

    def wait(self) -> float:
        return max(0.0, min(self._audio_at(), self._video_at()) - time.monotonic())

    def audio_due(self, now: float) -> bool:
        if now < self._audio_at():
            return False
        if now - self._audio_at() > _MAX_LATE:
            self.restart(now)
        return True

    def video_due(self, now: float) -> bool:
        if now < self._video_at():
            return False
        if now - self._video_at() > _MAX_LATE:
            self.restart(now)
        return True

    def audio_pts(self) -> int:
        """The due audio frame's timestamp, and on to the next."""
        pts = self.audio_tick * AUDIO_FRAME
        self.audio_tick += 1
        return pts

    def video_pts(self) -> int:
        pts = self.video_tick * VIDEO_CLOCK // self.framerate
        self.video_tick += 1
        return pts
