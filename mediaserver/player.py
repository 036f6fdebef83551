"""PlayerEndpoint: a file or a network stream sent to what is connected to it (playback.py does
the reading).

States and events follow KMS: `play()` starts (UriEndpointStateChanged START), `pause()` holds
the media where it is (PAUSE) and `play()` resumes there, `stop()` goes back to the beginning
(STOP). At the end of the source the player reports STOP, then EndOfStream. A source that
cannot be opened or read is reported as an Error event (type INVALID_URI or INVALID_MEDIA, as
KMS names them) when `play()` tries it; the player then goes back to STOP, so `play()` tries
again. A transition to the state the player is in is ignored, as KMS only logs it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .elements import MediaPipeline, UriEndpoint
from .errors import Code, KurentoError
from .frames import EncodedFrame
from .objects import Param, Property, Registry, complex_value
from .playback import (
    INVALID_URI,
    NETWORK_SCHEMES,
    Clock,
    Playback,
    Source,
    SourceInfo,
    file_source,
    network_source,
    packetizers,
)
from .uris import file_path

logger = logging.getLogger(__name__)

SEEK_TIMEOUT = 10.0  # seconds setPosition waits for the source to seek
CLOSE_TIMEOUT = 15.0  # seconds a release waits for the reading thread (a network read times out)


class PlayerEndpoint(UriEndpoint):
    TYPE = "PlayerEndpoint"
    ABSTRACT = False
    MODULE_NAME = "elements"
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("uri", "String"),
        Param("useEncodedMedia", "boolean", optional=True),
        Param("networkCache", "int", optional=True),
    )
    EVENTS = frozenset({"EndOfStream"})
    PROPERTIES = (
        Property("videoInfo", read_only=True, type_name="VideoInfo"),
        Property("elementGstreamerDot", read_only=True),
        Property("position", kind=int, type_name="int64"),
    )

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        uri: str,
        directory: Path,
        use_encoded_media: bool = False,
        network_cache: int = 2000,
    ) -> None:
        source = player_source(uri, directory, network_cache)
        super().__init__(registry, pipeline, uri)
        self.source = source
        # KMS's use-encoded-media: no decoding at all, so no keyframe repair either.
        self.use_encoded_media = use_encoded_media
        self.network_cache = network_cache
        self.playback: Playback | None = None
        self.info: SourceInfo | None = None
        self.transcoding: dict[str, str] = {}  # kind -> the codec the player encodes to
        self._clock = Clock.now()
        self._packetizers = packetizers()
        self._running: dict[Playback, asyncio.Event] = {}  # set when the thread has ended

    # -- media flow ----------------------------------------------------------------------------

    def flow_in_at(self, kind: str) -> float:
        return 0.0  # nothing comes into a player

    def flow_out_at(self, kind: str) -> float:
        return self.hubs[kind].last_frame_at

    def request_keyframe(self, kind: str) -> None:
        if kind == "video" and self.playback is not None:
            self.playback.request_keyframe()

    # -- operations ---------------------------------------------------------------------------

    async def op_play(self) -> None:
        if self.state == "START":
            logger.info("%s: play() ignored, already playing", self.id)
            return
        self._playback().play()
        self.set_state("START")

    async def pause_uri(self) -> None:
        if self.state == "PAUSE":
            return
        self._playback().pause()
        self.set_state("PAUSE")

    async def stop_uri(self) -> None:
        if self.state == "STOP":
            return
        self._end_playback()
        self.set_state("STOP")

    async def op_getPosition(self) -> int:
        return round(self.playback.position * 1000) if self.playback is not None else 0

    async def op_setPosition(self, position: int) -> None:
        """Seek to the keyframe at or before `position` ms; refused (40700, as KMS) when the
        player is stopped or its source cannot seek."""
        if self.playback is None or (self.info is not None and not self.info.seekable):
            raise KurentoError(Code.PLAYER_SEEK_FAIL, "Seek fails")
        try:
            async with asyncio.timeout(SEEK_TIMEOUT):
                done = await asyncio.wrap_future(self.playback.seek(position / 1000))
        except TimeoutError:
            done = False
        if not done:
            raise KurentoError(Code.PLAYER_SEEK_FAIL, "Seek fails")

    async def op_getVideoInfo(self) -> dict[str, Any]:
        """What is known of the source: zeros until it was first opened, as KMS answers while
        its pipeline is stopped."""
        info = self.info or SourceInfo(seekable=False, duration=0.0)
        duration = round(info.duration * 1000)
        return complex_value(
            "VideoInfo",
            isSeekable=info.seekable,
            seekableInit=0,
            seekableEnd=duration if info.seekable else 0,
            duration=duration,
        )

    async def op_getElementGstreamerDot(self) -> str:
        """This player's own pipeline as a graph (KMS answers its GStreamer pipeline)."""
        uri = self.uri.replace("\\", "\\\\").replace('"', '\\"')
        lines = [f'digraph "{self.id}" {{', f'  "source" [label="{uri}"];']
        for kind in ("video", "audio"):
            codec = self.hubs[kind].codec
            step = f"transcode to {self.transcoding[kind]}" if kind in self.transcoding else "as is"
            lines.append(f'  "source" -> "{kind}" [label="{codec or "none"}, {step}"];')
            for pad in self.hubs[kind].sinks:
                lines.append(f'  "{kind}" -> "{id(pad):x}";')
        lines.append("}")
        return "\n".join(lines)

    def is_transcoding(self, kind: str) -> bool:
        return kind in self.transcoding or super().is_transcoding(kind)

    # -- the playback ---------------------------------------------------------------------------

    def _playback(self) -> Playback:
        """The running playback, started (paused) if there is none."""
        if self.playback is None:
            self.playback = Playback(
                self.source,
                self,
                clock=self._clock,
                packetizers=self._packetizers,
                repair_keyframes=not self.use_encoded_media,
                loop=asyncio.get_running_loop(),
            )
            self._running[self.playback] = asyncio.Event()
        return self.playback

    def _end_playback(self) -> None:
        """Let the playback's thread close its source; what it still reports is ignored."""
        if self.playback is not None:
            self.playback.close()
            self.playback = None
        for kind, codec in tuple(self.transcoding.items()):
            del self.transcoding[kind]
            self._transcoding(kind, codec, False)

    # -- what the playback reports (PlaybackListener), on the event loop -------------------------

    def on_playback_frame(self, playback: Playback, kind: str, frame: EncodedFrame) -> None:
        if playback is self.playback and not self.released:
            self.hubs[kind].push(frame)

    def on_playback_opened(self, playback: Playback, info: SourceInfo) -> None:
        if playback is self.playback:
            self.info = info

    def on_playback_ended(self, playback: Playback) -> None:
        if playback is self.playback and not self.released:
            self._end_playback()
            self.set_state("STOP")
            self.emit("EndOfStream")

    def on_playback_failed(self, playback: Playback, error_type: str, message: str) -> None:
        if playback is not self.playback or self.released:
            return
        self._end_playback()
        self.emit(
            "Error",
            description=f"{'Invalid URI' if error_type == INVALID_URI else 'Invalid Media'}"
            f" ({message})",
            errorCode=0,  # what KMS sends with these two
            type=error_type,
        )
        self.set_state("STOP")

    def on_playback_transcoding(self, playback: Playback, kind: str, codec: str, on: bool) -> None:
        if playback is self.playback and not self.released and on:
            self.transcoding[kind] = codec
            self._transcoding(kind, codec, True)

    def on_playback_closed(self, playback: Playback) -> None:
        finished = self._running.pop(playback, None)
        if finished is not None:
            finished.set()

    async def on_release(self) -> None:
        self._end_playback()
        running = tuple(self._running.values())
        if running:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    for finished in running:
                        await finished.wait()
            except TimeoutError:
                logger.error("%s: the source was not closed after %.0f s", self.id, CLOSE_TIMEOUT)
        await super().on_release()


def player_source(uri: str, directory: Path, network_cache: int) -> Source:
    """Where a player reads: `file://` URIs and paths inside the server's directory (40107
    elsewhere), or http://, https:// and rtsp:// URLs."""
    scheme = urlsplit(uri).scheme.lower() if isinstance(uri, str) else ""
    if scheme in NETWORK_SCHEMES:
        return network_source(uri, scheme, network_cache)
    if scheme not in ("", "file"):
        raise KurentoError(
            Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
            f"URI '{uri}' is not supported: this server plays file://, http://, https:// and "
            "rtsp:// URIs",
        )
    return file_source(str(file_path(uri, directory)))
