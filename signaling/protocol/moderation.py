"""Messages of running a meeting, both ways: moderators, blocking someone's microphone or camera
(or everyone's), removing someone, the waiting room, recording, ending the meeting for everyone.

They register into the same registries as the room socket's other messages, like
`collaboration`. docs/protocol.md ("Running a meeting: moderators") describes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from signaling.protocol import client, server

MediaKind = Literal["audio", "video"]


@dataclass(frozen=True)
class ModerationMessage(client.ClientMessage):
    """What a browser sends to run the meeting (signaling.moderation acts on them)."""


# --- from the browser ---------------------------------------------------------------------------
@client.message
class Moderator(ModerationMessage):
    """Make a user present in the room a moderator of it (`on`: true) or take it back (the
    room's owner); the reply is `moderator_set`."""

    type_name: ClassVar[str] = "moderator"
    user_id: int
    on: bool


@client.message
class ModerateMedia(ModerationMessage):
    """Block (`blocked`: true) or allow again a participant's microphone (`kind` "audio") or
    camera ("video") for everyone (a moderator); the reply is `media_moderated`."""

    type_name: ClassVar[str] = "moderate_media"
    participant_id: int
    kind: MediaKind
    blocked: bool


@client.message
class MuteAll(ModerationMessage):
    """Block the microphone ("audio") or camera ("video") of everyone present who is not a
    moderator (a moderator); the reply is `muted_all`."""

    type_name: ClassVar[str] = "mute_all"
    kind: MediaKind


@client.message
class UnblockSelf(ModerationMessage):
    """Turn back on your own microphone or camera that a moderator blocked, in a room that lets
    people (`self_unmute`); the reply is `media_moderated`. Refused (`forbidden`) otherwise:
    raise your hand to ask."""

    type_name: ClassVar[str] = "unblock_self"
    kind: MediaKind


@client.message
class Remove(ModerationMessage):
    """Remove a participant from the meeting (a moderator), and with `ban` from the room for
    good (until readmitted); the reply is `removed`."""

    type_name: ClassVar[str] = "remove"
    participant_id: int
    ban: bool = False


@client.message
class Admit(ModerationMessage):
    """Let a waiting user in (a moderator); everyone waiting when `user_id` is null. The reply
    is `join_decided`."""

    type_name: ClassVar[str] = "admit"
    user_id: int | None


@client.message
class Deny(ModerationMessage):
    """Turn a waiting user away (a moderator); everyone waiting when `user_id` is null. The
    reply is `join_decided`."""

    type_name: ClassVar[str] = "deny"
    user_id: int | None


@client.message
class Readmit(ModerationMessage):
    """Let a removed user join the meeting again (a moderator); the reply is `readmitted`."""

    type_name: ClassVar[str] = "readmit"
    user_id: int


@client.message
class EndMeeting(ModerationMessage):
    """End the meeting for everyone (a moderator); the reply is `meeting_ended`, then everyone
    gets `room_closed` with the reason `ended`."""

    type_name: ClassVar[str] = "end_meeting"


@client.message
class Record(ModerationMessage):
    """Start (`on`: true) or stop recording the meeting (a moderator); the reply is
    `recording_set`, and everyone gets `recording_changed`."""

    type_name: ClassVar[str] = "record"
    on: bool


# --- replies --------------------------------------------------------------------------------------
@server.message
class ModeratorSet(server.Reply):
    """`user_id` is now a moderator of the room (`on`) or no longer is."""

    type_name: ClassVar[str] = "moderator_set"
    user_id: int
    on: bool


@server.message
class MediaModerated(server.Reply):
    """The `kind` of `participant_id` is now blocked for everyone, or allowed."""

    type_name: ClassVar[str] = "media_moderated"
    participant_id: int
    kind: str
    blocked: bool


@server.message
class MutedAll(server.Reply):
    """These participants' `kind` is now blocked (those blocked already are not listed)."""

    type_name: ClassVar[str] = "muted_all"
    kind: str
    participant_ids: list


@server.message
class JoinDecided(server.Reply):
    """These waiting users were let in (`admitted`) or turned away (maybe none: someone else
    decided first)."""

    type_name: ClassVar[str] = "join_decided"
    user_ids: list
    admitted: bool


@server.message
class Removed(server.Reply):
    """`participant_id` was removed from the meeting."""

    type_name: ClassVar[str] = "removed"
    participant_id: int


@server.message
class Readmitted(server.Reply):
    """`user_id` may join again (they may not have been removed)."""

    type_name: ClassVar[str] = "readmitted"
    user_id: int


@server.message
class MeetingEnded(server.Reply):
    """The meeting is ended; `room_closed` follows for everyone, you too."""

    type_name: ClassVar[str] = "meeting_ended"


@server.message
class RecordingSet(server.Reply):
    """The meeting is now being recorded (`on`), or the recording stopped (it is being prepared
    for the owner to download)."""

    type_name: ClassVar[str] = "recording_set"
    on: bool


# --- to everyone in the room ---------------------------------------------------------------------
@server.message
class ModeratorsChanged(server.ServerMessage):
    """The room's moderators (user ids, its owner included) after a change."""

    type_name: ClassVar[str] = "moderators_changed"
    user_ids: list


@server.message
class MediaBlocked(server.ServerMessage):
    """A moderator blocked (or allowed again) the microphone or camera of `participant_id`."""

    type_name: ClassVar[str] = "media_blocked"
    participant_id: int
    kind: str
    blocked: bool


@server.message
class ParticipantRemoved(server.ServerMessage):
    """A moderator removed `participant_id`; its connection closes (CLOSE_REMOVED) after this,
    and `participant_left` (reason `removed`) follows for the others. `message` is what the
    removed person is told."""

    type_name: ClassVar[str] = "participant_removed"
    participant_id: int
    message: str


@server.message
class RecordingChanged(server.ServerMessage):
    """The meeting started being recorded (`recording`: {id, started_at, started_by}) or
    stopped (null). The snapshot's `recording` says the same to whoever joins."""

    type_name: ClassVar[str] = "recording_changed"
    recording: dict | None


@server.message
class WaitingChanged(server.ServerMessage):
    """Who waits to be let in now, first come first ({user_id, name, asked_at}); moderators
    only."""

    type_name: ClassVar[str] = "waiting_changed"
    waiting: list


# --- to someone waiting to be let in -------------------------------------------------------------
@server.message
class Waiting(server.ServerMessage):
    """You wait until a moderator lets you in (the room asks people to); the connection stays
    open. `admitted` (then `snapshot`) or `refused` (reason `denied`) follows. What to tell the
    person is `message`; `moderator_present` says whether anyone can let you in now."""

    type_name: ClassVar[str] = "waiting"
    message: str
    moderator_present: bool


@server.message
class Admitted(server.ServerMessage):
    """A moderator let you in: `snapshot` follows, as on any join (or `refused`, if the room
    filled up meanwhile)."""

    type_name: ClassVar[str] = "admitted"
