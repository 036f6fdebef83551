"""Real WebRTC peers for the media server's tests: aiortc publishers that send a moving test pattern
with sound, and subscribers that decode what they receive and count it."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import av
import numpy
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from aiortc.sdp import candidate_from_sdp

from .rpc import Rpc


class PatternTrack(MediaStreamTrack):
    """640x480 video at a steady rate whose colour moves, so frames are never black or identical."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        shade = int(96 + 64 * math.sin(self._count / 15))
        image = numpy.full((self.height, self.width, 3), (shade, 160, 255 - shade), numpy.uint8)
        image[:, (self._count * 8) % self.width :][:, :16] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        return frame


class ColourTrack(MediaStreamTrack):
    """320x240 video of one solid colour (15 fps by default), to tell senders apart in a mix."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int], fps: int = 15) -> None:
        super().__init__()
        self.rgb, self.fps = rgb, fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._count / self.fps - time.monotonic()))
        image = numpy.full((240, 320, 3), self.rgb, numpy.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A steady tone (440 Hz by default) in 20 ms frames at 48 kHz."""

    kind = "audio"

    def __init__(self, hertz: float = 440, level: int = 8000) -> None:
        super().__init__()
        self.hertz, self.level = hertz, level
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        rate, count = 48000, int(48000 * AUDIO_PTIME)
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._samples / rate - time.monotonic()))
        t = (numpy.arange(count) + self._samples) / rate
        samples = (numpy.sin(2 * math.pi * self.hertz * t) * self.level).astype(numpy.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, rate)
        self._samples += count
        return frame


class Clapperboard:
    """A shared clock for a video and an audio track that mark the same instants: every second
    the picture turns white and a beep sounds for 100 ms, so a recording's sync can be measured."""

    PERIOD = 1.0
    MARK = 0.1

    def __init__(self) -> None:
        self.start: float | None = None

    def begin(self) -> float:
        if self.start is None:
            self.start = time.monotonic()
        return self.start

    def marked(self, seconds: float) -> bool:
        return seconds % self.PERIOD < self.MARK

    def video(self) -> MediaStreamTrack:
        return _FlashTrack(self)

    def audio(self) -> MediaStreamTrack:
        return _BeepTrack(self)


class _FlashTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, board: Clapperboard, fps: int = 30) -> None:
        super().__init__()
        self.board, self.fps, self._count = board, fps, 0

    async def recv(self) -> av.VideoFrame:
        start = self.board.begin()
        await asyncio.sleep(max(0.0, start + self._count / self.fps - time.monotonic()))
        shade = 255 if self.board.marked(self._count / self.fps) else 16
        image = numpy.full((240, 320, 3), shade, numpy.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        return frame


class _BeepTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, board: Clapperboard) -> None:
        super().__init__()
        self.board, self._samples = board, 0

    async def recv(self) -> av.AudioFrame:
        rate, count = 48000, int(48000 * AUDIO_PTIME)
        start = self.board.begin()
        await asyncio.sleep(max(0.0, start + self._samples / rate - time.monotonic()))
        t = (numpy.arange(count) + self._samples) / rate
        loud = numpy.array([self.board.marked(x) for x in t])
        samples = (numpy.sin(2 * math.pi * 1000 * t) * 12000 * loud).astype(numpy.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, rate)
        self._samples += count
        return frame


@dataclass
class Received:
    video_frames: int = 0
    audio_frames: int = 0
    non_black_frames: int = 0
    first_video_at: float | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)


class Peer:
    """One aiortc peer connection negotiated with one WebRtcEndpoint through `Rpc`."""

    def __init__(
        self,
        *,
        send: bool,
        receive: bool,
        video_codec: str | None = None,
        tracks: tuple[MediaStreamTrack, ...] | None = None,
    ) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = Received()
        self._consumers: list[asyncio.Task[None]] = []
        if send:
            for track in tracks or (ToneTrack(), PatternTrack()):
                transceiver = self.pc.addTransceiver(track, direction="sendrecv")  # as addTrack
                if track.kind == "video" and video_codec is not None:
                    transceiver.setCodecPreferences(_video_codecs(video_codec))
        else:
            for kind in ("audio", "video"):
                transceiver = self.pc.addTransceiver(
                    kind, direction="recvonly" if receive else "inactive"
                )
                if kind == "video" and video_codec is not None:
                    transceiver.setCodecPreferences(_video_codecs(video_codec))
        if receive:
            self.pc.on("track", self._consume)

    def _consume(self, track: MediaStreamTrack) -> None:
        self._consumers.append(asyncio.ensure_future(self._count(track)))

    async def _count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "audio":
                self.received.audio_frames += 1
                continue
            self.received.video_frames += 1
            if self.received.first_video_at is None:
                self.received.first_video_at = time.monotonic()
            self.received.sizes.add((frame.width, frame.height))
            if self.received.video_frames % 10 == 1:
                luma = frame.to_ndarray(format="gray")
                if luma.mean() > 20:
                    self.received.non_black_frames += 1

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def candidates(self) -> list[dict]:
        """This peer's candidates as a browser trickles them (aiortc also puts them in its SDP)."""
        return [
            {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
            for line in self.pc.localDescription.sdp.splitlines()
            if line.startswith("a=candidate:")
        ]

    async def negotiate(self, rpc: Rpc, endpoint: str) -> None:
        """The Kurento pattern: offer here, processOffer there, trickle both ways."""
        await rpc.subscribe(endpoint, "IceCandidateFound")
        answer = await rpc.invoke(endpoint, "processOffer", offer=await self.offer())
        await self.accept(answer)
        await rpc.invoke(endpoint, "gatherCandidates")
        for candidate in self.candidates():
            await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)

    async def add_remote_candidate(self, candidate: dict) -> None:
        parsed: RTCIceCandidate = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
        parsed.sdpMid = candidate["sdpMid"]
        parsed.sdpMLineIndex = candidate["sdpMLineIndex"]
        await self.pc.addIceCandidate(parsed)

    async def wait_video(self, frames: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while self.received.video_frames < frames:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await self.pc.close()


def _video_codecs(mime_type: str) -> list:
    """aiortc's video codecs narrowed to one (and its retransmissions)."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in capabilities if c.mimeType in (mime_type, "video/rtx")]
