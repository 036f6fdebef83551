"""Reads on rooms, participants, chat and recordings, including who may enter a room and who
may see its recordings."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.utils.translation import gettext

from rooms.invites import invite_is_valid
from rooms.models import (
    ChatMessage,
    JoinRequest,
    Participant,
    Recording,
    Room,
    RoomModerator,
    RoomRemoval,
    RoomVideo,
)


def presence_cutoff() -> datetime:
    """Connections not seen since this instant are taken for gone."""
    return timezone.now() - timedelta(seconds=settings.PRESENCE_STALE_SECONDS)


def _live_filter(prefix: str = "") -> Q:
    return Q(
        **{
            f"{prefix}state": Participant.State.CONNECTED,
            f"{prefix}last_seen_at__gte": presence_cutoff(),
        }
    )


def participants_live(*, room: Room) -> QuerySet[Participant]:
    return (
        Participant.objects.filter(_live_filter(), room=room)
        .select_related("room")
        .order_by("joined_at", "pk")
    )


ALREADY_HERE_SHOWN = 5


@dataclass(frozen=True)
class RoomPresence:
    """Who is in a room now, as its pre-join screen tells one user."""

    count: int  # live participants, the user's own included
    others_shown: tuple[str, ...]  # other users' display names, first joined first
    others_more: int  # other users' participants beyond those shown
    you_elsewhere: bool  # the user is already in, in another tab or on another device


def room_presence(
    *, room: Room, user: AbstractBaseUser, shown: int = ALREADY_HERE_SHOWN
) -> RoomPresence:
    present = list(participants_live(room=room))
    others = [p.display_name for p in present if p.user_id != user.pk]
    return RoomPresence(
        count=len(present),
        others_shown=tuple(others[:shown]),
        others_more=max(0, len(others) - shown),
        you_elsewhere=any(p.user_id == user.pk for p in present),
    )


def participants_live_count(*, room: Room) -> int:
    return Participant.objects.filter(_live_filter(), room=room).count()


def _with_live_count(rooms: QuerySet[Room]) -> QuerySet[Room]:
    return rooms.annotate(
        live_count=Count("participants", filter=_live_filter("participants__"))
    ).select_related("owner")


def rooms_with_live_count() -> QuerySet[Room]:
    return _with_live_count(Room.objects.all())


def rooms_public(*, search: str = "") -> QuerySet[Room]:
    rooms = Room.objects.filter(visibility=Room.Visibility.PUBLIC, closed_at__isnull=True)
    if search:
        rooms = rooms.filter(Q(name__icontains=search) | Q(description__icontains=search))
    return _with_live_count(rooms).order_by("-live_count", "name")


def rooms_owned(*, user: AbstractBaseUser) -> QuerySet[Room]:
    return _with_live_count(Room.objects.filter(owner=user)).order_by("closed_at", "-created_at")


def rooms_in_lobby(*, user: AbstractBaseUser, slugs: Collection[str]) -> QuerySet[Room]:
    """Those of `slugs` whose live count the user's lobby may show: public rooms (closed ones
    too, so a card can say the room closed) and the user's own rooms. Others' private rooms
    never: their counts are theirs."""
    rooms = Room.objects.filter(
        Q(visibility=Room.Visibility.PUBLIC) | Q(owner=user), slug__in=list(slugs)
    )
    return _with_live_count(rooms)


def room_by_slug(*, slug: str) -> Room | None:
    return Room.objects.select_related("owner").filter(slug=slug).first()


def room_by_id(*, room_id: int) -> Room | None:
    return Room.objects.select_related("owner").filter(pk=room_id).first()


def room_is_managed_by(*, room: Room, user: AbstractBaseUser | AnonymousUser) -> bool:
    return user.is_authenticated and room.owner_id == user.pk


def room_allows_sharing(*, room: Room, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may share their screen in the room: its owner always, others when the
    room lets everyone."""
    if room_is_managed_by(room=room, user=user):
        return True
    return user.is_authenticated and room.screen_sharing == Room.ScreenSharing.EVERYONE


def room_moderates(*, room: Room, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may run the room's meeting (mute, remove, end it): its owner, a user
    the owner made a moderator of this room, or staff."""
    if not user.is_authenticated:
        return False
    if room.owner_id == user.pk or user.is_staff:
        return True
    return RoomModerator.objects.filter(room=room, user_id=user.pk).exists()


def room_moderator_ids(*, room: Room) -> set[int]:
    """The user ids of the room's moderators: its owner and those the owner made moderators."""
    granted = RoomModerator.objects.filter(room=room).values_list("user_id", flat=True)
    return {room.owner_id, *granted}


def room_needs_admission(*, room: Room, user: AbstractBaseUser) -> bool:
    """Whether the user waits for a moderator to let them in: the room asks people to, and they
    are not one of its moderators (who let the others in)."""
    return room.ask_to_join and not room_moderates(room=room, user=user)


def join_requests_waiting(*, room: Room) -> QuerySet[JoinRequest]:
    """Who is waiting to be let in now (their pages still ask), first come first."""
    return JoinRequest.objects.filter(
        room=room, state=JoinRequest.State.WAITING, last_seen_at__gte=presence_cutoff()
    ).order_by("asked_at", "pk")


def moderator_present(*, room: Room) -> bool:
    """Whether someone who can let people in is in the meeting now."""
    moderators = room_moderator_ids(room=room)
    return any(
        p.user_id in moderators or p.user.is_staff
        for p in participants_live(room=room).select_related("user")
    )


@dataclass(frozen=True)
class Refusal:
    """Why someone may not enter a room: a stable code for programs, a sentence for people."""

    reason: str
    message: str


def room_access_refusal(
    *, room: Room, user: AbstractBaseUser | AnonymousUser, invite: str | None = None
) -> Refusal | None:
    """Whether the user may see the room at all (the room page and the socket both ask)."""
    if not user.is_authenticated:
        return Refusal("login_required", gettext("Log in to join this room."))
    if room.is_closed:
        return Refusal("closed", gettext("This room has been closed."))
    is_owner = room.owner_id == user.pk
    if room.is_private and not is_owner and not invite_is_valid(room, invite):
        return Refusal(
            "private", gettext("This room is private. Ask its owner for an invite link to join.")
        )
    return None


def room_entry_refusal(
    *, room: Room, user: AbstractBaseUser | AnonymousUser, invite: str | None = None
) -> Refusal | None:
    """Whether the user may join now: access, a moderator's removal, then the lock and the
    room's capacity."""
    refusal = room_access_refusal(room=room, user=user, invite=invite)
    if refusal is not None:
        return refusal
    removal = RoomRemoval.objects.filter(room=room, user_id=user.pk).first()
    if removal is not None and room.owner_id != user.pk:
        if removal.banned:
            return Refusal("banned", gettext("A moderator has banned you from this room."))
        return Refusal(
            "removed",
            gettext(
                "A moderator removed you from this meeting. You can join again once it has "
                "ended, or when a moderator lets you back in."
            ),
        )
    if room.locked and room.owner_id != user.pk:
        return Refusal("locked", gettext("This room is locked: nobody new can join right now."))
    if participants_live_count(room=room) >= room.max_participants:
        return Refusal(
            "full",
            gettext("This room is full (%(count)d people). Try again later.")
            % {"count": room.max_participants},
        )
    return None


def participant_history(*, room: Room) -> QuerySet[Participant]:
    return room.participants.select_related("user").order_by("-joined_at")


CHAT_HISTORY_LENGTH = 100


def chat_recent(*, room: Room, limit: int = CHAT_HISTORY_LENGTH) -> list[ChatMessage]:
    """The room's last `limit` chat messages, oldest first (what a late joiner is shown)."""
    newest = ChatMessage.objects.filter(room=room).order_by("-created_at", "-pk")[:limit]
    return list(reversed(newest))


def hands_raised(*, room: Room) -> QuerySet[Participant]:
    """Participants present with their hand up, in the order the hands went up."""
    return (
        participants_live(room=room)
        .filter(hand_raised_at__isnull=False)
        .order_by("hand_raised_at", "pk")
    )


# --- Recordings ------------------------------------------------------------------------------
def recording_running(*, room_id: int) -> Recording | None:
    """The recording of the room's meeting that runs now, if any."""
    return (
        Recording.objects.select_related("started_by")
        .filter(room_id=room_id, state=Recording.State.RECORDING)
        .first()
    )


def room_recordings_visible_to(*, room: Room, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may list, download and delete the room's recordings: its owner, and
    staff (a moderator runs the meeting, and may record it, but the files are the owner's)."""
    return user.is_authenticated and (room.owner_id == user.pk or user.is_staff)


def recordings_of(*, room: Room) -> QuerySet[Recording]:
    return Recording.objects.filter(room=room).select_related("started_by")


def recording_for(
    *, room: Room, recording_id: int, user: AbstractBaseUser | AnonymousUser
) -> Recording | None:
    """One of the room's recordings, for someone who may see it; None otherwise."""
    if not room_recordings_visible_to(room=room, user=user):
        return None
    return Recording.objects.filter(room=room, pk=recording_id).first()


def recording_directory(recording: Recording) -> Path:
    return Path(settings.RECORDINGS_DIR) / recording.directory


def recordings_bytes(*, room: Room) -> int:
    """What the room's recordings and videos take on disk: the sizes recorded, and what a
    running recording has written so far."""
    total = sum(Recording.objects.filter(room=room).values_list("size", flat=True))
    total += sum(RoomVideo.objects.filter(room=room).values_list("size", flat=True))
    running = recording_running(room_id=room.pk)
    if running is not None and running.directory:
        total += directory_bytes(recording_directory(running))
    return total


def directory_bytes(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


# --- Videos to play into a meeting -----------------------------------------------------------
def videos_of(*, room: Room) -> QuerySet[RoomVideo]:
    return RoomVideo.objects.filter(room=room).select_related("uploaded_by")


def video_for(
    *, room: Room, video_id: int, user: AbstractBaseUser | AnonymousUser
) -> RoomVideo | None:
    """One of the room's uploaded videos, for someone who may see them; None otherwise."""
    if not room_recordings_visible_to(room=room, user=user):
        return None
    return RoomVideo.objects.filter(room=room, pk=video_id).first()


@dataclass(frozen=True)
class Playable:
    """A file the room's owner can play into a meeting: a ready recording or an uploaded video.
    `key` names it in the room socket's `play` message ("recording:<id>", "video:<id>")."""

    key: str
    title: str
    file: str  # under RECORDINGS_DIR
    length: str


def playable_for(*, room: Room, user: AbstractBaseUser | AnonymousUser) -> list[Playable]:
    """What the user may play into the room's meetings, newest first: nothing unless they may
    see its recordings (its owner, staff)."""
    if not room_recordings_visible_to(room=room, user=user):
        return []
    videos = [Playable(f"video:{v.pk}", v.title, v.file, v.length) for v in videos_of(room=room)]
    recordings = [
        Playable(
            f"recording:{r.pk}",
            gettext("Recording of %(when)s")
            % {"when": date_format(localtime(r.started_at), "DATETIME_FORMAT")},
            r.file,
            r.length,
        )
        for r in recordings_of(room=room).filter(state=Recording.State.READY).exclude(file="")
    ]
    return videos + recordings


def playable(*, room: Room, user: AbstractBaseUser | AnonymousUser, key: str) -> Playable | None:
    """The file `key` names, if the user may play it into the room."""
    return next((p for p in playable_for(room=room, user=user) if p.key == key), None)
