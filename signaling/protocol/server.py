"""Messages the server sends on the room socket: every one declared here, as a frozen dataclass
whose annotated fields are the message's fields.

Signaling code builds them typed (`MediaReset(reason=...).payload()`); events that other parts
of the product put on the channel layer as plain dicts (rooms.events, which knows nothing of
WebSockets) are checked against the same declarations by `server_message` before they go out,
so nothing reaches a browser that docs/protocol.md does not describe.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from signaling.protocol.fields import declared, matches

_SERVER_TYPES: dict[str, type[ServerMessage]] = {}


@dataclass(frozen=True, kw_only=True)
class ServerMessage:
    type_name: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The message as JSON-ready data; a reply's `id` only when the request had one."""
        body: dict[str, Any] = {"type": self.type_name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "id" and value is None:
                continue
            body[field.name] = value
        return body


@dataclass(frozen=True, kw_only=True)
class Reply(ServerMessage):
    """An answer to a request: it echoes the request's `id`, when it had one."""

    id: str | int | None = None


def _message(cls: type[ServerMessage]) -> type[ServerMessage]:
    _SERVER_TYPES[cls.type_name] = cls
    return cls


M = typing.TypeVar("M", bound=ServerMessage)


@typing.dataclass_transform(frozen_default=True, kw_only_default=True)
def message(cls: type[M]) -> type[M]:
    """Declare a message the server sends: a frozen, keyword-only dataclass that
    `server_message` checks events against by its `type_name`."""
    _message(dataclass(frozen=True, kw_only=True)(cls))
    return cls


# --- replies ---------------------------------------------------------------------------------
@message
class Pong(Reply):
    type_name: ClassVar[str] = "pong"


@message
class Snapshot(Reply):
    """The room as it is now: sent on joining and in answer to `sync`."""

    type_name: ClassVar[str] = "snapshot"
    you: int
    ice: dict
    room: dict
    participants: list
    # Raised hands in the order they went up ({participant_id, raised_at}), and the last 100
    # chat messages, oldest first (signaling.protocol.collaboration).
    hands: list = dataclasses.field(default_factory=list)
    chat: list = dataclasses.field(default_factory=list)
    # The user ids of the room's moderators, its owner included (signaling.protocol.moderation).
    moderators: list = dataclasses.field(default_factory=list)
    # Who waits to be let in (moderators only; empty for others).
    waiting: list = dataclasses.field(default_factory=list)
    # The meeting's running recording ({id, started_at, started_by}), or null.
    recording: dict | None = None


@message
class Error(Reply):
    type_name: ClassVar[str] = "error"
    code: str
    message: str


@message
class Published(Reply):
    type_name: ClassVar[str] = "published"
    sdp: str
    source: str = "camera"


@message
class Playing(Reply):
    """The video asked for plays into the room now (source "playback" of yours)."""

    type_name: ClassVar[str] = "playing"
    title: str


@message
class Unpublished(Reply):
    type_name: ClassVar[str] = "unpublished"
    source: str = "camera"


@message
class Subscribed(Reply):
    type_name: ClassVar[str] = "subscribed"
    publisher: int
    sdp: str
    source: str = "camera"


@message
class Unsubscribed(Reply):
    type_name: ClassVar[str] = "unsubscribed"
    publisher: int
    source: str = "camera"


@message
class VideoSet(Reply):
    """The video from `publisher`'s `source` is now on or off, as asked."""

    type_name: ClassVar[str] = "video_set"
    publisher: int
    on: bool
    source: str = "camera"


# --- to this connection ----------------------------------------------------------------------
@message
class Refused(ServerMessage):
    type_name: ClassVar[str] = "refused"
    reason: str
    message: str


@message
class IceServers(ServerMessage):
    type_name: ClassVar[str] = "ice_servers"
    ice: dict


@message
class IceCandidate(ServerMessage):
    """A candidate of one of this connection's endpoints on the media server: the one
    publishing `source` (`target` "publish") or the one receiving publisher `target`'s."""

    type_name: ClassVar[str] = "ice_candidate"
    target: str | int
    candidate: dict
    source: str = "camera"


# --- to everyone in the room -----------------------------------------------------------------
@message
class ParticipantJoined(ServerMessage):
    type_name: ClassVar[str] = "participant_joined"
    participant: dict


@message
class ParticipantLeft(ServerMessage):
    type_name: ClassVar[str] = "participant_left"
    participant_id: int
    reason: str


@message
class ParticipantPublished(ServerMessage):
    """A participant sends a source: its camera, a shared screen, or a video it plays into the
    room ("playback", whose `title` says which)."""

    type_name: ClassVar[str] = "participant_published"
    participant_id: int
    source: str = "camera"
    title: str = ""


@message
class ParticipantUnpublished(ServerMessage):
    type_name: ClassVar[str] = "participant_unpublished"
    participant_id: int
    source: str = "camera"


@message
class ParticipantMedia(ServerMessage):
    type_name: ClassVar[str] = "participant_media"
    participant_id: int
    audio: bool
    video: bool


@message
class RoomUpdated(ServerMessage):
    type_name: ClassVar[str] = "room_updated"
    room: dict


@message
class RoomClosed(ServerMessage):
    """The room was closed or deleted, or a moderator ended the meeting (`reason`: closed,
    deleted, ended): the connection closes after this (CLOSE_ROOM_CLOSED)."""

    type_name: ClassVar[str] = "room_closed"
    reason: str
    message: str


@message
class MediaReset(ServerMessage):
    """The room's media was rebuilt (`reason`: session_lost, server_down, pipeline_gone): every
    connection to the media server is gone; publish and subscribe afresh."""

    type_name: ClassVar[str] = "media_reset"
    reason: str


@message
class MediaInterrupted(ServerMessage):
    """The room's media server cannot be reached and there is no other one to move to."""

    type_name: ClassVar[str] = "media_interrupted"


@message
class MediaRestored(ServerMessage):
    """The room's media server is back, with the room's media intact."""

    type_name: ClassVar[str] = "media_restored"


# --- the connection-test socket (ws/connection-test/) ----------------------------------------
# It also sends `ice_candidate` (target "loopback"), `pong`, `error` and `refused`.
@message
class LoopbackReady(ServerMessage):
    """The connection-test socket is open: the ICE configuration for the test's connection (as
    in `snapshot`, with TURN credentials of the user's own) and the test's time limit."""

    type_name: ClassVar[str] = "loopback_ready"
    ice: dict
    time_limit: float  # seconds a test may run before the server stops it


@message
class LoopbackStarted(Reply):
    """The answer to `loopback_start`: the media server sends the browser's media back."""

    type_name: ClassVar[str] = "loopback_started"
    sdp: str


@message
class LoopbackStopped(Reply):
    """The test's media is released (`reason`: requested, time_limit)."""

    type_name: ClassVar[str] = "loopback_stopped"
    reason: str


def server_message(data: dict[str, Any]) -> ServerMessage:
    """The typed message for an event from the channel layer; ValueError if it is not one."""
    cls = _SERVER_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"no server message has the type {data.get('type')!r}")
    hints, fields = declared(cls)
    unexpected = set(data) - set(fields) - {"type"}
    if unexpected:
        raise ValueError(f"{cls.type_name} has no field(s) {sorted(unexpected)}")
    values = {}
    for name, field in fields.items():
        if name not in data:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ValueError(f"{cls.type_name} needs {name!r}")
            continue
        if not matches(data[name], hints[name]):
            raise ValueError(f"{cls.type_name}.{name} is not {hints[name]}: {data[name]!r}")
        values[name] = data[name]
    return cls(**values)


def server_message_types() -> tuple[str, ...]:
    return tuple(sorted(_SERVER_TYPES))
