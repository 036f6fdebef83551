"""Errors of the Kurento Protocol client, one class per thing a caller may want to handle.

The media server answers with JSON-RPC errors `{"code", "message", "data": {"type"}}`;
`error_from_response` turns one into the most specific class below. Transport trouble (no
server, a timeout, a dropped socket) is `MediaServerUnavailable`.
"""

from __future__ import annotations

from typing import Any


class KurentoError(Exception):
    """An error the media server answered with."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def type_name(self) -> str | None:
        """The KMS error type, e.g. "MEDIA_OBJECT_NOT_FOUND", when the server sent one."""
        if isinstance(self.data, dict) and isinstance(self.data.get("type"), str):
            return self.data["type"]
        return None


class InvalidSession(KurentoError):
    """40007: the server no longer knows our session; every object it held is gone."""


class NotEnoughResources(KurentoError):
    """40009: the server is overloaded or refused the request rate."""


class TypeNotFound(KurentoError):
    """40108 (KMS 7; 40100 in older servers): the server has no such media element class."""


class ObjectNotFound(KurentoError):
    """40101: the media object does not exist (released, or the server restarted)."""


class InvalidParams(KurentoError):
    """-32602, 40001, 40107: the request's parameters were refused (40001, MARSHALL_ERROR, is
    what KMS 7 answers for a missing or wrongly typed parameter)."""


class MethodNotFound(KurentoError):
    """-32601, 40008, 40105: the server or object has no such method."""


class SdpError(KurentoError):
    """40200-40211: an SDP offer or answer could not be processed."""


class IceError(KurentoError):
    """40400-40401: ICE gathering failed or a candidate was refused."""


class MediaServerUnavailable(Exception):
    """The media server could not be reached, dropped the connection or did not answer in time."""


class RequestTimeout(MediaServerUnavailable):
    """No answer to a request within its timeout."""


_BY_CODE: dict[int, type[KurentoError]] = {
    40007: InvalidSession,
    40009: NotEnoughResources,
    40100: TypeNotFound,
    40108: TypeNotFound,
    40101: ObjectNotFound,
    -32602: InvalidParams,
    40001: InvalidParams,
    40107: InvalidParams,
    -32601: MethodNotFound,
    40008: MethodNotFound,
    40105: MethodNotFound,
}


def error_from_response(error: Any) -> KurentoError:
    """The exception for a JSON-RPC `error` member (tolerating malformed ones)."""
    if not isinstance(error, dict):
        return KurentoError(-32603, f"Malformed error from the media server: {error!r}"[:300])
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else -32603
    message = str(error.get("message", "Unknown error"))
    data = error.get("data")
    if 40200 <= code <= 40299:
        cls: type[KurentoError] = SdpError
    elif 40400 <= code <= 40499:
        cls = IceError
    else:
        cls = _BY_CODE.get(code, KurentoError)
    return cls(code, message, data)
