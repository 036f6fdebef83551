"""Kurento's filters module. ZBarFilter passes its media on as it is and reports the QR and bar
codes it sees in its video (CodeFound), as KMS's ZBarFilter does with GStreamer's zbar element.

The video is decoded on a worker thread of the filter's own, off the forwarding path, and a few
pictures a second are scanned with libzbar (through pyzbar): what leaves the filter is never
decoded or re-encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy

from .elements import Filter, ForwardsAsIs, MediaPipeline
from .errors import Code, KurentoError
from .frames import EncodedFrame
from .objects import Registry
from .recording import VIDEO_DECODERS

logger = logging.getLogger(__name__)

SCANS_PER_SECOND = 5  # pictures scanned at most (KMS scans every one; zbar is the costly part)
# KMS reports a code again when its value or type changes, or a second of stream time after it
# last reported it (ZBarFilterImpl::barcodeDetected); a code in view is reported once a second.
REPORT_AGAIN_AFTER = 1.0
_QUEUE_FRAMES = 30  # frames waiting for the decoder; beyond, it starts again at a keyframe

Scan = Callable[[numpy.ndarray], list[tuple[str, str]]]


@functools.cache
def zbar_scanner() -> Scan | str:
    """A function giving the (type, value) of each code in a grey picture, types named as
    libzbar names them ("QR-Code", "EAN-13"), as KMS's events carry them; or why there is none
    (libzbar, Debian's libzbar0, missing)."""
    try:
        from pyzbar import pyzbar, wrapper
    except (ImportError, OSError) as exc:  # pyzbar raises ImportError without libzbar
        return str(exc)
    symbol_name = wrapper.zbar_function("zbar_get_symbol_name", ctypes.c_char_p, ctypes.c_int)

    def scan(picture: numpy.ndarray) -> list[tuple[str, str]]:
        return [
            (
                symbol_name(int(wrapper.ZBarSymbol[code.type])).decode(),
                code.data.decode("utf-8", errors="replace"),
            )
            for code in pyzbar.decode(picture)
        ]

    return scan


@dataclass
class RepeatFilter:
    """KMS's rule for reporting a code: a new value or type, the first code, or the same code
    a second (of the stream's timestamps) after it was last reported; a timestamp going back
    counts as a second later (KMS compares unsigned)."""

    last: tuple[str, str] | None = None
    last_at: float = 0.0

    def is_new(self, code: tuple[str, str], at: float) -> bool:
        if code == self.last and 0 <= at - self.last_at < REPORT_AGAIN_AFTER:
            return False
        self.last, self.last_at = code, at
        return True


class CodeScanner:
    """Decodes one video stream on a worker thread that starts with the first frame, scans at
    most SCANS_PER_SECOND pictures a second, and calls `on_code(type, value)` on the event loop
    for each code KMS would report. `on_behind` (on the event loop) is called when frames had to
    be dropped: decoding starts again at the next keyframe, which it should ask for."""

    def __init__(
        self,
        scan: Scan,
        on_code: Callable[[str, str], None],
        on_behind: Callable[[], None],
    ) -> None:
        self._scan = scan
        self._on_code = on_code
        self._on_behind = on_behind
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[EncodedFrame | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._resync = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def push(self, frame: EncodedFrame) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zbar", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            if not self._resync.is_set():
                logger.warning("zbar filter is behind; waiting for a keyframe")
                self._resync.set()
                self._on_behind()

    def close(self) -> None:
        """Stop the thread after the picture it is on; it drops what is queued."""
        self._closed = True
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _run(self) -> None:
        codec = ""
        decoder: av.VideoCodecContext | None = None
        repeats = RepeatFilter()
        next_scan = 0.0
        while (frame := self._queue.get()) is not None:
            if self._resync.is_set():
                if not frame.keyframe:
                    continue
                self._resync.clear()
            if frame.codec != codec or decoder is None:
                if frame.codec not in VIDEO_DECODERS:
                    continue
                codec = frame.codec
                decoder = av.CodecContext.create(VIDEO_DECODERS[codec], "r")
                decoder.thread_count = 1
            try:
                pictures = decoder.decode(frame.packet)
            except av.FFmpegError as exc:
                logger.debug("zbar filter: decode failed: %s", exc)
                continue
            now = time.monotonic()
            if not pictures or now < next_scan:
                continue
            next_scan = now + 1 / SCANS_PER_SECOND
            at = _stream_time(frame)
            try:
                codes = self._scan(pictures[-1].to_ndarray(format="gray"))
            except Exception:  # a scanner failure must not end the thread
                logger.exception("zbar filter: scan failed")
                continue
            for code in codes:
                if repeats.is_new(code, at):
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        self._loop.call_soon_threadsafe(self._on_code, *code)


def _stream_time(frame: EncodedFrame) -> float:
    """The frame's timestamp in seconds (KMS compares buffer timestamps)."""
    packet = frame.packet
    if packet.pts is None or packet.time_base is None:
        return time.monotonic()
    return float(packet.pts * packet.time_base)


class ZBarFilter(ForwardsAsIs, Filter):
    """A Filter whose output is its input, unchanged; it reports codes in its video."""

    TYPE = "ZBarFilter"
    ABSTRACT = False
    MODULE_NAME = "filters"
    EVENTS = frozenset({"CodeFound"})

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        scan = zbar_scanner()
        if isinstance(scan, str):
            # KMS answers so when its zbar GStreamer plugin is missing.
            logger.warning("ZBarFilter refused: libzbar is not available (%s)", scan)
            raise KurentoError(
                Code.MEDIA_OBJECT_NOT_FOUND,
                f"ZBarFilter plugin not available: zbar ({scan}; install libzbar0)",
            )
        super().__init__(registry, pipeline)
        self._scanner = CodeScanner(
            scan, self._code_found, lambda: self.pads["video"].request_keyframe()
        )

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        super().on_sink_frame(kind, frame)
        if kind == "video":
            self._scanner.push(frame)

    def on_sink_data(self, message: str | bytes) -> None:
        # KMS's filter elements link their DATA pads straight through (kmsfilterelement.c).
        self.push_data(message)

    def _code_found(self, code_type: str, value: str) -> None:
        if not self.released:
            self.emit("CodeFound", codeType=code_type, value=value)

    async def on_release(self) -> None:
        await super().on_release()
        self._scanner.close()


FILTER_FACTORIES = (ZBarFilter,)
