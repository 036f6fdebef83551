"""Messages browsers may send on the room socket and on the connection-test socket, and their
validation.

docs/protocol.md is the reference for browser authors. Each message a browser sends is a JSON
object with a `type` and, optionally, an `id` the server echoes in its reply. Message types are
declared below as frozen dataclasses; their annotated fields are the message's fields, and
`parse_client_message` (the room socket) and `parse_connection_test_message` (the pre-join
connection test) check presence, types, ranges and lengths before anything acts on them. Each
socket knows only its own types: a room message on the test socket is an unknown type, and so
is a test message on the room socket.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from signaling.protocol.fields import declared, matches
from signaling.protocol.server import Error

_MAX_ID_LENGTH = 64
_DEFAULT_MAX_STRING = 4096
# Integer fields name database rows (participant ids): positive, and within a bigint. A larger
# number would overflow the database driver (SQLite's) before any lookup could say "not found".
_MAX_ROW_ID = 2**63 - 1
# A request id is only echoed back, but stays within what JavaScript numbers hold exactly.
_MAX_REQUEST_ID = 2**53 - 1


class ProtocolError(Exception):
    """A message the server will not act on. The connection stays open."""

    def __init__(self, code: str, message: str, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def payload(self) -> dict[str, Any]:
        return Error(code=self.code, message=self.message, id=self.ref).payload()


@dataclass(frozen=True)
class ClientMessage:
    type_name: ClassVar[str]
    id: str | int | None

    def problem(self) -> str | None:
        """What is wrong with the fields beyond their types, or None; messages override it."""
        return None


_MESSAGE_TYPES: dict[str, type[ClientMessage]] = {}
# The connection-test socket's own (signaling.connection_test).
_CONNECTION_TEST_TYPES: dict[str, type[ClientMessage]] = {}


def _message(cls: type[ClientMessage]) -> type[ClientMessage]:
    _MESSAGE_TYPES[cls.type_name] = cls
    return cls


M = typing.TypeVar("M", bound=ClientMessage)


@typing.dataclass_transform(frozen_default=True)
def message(cls: type[M]) -> type[M]:
    """Declare a message of the room socket: a frozen dataclass the parser knows by its
    `type_name`."""
    _message(dataclass(frozen=True)(cls))
    return cls


def _connection_test_message(cls: type[ClientMessage]) -> type[ClientMessage]:
    _CONNECTION_TEST_TYPES[cls.type_name] = cls
    return cls


@_message
@_connection_test_message
@dataclass(frozen=True)
class Ping(ClientMessage):
    """Keep-alive; answered with `pong`."""

    type_name: ClassVar[str] = "ping"


@message
class Sync(ClientMessage):
    """Ask for a fresh room snapshot."""

    type_name: ClassVar[str] = "sync"


@message
class Leave(ClientMessage):
    """Say goodbye: the server records the leave and closes the connection."""

    type_name: ClassVar[str] = "leave"


_MAX_SDP_LENGTH = 60_000
_MAX_CANDIDATE_LENGTH = 1024
_MAX_MID_LENGTH = 32
_CANDIDATE_KEYS = {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}


# What every WebRTC offer has: without them the connection could never come up (no DTLS
# fingerprint, no ICE credentials), so the media server is not even asked.
_SDP_REQUIRED = (("m=", "media section"), ("a=fingerprint:", "DTLS fingerprint"))
_SDP_REQUIRED += (("a=ice-ufrag:", "ICE credentials"), ("a=ice-pwd:", "ICE credentials"))


def _sdp_problem(kind: str, sdp: str) -> str | None:
    if not sdp.startswith("v=0"):
        return f"'sdp' in '{kind}' must be an SDP offer (it starts with 'v=0')."
    lines = sdp.replace("\r\n", "\n").split("\n")
    for prefix, what in _SDP_REQUIRED:
        if not any(line.startswith(prefix) for line in lines):
            return f"'sdp' in '{kind}' is not a WebRTC offer: it has no {what}."
    return None


# What a participant publishes: its camera and microphone, or a shared screen (with the tab's
# or system's sound where the browser offers it). Each is a connection of its own.
Source = Literal["camera", "screen"]
# What a participant's page receives (or stops): those, or a video a participant plays into the
# room (`play`), which the media server sends as that participant's "playback".
Watched = Literal["camera", "screen", "playback"]


@message
class Publish(ClientMessage):
    """Send your camera and microphone, or your screen (`source`): `sdp` is the offer; the
    reply `published` has the answer."""

    type_name: ClassVar[str] = "publish"
    sdp: str = dataclasses.field(metadata={"max_length": _MAX_SDP_LENGTH})
    source: Source = "camera"

    def problem(self) -> str | None:
        return _sdp_problem(self.type_name, self.sdp)


@message
class Unpublish(ClientMessage):
    """Stop sending a source (your camera, or your screen: stop sharing; or stop the video you
    play into the room, "playback"); the reply is `unpublished`."""

    type_name: ClassVar[str] = "unpublish"
    source: Watched = "camera"


@message
class Play(ClientMessage):
    """Play a video into the room for everyone (the room's owner, staff): `file` names one of
    the room's uploaded videos ("video:<id>") or ready recordings ("recording:<id>"). The reply
    `playing` has its title; everyone gets `participant_published` with source "playback". Stop
    it with `unpublish` of source "playback"; it also stops at its end."""

    type_name: ClassVar[str] = "play"
    file: str = dataclasses.field(metadata={"max_length": 40})


@message
class Subscribe(ClientMessage):
    """Receive a publisher's camera or screen: `sdp` is the offer; the reply `subscribed` has
    the answer."""

    type_name: ClassVar[str] = "subscribe"
    publisher: int
    sdp: str = dataclasses.field(metadata={"max_length": _MAX_SDP_LENGTH})
    # false: audio only for now (the tile is not on screen); `video` turns it on later
    video: bool = True
    source: Watched = "camera"

    def problem(self) -> str | None:
        return _sdp_problem(self.type_name, self.sdp)


@message
class Video(ClientMessage):
    """Turn the video you receive from a publisher's source on or off (its tile came on or went
    off screen); audio goes on. The reply is `video_set`."""

    type_name: ClassVar[str] = "video"
    publisher: int
    on: bool
    source: Watched = "camera"


@message
class Unsubscribe(ClientMessage):
    """Stop receiving a publisher's source; the reply is `unsubscribed`."""

    type_name: ClassVar[str] = "unsubscribe"
    publisher: int
    source: Watched = "camera"


@message
class MediaState(ClientMessage):
    """Your microphone (`audio`) or camera (`video`) was switched on or off; others are told."""

    type_name: ClassVar[str] = "media_state"
    audio: bool
    video: bool


@message
class Ice(ClientMessage):
    """A trickled ICE candidate for your publishing connection of `source` ("publish") or the
    one receiving publisher `target`'s `source`."""

    type_name: ClassVar[str] = "ice"
    target: str | int
    candidate: dict
    source: Watched = "camera"

    @property
    def publisher(self) -> int | None:
        """The publisher whose receiving connection the candidate is for; None: publishing."""
        return None if self.target == "publish" else int(self.target)

    def problem(self) -> str | None:
        if isinstance(self.target, str) and self.target != "publish":
            return "'target' in 'ice' must be \"publish\" or a publisher's participant id."
        return _candidate_problem(self.candidate)


def _candidate_problem(candidate: dict[str, Any]) -> str | None:
    """What is wrong with a trickled candidate (`ice` on either socket), or None."""
    extra = set(candidate) - _CANDIDATE_KEYS
    if extra:
        return f"'candidate' does not take the field(s): {', '.join(sorted(extra)[:5])}."
    text, mid = candidate.get("candidate"), candidate.get("sdpMid")
    index = candidate.get("sdpMLineIndex")
    if not isinstance(text, str) or len(text) > _MAX_CANDIDATE_LENGTH:
        return f"'candidate.candidate' must be a string of {_MAX_CANDIDATE_LENGTH} or fewer."
    if mid is not None and not (isinstance(mid, str) and len(mid) <= _MAX_MID_LENGTH):
        return f"'candidate.sdpMid' must be null or a string of {_MAX_MID_LENGTH} or fewer."
    if index is not None and not (
        isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 64
    ):
        return "'candidate.sdpMLineIndex' must be null or an integer from 0 to 63."
    if mid is None and index is None:
        return "'candidate' needs 'sdpMid' or 'sdpMLineIndex'."
    fragment = candidate.get("usernameFragment")
    if fragment is not None and not (isinstance(fragment, str) and len(fragment) <= 256):
        return "'candidate.usernameFragment' must be null or a short string."
    return None


# --- the connection-test socket (ws/connection-test/) ----------------------------------------
# Its `ice` is the room's `ice` on the wire, with the one target that socket has.
@_connection_test_message
@dataclass(frozen=True)
class LoopbackStart(ClientMessage):
    """Start the connection test: `sdp` is a send-receive offer; the reply `loopback_started`
    has the answer, and the media server sends the browser's own media back to it."""

    type_name: ClassVar[str] = "loopback_start"
    sdp: str = dataclasses.field(metadata={"max_length": _MAX_SDP_LENGTH})

    def problem(self) -> str | None:
        return _sdp_problem(self.type_name, self.sdp)


@_connection_test_message
@dataclass(frozen=True)
class LoopbackIce(ClientMessage):
    """A trickled ICE candidate for the connection test's connection (`target` "loopback")."""

    type_name: ClassVar[str] = "ice"
    target: str
    candidate: dict

    def problem(self) -> str | None:
        if self.target != "loopback":
            return "'target' in 'ice' must be \"loopback\" on the connection-test socket."
        return _candidate_problem(self.candidate)


@_connection_test_message
@dataclass(frozen=True)
class LoopbackStop(ClientMessage):
    """Stop the connection test (its media is released); the reply is `loopback_stopped`."""

    type_name: ClassVar[str] = "loopback_stop"


def message_types() -> tuple[str, ...]:
    """The message types of the room socket."""
    return tuple(sorted(_MESSAGE_TYPES))


def connection_test_message_types() -> tuple[str, ...]:
    """The message types of the connection-test socket."""
    return tuple(sorted(_CONNECTION_TEST_TYPES))


def _type_label(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(json.dumps(option) for option in typing.get_args(annotation))
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names |= {dict: "an object", list: "a list", type(None): "null"}
    args = typing.get_args(annotation) or (annotation,)
    return " or ".join(names.get(typing.get_origin(a) or a, str(a)) for a in args)


def parse_client_message(text: str) -> ClientMessage:
    """Validate one text frame of the room socket and return the typed message, or raise
    ProtocolError."""
    return _parse(text, _MESSAGE_TYPES)


def parse_connection_test_message(text: str) -> ClientMessage:
    """Validate one text frame of the connection-test socket and return the typed message, or
    raise ProtocolError."""
    return _parse(text, _CONNECTION_TEST_TYPES)


def _parse(text: str, types: dict[str, type[ClientMessage]]) -> ClientMessage:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid", "A message must be a JSON object.")
    ref = data.get("id")
    if ref is not None and not (
        (isinstance(ref, str) and len(ref) <= _MAX_ID_LENGTH)
        or (isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) <= _MAX_REQUEST_ID)
    ):
        raise ProtocolError(
            "invalid",
            f"'id' must be a string of at most {_MAX_ID_LENGTH} characters or an integer "
            f"of at most {_MAX_REQUEST_ID}.",
        )
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid", "A message needs a string 'type'.", ref)
    cls = types.get(kind)
    if cls is None:
        known = ", ".join(sorted(types))
        raise ProtocolError(
            "unknown_type", f"Unknown message type '{kind[:40]}'. Known types: {known}.", ref
        )
    hints, fields = declared(cls)
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
        if not matches(value, hints[name]):
            raise ProtocolError(
                "invalid", f"'{name}' in '{kind}' must be {_type_label(hints[name])}.", ref
            )
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= _MAX_ROW_ID:
            raise ProtocolError(
                "invalid", f"'{name}' in '{kind}' must be an id from 1 to {_MAX_ROW_ID}.", ref
            )
        limit = field.metadata.get("max_length", _DEFAULT_MAX_STRING)
        if isinstance(value, str) and len(value) > limit:
            raise ProtocolError(
                "invalid", f"'{name}' in '{kind}' is longer than {limit} characters.", ref
            )
        values[name] = value
    message = cls(**values)
    problem = message.problem()
    if problem is not None:
        raise ProtocolError("invalid", problem, ref)
    return message
