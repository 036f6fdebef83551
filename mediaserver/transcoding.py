"""Video transcoding for the rare sink that cannot take its source's codec (VP8 <-> H.264).

One worker per (source stream, target codec): it decodes each frame once and encodes it once, and
every sink wanting that codec shares the result. It runs on its own thread so the event loop
keeps forwarding.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.video.frame import PictureType

from .frames import EncodedFrame
from .rtp_send import Packetizer

logger = logging.getLogger(__name__)

_DECODERS = {"vp8": "libvpx", "h264": "h264"}
_ENCODERS = {"vp8": "libvpx", "h264": "libx264"}
# Video codecs the transcoder can produce, in preference order.
TRANSCODABLE = tuple(_ENCODERS)
_TIME_BASE = Fraction(1, 90000)
_BITRATE = 1_000_000
OPUS_RATE = 48000  # what WebRTC's Opus runs at, whatever the source
_QUEUE_FRAMES = 30


class TranscodeWorker:
    def __init__(self, source: str, target: str, output: Callable[[EncodedFrame], None]) -> None:
        self.source = source
        self.target = target
        self._output = output
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[EncodedFrame | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._keyframe = threading.Event()
        self._keyframe.set()
        # Packs on the event loop's thread, when the first sink sends a frame.
        self._packetizer = Packetizer(
            RTCRtpCodecParameters(mimeType=f"video/{target}", clockRate=90000, payloadType=0)
        )
        self._thread = threading.Thread(
            target=self._run, name=f"transcode-{source}-{target}", daemon=True
        )
        self._thread.start()
        logger.info("transcoding started: %s -> %s", source, target)

    def push(self, frame: EncodedFrame) -> None:
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            logger.warning("transcoder %s -> %s is behind; frame dropped", self.source, self.target)

    def force_keyframe(self) -> None:
        self._keyframe.set()

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self._queue.get_nowait()
            self._queue.put_nowait(None)
        logger.info("transcoding stopped: %s -> %s", self.source, self.target)

    def _run(self) -> None:
        decoder = av.CodecContext.create(_DECODERS[self.source], "r")
        encoder: av.VideoCodecContext | None = None
        while (frame := self._queue.get()) is not None:
            try:
                pictures = decoder.decode(frame.packet)
            except av.FFmpegError as exc:
                logger.debug("transcoder decode failed: %s", exc)
                continue
            for picture in pictures:
                if encoder is None or (encoder.width, encoder.height) != (
                    picture.width,
                    picture.height,
                ):
                    encoder = self._encoder(picture.width, picture.height)
                picture = picture.reformat(format="yuv420p")
                picture.pts = frame.packet.pts
                picture.time_base = frame.packet.time_base
                if self._keyframe.is_set():
                    self._keyframe.clear()
                    picture.pict_type = PictureType.I
                for packet in encoder.encode(picture):
                    packet.time_base = frame.packet.time_base
                    out = EncodedFrame(
                        packet=packet,
                        codec=self.target,
                        keyframe=bool(packet.is_keyframe),
                        packetizer=self._packetizer,
                        captured=_captured(frame, packet),
                    )
                    try:
                        self._loop.call_soon_threadsafe(self._output, out)
                    except RuntimeError:  # the loop has closed: the server is gone
                        return

    def _encoder(self, width: int, height: int) -> av.VideoCodecContext:
        return open_video_encoder(self.target, width, height)


def open_video_encoder(
    codec: str, width: int, height: int, bitrate: int = _BITRATE, threads: int = 0
) -> av.VideoCodecContext:
    """A real-time encoder to `codec` ("vp8" or "h264") that puts out one packet per picture, at
    once (no look-ahead), so a live stream is never held back; H.264 as WebRTC takes it
    (constrained baseline, parameter sets in band). A picture with `pict_type` I makes a
    keyframe. `threads` 0 lets FFmpeg choose."""
    encoder = av.CodecContext.create(_ENCODERS[codec], "w")
    encoder.thread_count = threads
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = _TIME_BASE
    encoder.bit_rate = bitrate
    if codec == "h264":
        encoder.profile = "Baseline"
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31"}
    else:
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    encoder.open()
    return encoder


def open_opus_encoder(layout: str) -> av.AudioCodecContext:
    """An Opus encoder at 48 kHz, taking 16-bit samples in `layout` ("mono", "stereo")."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = OPUS_RATE
    encoder.layout = layout
    encoder.format = "s16"
    encoder.time_base = Fraction(1, OPUS_RATE)
    encoder.open()
    return encoder


def _captured(source: EncodedFrame, packet: av.Packet) -> float | None:
    """The capture time of an encoded packet, from the source frame it was decoded from."""
    if source.captured is None or packet.pts is None or source.packet.pts is None:
        return source.captured
    return source.captured + float((packet.pts - source.packet.pts) * _TIME_BASE)
