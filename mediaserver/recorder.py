"""RecorderEndpoint: what is connected to it, written to a file (recording.py does the writing).

States and events follow KMS: `record()` starts (UriEndpointStateChanged START, then Recording),
`pause()` pauses (PAUSE, Paused) and the file leaves the pause out, `record()` again resumes at
the next keyframe, `stop()` finishes the file and reports STOP and Stopped once it is written;
`stopAndWait()` answers only then. A stopped recorder stays stopped: its file is complete. A
transition that does not apply (pause while stopped, record while stopping) is ignored, as KMS
only logs it. Releasing a recorder finishes its file first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from .elements import MediaPipeline, UriEndpoint
from .errors import Code, KurentoError
from .frames import EncodedFrame
from .http_upload import http_target
from .objects import Param, Registry
from .recording import PROFILES, RecordingWriter
from .uris import file_path

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds stopAndWait waits for the file to be finished


class RecorderEndpoint(UriEndpoint):
    TYPE = "RecorderEndpoint"
    ABSTRACT = False
    MODULE_NAME = "elements"
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("uri", "String"),
        Param("mediaProfile", "MediaProfileSpecType", optional=True),
        Param("stopOnEndOfStream", "boolean", optional=True),
    )
    EVENTS = frozenset({"Recording", "Paused", "Stopped"})

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        uri: str,
        directory: Path,
        media_profile: str = "WEBM",
        stop_on_end_of_stream: bool = False,
    ) -> None:
        profile = PROFILES.get(media_profile)
        if profile is None:
            raise KurentoError(
                Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
                f"Media profile '{media_profile}' is not supported by this server "
                f"(it records {', '.join(PROFILES)})",
            )
        # An http(s) URI gets the recording as an upload (as KMS's curlhttpsink sends it);
        # anything else must be a file in the recordings directory.
        path = http_target(uri) or file_path(uri, directory)
        self.profile = profile
        super().__init__(registry, pipeline, uri)
        self.path = path
        self.stop_on_end_of_stream = stop_on_end_of_stream
        self.writer: RecordingWriter | None = None
        self.stopping = False
        self.finished = asyncio.Event()
        self._started_at = 0.0
        self._paused_at = 0.0
        self._paused_for = 0.0

    def accepts(self, kind: str) -> Any:
        # Video in another codec than the file takes is transcoded by the source's hub.
        return lambda: self.profile.video if kind == "video" else ()

    def flow_in_at(self, kind: str) -> float:
        return self.pads[kind].last_frame_at

    def flow_out_at(self, kind: str) -> float:
        return 0.0  # nothing leaves a recorder

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        if self.state == "START" and not self.stopping and self.writer is not None:
            source = self.sources.get(kind.upper())
            self.writer.push(kind, frame, self._recording_time(), id(source))

    def _recording_time(self) -> float:
        return time.monotonic() - self._started_at - self._paused_for

    # -- operations ---------------------------------------------------------------------------

    async def op_record(self) -> None:
        if self.stopping:
            logger.warning("%s: record() ignored, the recorder is stopped", self.id)
            return
        if self.state == "START":
            return
        now = time.monotonic()
        # Video is written from a keyframe: the one the pad waited for when it was connected
        # went by before recording, so wait for the next one, and ask the source for it.
        self.pads["video"].resync()
        if self.writer is None:
            loop = asyncio.get_running_loop()
            self.writer = RecordingWriter(
                self.path,
                self.profile,
                on_error=lambda message: _on_loop(loop, self._failed, message),
                on_closed=lambda: _on_loop(loop, self._closed),
            )
            self._started_at = now
        elif self.state == "PAUSE":
            self._paused_for += now - self._paused_at
        self.set_state("START")
        self.emit("Recording")

    async def pause_uri(self) -> None:
        if self.state != "START" or self.stopping:
            logger.warning("%s: pause() ignored in state %s", self.id, self.state)
            return
        self._paused_at = time.monotonic()
        self.set_state("PAUSE")
        self.emit("Paused")

    async def stop_uri(self) -> None:
        if self.writer is None or self.stopping:
            return  # never started (KMS refuses that stop, and only logs it) or already stopping
        self.stopping = True
        self.writer.close()

    async def op_stopAndWait(self) -> None:
        await self.stop_uri()
        if self.writer is None:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.finished.wait()
        except TimeoutError:
            logger.error("%s: the recording was not finished after %.0f s", self.id, STOP_TIMEOUT)

    # -- what the writer reports ----------------------------------------------------------------

    def _closed(self) -> None:
        self.finished.set()
        if self.released:
            return
        self.set_state("STOP")
        self.emit("Stopped")

    def _failed(self, message: str) -> None:
        if not self.released:
            self.emit(
                "Error",
                description=message,
                errorCode=Code.UNEXPECTED_ERROR.value,
                type="UNEXPECTED_ERROR",
            )

    async def on_release(self) -> None:
        await self.op_stopAndWait()
        await super().on_release()


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """Run `callback` on the event loop from the writer's thread, unless the loop has closed."""
    with contextlib.suppress(RuntimeError):  # the server has stopped
        loop.call_soon_threadsafe(callback, *args)
