"""The room signaling protocol: messages browsers may send, their validation, and close codes.

docs/protocol.md is the reference for browser authors. Each message a browser sends is a JSON
object with a `type` and, optionally, an `id` the server echoes in its reply. Message types are
declared below as frozen dataclasses; their annotated fields are the message's fields, and
`parse_client_message` checks presence, types and lengths before anything acts on them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

# Close codes (4000-4999 are the application's own).
CLOSE_LEFT = 4000
CLOSE_STALE = 4408
CLOSE_FOR_REFUSAL = {
    "login_required": 4401,
    "private": 4403,
    "not_found": 4404,
    "full": 4409,
    "closed": 4410,
    "locked": 4423,
}

_MAX_ID_LENGTH = 64
_DEFAULT_MAX_STRING = 4096


class ProtocolError(Exception):
    """A message the server will not act on. The connection stays open."""

    def __init__(self, code: str, message: str, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            body["id"] = self.ref
        return body


@dataclass(frozen=True)
class ClientMessage:
    type_name: ClassVar[str]
    id: str | int | None


_MESSAGE_TYPES: dict[str, type[ClientMessage]] = {}


def _message(cls: type[ClientMessage]) -> type[ClientMessage]:
    _MESSAGE_TYPES[cls.type_name] = cls
    return cls


@_message
@dataclass(frozen=True)
class Ping(ClientMessage):
    """Keep-alive; answered with `pong`."""

    type_name: ClassVar[str] = "ping"


@_message
@dataclass(frozen=True)
class Sync(ClientMessage):
    """Ask for a fresh room snapshot."""

    type_name: ClassVar[str] = "sync"


@_message
@dataclass(frozen=True)
class Leave(ClientMessage):
    """Say goodbye: the server records the leave and closes the connection."""

    type_name: ClassVar[str] = "leave"


def message_types() -> tuple[str, ...]:
    return tuple(sorted(_MESSAGE_TYPES))


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, annotation)


def _type_label(annotation: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names |= {dict: "an object", list: "a list", type(None): "null"}
    args = typing.get_args(annotation) or (annotation,)
    return " or ".join(names.get(typing.get_origin(a) or a, str(a)) for a in args)


def parse_client_message(text: str) -> ClientMessage:
    """Validate one text frame and return the typed message, or raise ProtocolError."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid", "A message must be a JSON object.")
    ref = data.get("id")
    if ref is not None and not (
        (isinstance(ref, str) and len(ref) <= _MAX_ID_LENGTH)
        or (isinstance(ref, int) and not isinstance(ref, bool))
    ):
        raise ProtocolError(
            "invalid", f"'id' must be a string of at most {_MAX_ID_LENGTH} characters or a number."
        )
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid", "A message needs a string 'type'.", ref)
    cls = _MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(
            "unknown_type",
            f"Unknown message type '{kind[:40]}'. Known types: {', '.join(message_types())}.",
            ref,
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unexpected = sorted(set(data) - set(fields) - {"type"})
    if unexpected:
        raise ProtocolError(
            "invalid", f"'{kind}' does not take the field(s): {', '.join(unexpected)}.", ref
        )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name == "id":
            values[name] = ref
            continue
        if name not in data:
            if field.default is dataclasses.MISSING:
                raise ProtocolError("invalid", f"'{kind}' needs the field '{name}'.", ref)
            continue
        value = data[name]
        if not _matches(value, hints[name]):
            raise ProtocolError(
                "invalid", f"'{name}' in '{kind}' must be {_type_label(hints[name])}.", ref
            )
        limit = field.metadata.get("max_length", _DEFAULT_MAX_STRING)
        if isinstance(value, str) and len(value) > limit:
            raise ProtocolError(
                "invalid", f"'{name}' in '{kind}' is longer than {limit} characters.", ref
            )
        values[name] = value
    return cls(**values)
