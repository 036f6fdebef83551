"""A recording sent to an `http://` or `https://` URI as it is written, as KMS's recorder does
(GStreamer's curlhttpsink): one POST whose body is sent in chunks (Transfer-Encoding: chunked),
with Basic authentication when the URI carries `user:password@`.

The muxer writes into an `HttpUpload` as into a file that cannot seek, so WebM and fragmented MP4
go out as a live stream. Writes happen on the recorder's own thread, never on the event loop.
"""

from __future__ import annotations

import base64
import http.client
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

CHUNK_BYTES = 64 * 1024  # what is gathered before a chunk goes out
TIMEOUT = 30.0  # seconds for the connection and for each send


@dataclass(frozen=True)
class HttpTarget:
    url: str  # without the credentials, for logs and messages
    secure: bool
    host: str
    port: int | None
    path: str
    credentials: tuple[str, str] | None = field(repr=False)

    def __str__(self) -> str:
        return self.url


def http_target(uri: str) -> HttpTarget | None:
    """The upload target of an http(s) URI; None for any other URI."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return HttpTarget(
        url=f"{parts.scheme}://{netloc}{path}",
        secure=parts.scheme == "https",
        host=parts.hostname,
        port=parts.port,
        path=path,
        credentials=credentials,
    )


class UploadError(OSError):
    """The receiving server refused the upload or went away."""


class HttpUpload:
    """A write-only stream that POSTs what is written to a target, in chunks."""

    def __init__(self, target: HttpTarget, content_type: str) -> None:
        self.target = target
        self._buffer = bytearray()
        connection_class = (
            http.client.HTTPSConnection if target.secure else http.client.HTTPConnection
        )
        self._connection = connection_class(target.host, target.port, timeout=TIMEOUT)
        self._connection.putrequest("POST", target.path)
        self._connection.putheader("Content-Type", content_type)
        self._connection.putheader("Transfer-Encoding", "chunked")
        if target.credentials is not None:
            token = base64.b64encode(":".join(target.credentials).encode()).decode()
            self._connection.putheader("Authorization", f"Basic {token}")
        self._connection.endheaders()
        self.sent = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_BYTES:
            self._send_buffer()
        return len(data)

    def flush(self) -> None:
        """Send what was written (the muxer flushes per packet: a live stream goes out live)."""
        self._send_buffer()

    def _send_buffer(self) -> None:
        if not self._buffer:
            return
        chunk, self._buffer = bytes(self._buffer), bytearray()
        self._connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.sent += len(chunk)

    def finish(self) -> None:
        """End the body and check the answer: a 2xx, or UploadError."""
        try:
            self._send_buffer()
            self._connection.send(b"0\r\n\r\n")
            response = self._connection.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise UploadError(f"{self.target.url} answered {response.status} {response.reason}")
        finally:
            self._connection.close()

    def abort(self) -> None:
        self._connection.close()
