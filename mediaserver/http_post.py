"""HttpPostEndpoint: media a client uploads with an HTTP POST, played to what is connected to it,
as KMS's HttpPostEndpoint does: `getUrl()` names a URL of the media server's HTTP listener, a
client POSTs a WebM or MP4 to it (a plain body, chunked or not, or a multipart/form-data upload
as a browser form sends it), and the media leaves the element as it arrives, EndOfStream when it
ends. After `disconnectionTimeout` seconds without a client the URL is gone
(MediaSessionTerminated), and it is gone on release too.

The body is demuxed by playback.py's `Playback` (a PyAV thread, frames sent when their
timestamps say, VP8/H.264/Opus as they are, others transcoded) reading from a `BodyStream`: what
the HTTP side puts in, bounded, so a fast upload waits for the media it carries to be played.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import threading
import uuid
from typing import Any

from .elements import MediaPipeline
from .frames import EncodedFrame
from .objects import Param, Registry
from .playback import Clock, Playback, Source, SourceInfo, packetizers
from .webrtc import SessionEndpoint

logger = logging.getLogger(__name__)

_FORMATS = "matroska,webm,mov,mp4"
_QUEUE_CHUNKS = 64  # chunks of body waiting for the demuxer (a few MiB at most)
_READ_BYTES = 64 * 1024
_MAX_HEADER_LINES = 100
_WAIT = 0.2  # seconds a blocked body reader or writer looks up to see if it should stop


class BodyStream:
    """A file PyAV reads on its thread (blocking) while the event loop writes the body in.
    `abort()` wakes both sides for good (release), so neither a reader nor a writer hangs."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._buffer = b""
        self._ended = False
        self._aborted = threading.Event()

    async def write(self, data: bytes) -> None:
        if data:
            await asyncio.to_thread(self._put, data)

    def _put(self, item: bytes | None) -> None:
        while not self._aborted.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=_WAIT)
                return

    async def end(self) -> None:
        """No more body (it ended, or the client went away): the demuxer sees the end."""
        await asyncio.to_thread(self._put, None)

    def abort(self) -> None:
        self._aborted.set()

    def read(self, size: int = -1) -> bytes:
        while not self._ended and not self._buffer:
            try:
                chunk = self._chunks.get(timeout=_WAIT)
            except queue.Empty:
                self._ended = self._aborted.is_set()
                continue
            if chunk is None:
                self._ended = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def seekable(self) -> bool:
        return False


class MultipartFile:
    """The content of the first part of a multipart/form-data body, fed in pieces as they
    arrive (RFC 7578): the part's headers and the boundaries are dropped."""

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode()
        self._pending = b"\r\n"  # the first boundary has no CRLF before it
        self._state = "preamble"

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        if self._state == "preamble":
            start = self._pending.find(self._delimiter)
            headers_end = self._pending.find(b"\r\n\r\n", max(start, 0) + len(self._delimiter))
            if start < 0 or headers_end < 0:
                return b""
            self._pending = self._pending[headers_end + 4 :]
            self._state = "content"
        if self._state != "content":
            return b""
        end = self._pending.find(self._delimiter)
        if end >= 0:
            content, self._pending, self._state = self._pending[:end], b"", "done"
            return content
        keep = len(self._delimiter) - 1  # a delimiter may be split across pieces
        content, self._pending = self._pending[:-keep], self._pending[-keep:]
        return content


class HttpPostServer:
    """The media server's HTTP listener for HttpPostEndpoints: one per server, listening while
    any endpoint has a URL, each endpoint at a path of its own."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._endpoints: dict[str, HttpPostEndpoint] = {}
        self._clients: set[asyncio.Task[Any]] = set()

    async def register(self, endpoint: HttpPostEndpoint) -> str:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        path = str(uuid.uuid4())
        self._endpoints[path] = endpoint
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}/{path}"

    async def unregister(self, endpoint: HttpPostEndpoint) -> None:
        for path, registered in tuple(self._endpoints.items()):
            if registered is endpoint:
                del self._endpoints[path]
        if not self._endpoints:
            await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in tuple(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            status = await self._request(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            logger.info("HTTP POST endpoint: bad request: %s", exc)
            status = "400 Bad Request"
        except asyncio.CancelledError:
            status = "503 Service Unavailable"
        finally:
            self._clients.discard(task)
        with contextlib.suppress(ConnectionError):
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> str:
        method, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        endpoint = self._endpoints.get(target.lstrip("/").split("?", 1)[0])
        if endpoint is None:
            return "404 Not Found"
        if method != "POST":
            return "405 Method Not Allowed"
        if not endpoint.begin_upload():
            return "409 Conflict"
        try:
            await endpoint.receive(_body(reader, headers))
        finally:
            endpoint.end_upload()
        return "200 OK"


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    """The request's body in pieces (chunked or with a length, or until the client closes),
    unwrapped from multipart/form-data when it is that."""
    boundary = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
    multipart = (
        MultipartFile(boundary[1])
        if boundary and headers.get("content-type", "").startswith("multipart/")
        else None
    )
    async for piece in _raw_body(reader, headers):
        yield multipart.feed(piece) if multipart is not None else piece


async def _raw_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            yield await reader.readexactly(size)
            await reader.readexactly(2)
        return
    remaining = int(headers["content-length"]) if "content-length" in headers else -1
    while remaining != 0:
        piece = await reader.read(_READ_BYTES if remaining < 0 else min(remaining, _READ_BYTES))
        if not piece:
            return
        remaining -= len(piece) if remaining > 0 else 0
        yield piece


class HttpEndpoint(SessionEndpoint):
    """An endpoint with a URL of the media server's HTTP listener."""

    TYPE = "HttpEndpoint"
    MODULE_NAME = "elements"

    def __init__(self, registry: Registry, pipeline: MediaPipeline, server: HttpPostServer) -> None:
        super().__init__(registry, pipeline)
        self.server = server
        self.url: str | None = None

    async def op_getUrl(self) -> str:
        """The URL to POST to; registered on first use, as long as the endpoint lives and a
        client comes within the disconnection timeout of the last one leaving."""
        if self.url is None:
            self.url = await self.server.register(self)  # type: ignore[arg-type]
        return self.url


class HttpPostEndpoint(HttpEndpoint):
    TYPE = "HttpPostEndpoint"
    ABSTRACT = False
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("disconnectionTimeout", "int", optional=True),
        Param("useEncodedMedia", "boolean", optional=True),
    )
    EVENTS = frozenset({"EndOfStream"})

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        server: HttpPostServer,
        disconnection_timeout: int = 2,
        use_encoded_media: bool = False,
    ) -> None:
        super().__init__(registry, pipeline, server)
        self.disconnection_timeout = disconnection_timeout
        self.use_encoded_media = use_encoded_media
        self.uploading = False
        self.playback: Playback | None = None
        self.body: BodyStream | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._clock = Clock.now()
        self._packetizers = packetizers()

    def flow_in_at(self, kind: str) -> float:
        return 0.0  # nothing comes in from other elements

    def request_keyframe(self, kind: str) -> None:
        if kind == "video" and self.playback is not None:
            self.playback.request_keyframe()

    # -- uploads, from the HTTP listener ---------------------------------------------------------

    def begin_upload(self) -> bool:
        """A client starts posting; one at a time."""
        if self.uploading or self.released:
            return False
        self.uploading = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.emit("MediaSessionStarted")
        return True

    async def receive(self, pieces: Any) -> None:
        body = self.body = BodyStream()
        if self.playback is not None:
            self.playback.close()
        self.playback = Playback(
            Source(body, {"format_whitelist": _FORMATS}, False),  # type: ignore[arg-type]
            self,
            clock=self._clock,
            packetizers=self._packetizers,
            repair_keyframes=not self.use_encoded_media,
            loop=asyncio.get_running_loop(),
        )
        self.playback.play()
        try:
            async for piece in pieces:
                await body.write(piece)
        finally:
            await body.end()

    def end_upload(self) -> None:
        """The client left: the URL lives on for the disconnection timeout."""
        self.uploading = False
        if not self.released:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.disconnection_timeout, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.uploading or self.released:
            return
        self.url = None
        task = asyncio.ensure_future(self.server.unregister(self))
        _expiring.add(task)
        task.add_done_callback(_expiring.discard)
        self.emit("MediaSessionTerminated")

    # -- what the playback reports (PlaybackListener), on the event loop -------------------------

    def on_playback_frame(self, playback: Playback, kind: str, frame: EncodedFrame) -> None:
        if playback is self.playback and not self.released:
            self.hubs[kind].push(frame)

    def on_playback_opened(self, playback: Playback, info: SourceInfo) -> None:
        pass

    def on_playback_ended(self, playback: Playback) -> None:
        if playback is self.playback and not self.released:
            self.playback = None
            self.emit("EndOfStream")

    def on_playback_failed(self, playback: Playback, error_type: str, message: str) -> None:
        if playback is self.playback and not self.released:
            self.playback = None
            self.emit(
                "Error", description=f"Invalid Media ({message})", errorCode=0, type=error_type
            )

    def on_playback_transcoding(self, playback: Playback, kind: str, codec: str, on: bool) -> None:
        if playback is self.playback and not self.released:
            self._transcoding(kind, codec, on)

    def on_playback_closed(self, playback: Playback) -> None:
        pass

    async def on_release(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.playback is not None:
            self.playback.close()
            self.playback = None
        if self.body is not None:
            self.body.abort()
        await self.server.unregister(self)
        await super().on_release()


_expiring: set[asyncio.Future[None]] = set()
