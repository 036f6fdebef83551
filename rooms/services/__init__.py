"""Writes on rooms, participants and their chat, hands and reactions, and (`recordings` and
`videos`, whose functions are here too) on recordings and the videos played into meetings.
Every change that others must see is published from here."""

import logging
import re
import secrets
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext, gettext_noop

from rooms import events
from rooms.models import (
    CHAT_MESSAGE_MAX_LENGTH,
    ROOM_SETTINGS,
    ChatMessage,
    JoinRequest,
    Participant,
    Room,
    RoomModerator,
    RoomRemoval,
)
from rooms.selectors import (
    Refusal,
    join_requests_waiting,
    presence_cutoff,
    room_entry_refusal,
    room_is_managed_by,
    room_moderates,
    room_moderator_ids,
)

logger = logging.getLogger(__name__)

_SLUG_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


class JoinRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class JoinWaiting(Exception):
    """The user waits for a moderator to let them in (the room asks people to): `request` is
    their place in the queue."""

    def __init__(self, request: JoinRequest) -> None:
        super().__init__("waiting to be let in")
        self.request = request


class ActionRefused(Exception):
    """A participant asked for something the room does not do (an empty or too long chat
    message, an owner's action by someone else...): a stable code for programs (`invalid`,
    `too_long`, `forbidden`, `not_found`) and a sentence for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _new_slug(name: str) -> str:
    base = slugify(name)[:40].strip("-") or "room"
    suffix = "".join(secrets.choice(_SLUG_ALPHABET) for _ in range(6))
    return f"{base}-{suffix}"


def room_create(
    *,
    owner: AbstractBaseUser,
    name: str,
    description: str = "",
    visibility: str = Room.Visibility.PUBLIC,
    max_participants: int = 10,
    locked: bool = False,
    screen_sharing: str = Room.ScreenSharing.EVERYONE,
    ask_to_join: bool = False,
    join_muted: bool = False,
    self_unmute: bool = True,
) -> Room:
    for _ in range(5):
        try:
            with transaction.atomic():
                room = Room.objects.create(
                    owner=owner,
                    name=name,
                    slug=_new_slug(name),
                    description=description,
                    visibility=visibility,
                    max_participants=max_participants,
                    locked=locked,
                    screen_sharing=screen_sharing,
                    ask_to_join=ask_to_join,
                    join_muted=join_muted,
                    self_unmute=self_unmute,
                )
        except IntegrityError:  # a slug collision: draw another suffix
            continue
        logger.info("room %s created by user %s", room.slug, owner.pk)
        return room
    raise RuntimeError("could not find a free room slug")


ROOM_UPDATABLE = frozenset(ROOM_SETTINGS)


def room_update(*, room: Room, **changes: object) -> Room:
    unknown = set(changes) - ROOM_UPDATABLE
    if unknown:
        raise TypeError(f"room_update cannot change {sorted(unknown)}")
    for field, value in changes.items():
        setattr(room, field, value)
    with transaction.atomic():
        room.save(update_fields=[*changes, "updated_at"])
        events.publish_room_updated(room)
        if "ask_to_join" in changes and not room.ask_to_join:
            _decide(room, list(join_requests_waiting(room=room)), admit=True, by_user=None)
    return room


def room_reset_invite(*, room: Room) -> Room:
    room.invite_key = Room._meta.get_field("invite_key").get_default()
    room.save(update_fields=["invite_key", "updated_at"])
    logger.info("room %s invite link reset", room.slug)
    return room


def _remove_everyone(room: Room, *, reason: str, message: str) -> int:
    now = timezone.now()
    removed = Participant.objects.filter(room=room, state=Participant.State.CONNECTED).update(
        state=Participant.State.REMOVED, left_at=now, hand_raised_at=None
    )
    _forget_meeting(room.pk)  # the meeting is over: a fresh start
    events.publish_room_closed(room.pk, reason=reason, message=message)
    return removed


def _forget_meeting(room_id: int) -> None:
    """The meeting is over: whoever a moderator removed (not banned) may join the next one, and
    who was let in or turned away asks again. Who still waits goes on waiting."""
    RoomRemoval.objects.filter(room_id=room_id, banned=False).delete()
    JoinRequest.objects.filter(room_id=room_id).exclude(state=JoinRequest.State.WAITING).delete()


def _forget_removals_if_empty(room_id: int) -> None:
    """Once nobody is connected, the meeting is over."""
    if not Participant.objects.filter(room_id=room_id, state=Participant.State.CONNECTED).exists():
        _forget_meeting(room_id)


def room_close(*, room: Room, message: str = gettext_noop("This room has been closed.")) -> int:
    """Close the room: nobody can join any more, and everyone in it is told and disconnected.

    `message` is in English, marked with gettext_noop: each connection translates it into its
    own language as it tells its browser (signaling.consumers)."""
    with transaction.atomic():
        room.closed_at = timezone.now()
        room.save(update_fields=["closed_at", "updated_at"])
        removed = _remove_everyone(room, reason="closed", message=message)
    logger.info("room %s closed, %d participants removed", room.slug, removed)
    return removed


def room_reopen(*, room: Room) -> Room:
    room.closed_at = None
    room.save(update_fields=["closed_at", "updated_at"])
    return room


def room_delete(*, room: Room) -> None:
    with transaction.atomic():
        _remove_everyone(
            room, reason="deleted", message=gettext_noop("The owner deleted this room.")
        )
        slug = room.slug
        room.delete()
    logger.info("room %s deleted", slug)


def _end_dropped(participant: Participant, *, left_at: datetime) -> None:
    participant.state = Participant.State.DROPPED
    participant.left_at = left_at
    participant.hand_raised_at = None
    participant.save(update_fields=["state", "left_at", "hand_raised_at"])
    events.publish_participant_left(participant)
    _after_leaving(participant)


def _after_leaving(participant: Participant) -> None:
    """Whoever waits to be let in hears when the last one who could let them in left; an empty
    room's meeting is over."""
    room = participant.room
    if (
        room.ask_to_join
        and JoinRequest.objects.filter(room=room, state=JoinRequest.State.WAITING).exists()
        and room_moderates(room=room, user=participant.user)
    ):
        events.publish_waiting_refresh(room.pk)
    _forget_removals_if_empty(participant.room_id)


def _reap_stale(queryset) -> int:
    stale = list(
        queryset.filter(state=Participant.State.CONNECTED, last_seen_at__lt=presence_cutoff())
    )
    for participant in stale:
        _end_dropped(participant, left_at=participant.last_seen_at)
        logger.info(
            "participant %s in room %s reaped (not seen since %s)",
            participant.pk,
            participant.room_id,
            participant.last_seen_at.isoformat(),
        )
    return len(stale)


def participants_reap_stale(*, room_id: int | None = None) -> int:
    """Mark connections whose worker stopped refreshing them as dropped, and tell their rooms."""
    queryset = (
        Participant.objects.all()
        if room_id is None
        else Participant.objects.filter(room_id=room_id)
    )
    with transaction.atomic():
        return _reap_stale(queryset)


def _end_replaced(*, room: Room, user: AbstractBaseUser, participant_id: int) -> Participant | None:
    previous = Participant.objects.filter(
        pk=participant_id, room=room, user=user, state=Participant.State.CONNECTED
    ).first()
    if previous is not None:
        _end_dropped(previous, left_at=timezone.now())
    return previous


def participant_join(
    *,
    room_id: int,
    user: AbstractBaseUser,
    connection_id: str,
    invite: str | None = None,
    replaces: int | None = None,
) -> Participant:
    """Admit the user into the room as a new connection, or raise JoinRefused with the reason.

    `replaces` names the participant this connection takes over from (a reconnecting tab passes
    its previous id): if that connection is still recorded as present, it belongs to the same
    user and room, so it is ended first instead of lingering as a ghost that holds a seat.

    In a room that asks people to wait (`ask_to_join`), someone who is not a moderator, not let
    in yet, and not in the meeting already (another tab, a reconnect) raises JoinWaiting.
    """
    with transaction.atomic():
        # The row lock serialises joins to one room, so two joiners cannot both take the last seat.
        room = Room.objects.select_for_update().select_related("owner").filter(pk=room_id).first()
        if room is None:
            raise JoinRefused(Refusal("not_found", gettext("This room no longer exists.")))
        _reap_stale(Participant.objects.filter(room=room))
        previous = None
        if replaces is not None:
            previous = _end_replaced(room=room, user=user, participant_id=replaces)
        refusal = room_entry_refusal(room=room, user=user, invite=invite)
        if refusal is not None:
            raise JoinRefused(refusal)
        # Another tab of the user's in the meeting: this one starts as blocked as that one.
        same_user = (
            previous
            or Participant.objects.filter(
                room=room, user=user, state=Participant.State.CONNECTED
            ).first()
        )
        waiting = None
        # Asked only of rooms whose settings depend on it (a query otherwise saved).
        moderates = (room.ask_to_join or room.join_muted) and room_moderates(room=room, user=user)
        if same_user is None and room.ask_to_join and not moderates:
            waiting = _ask_to_join(room=room, user=user, connection_id=connection_id)
        if waiting is None:
            participant = _enter(
                room, user, connection_id=connection_id, same_user=same_user, moderates=moderates
            )
    if waiting is not None:
        raise JoinWaiting(waiting)  # after the commit: the request stays
    logger.info("participant %s (user %s) joined room %s", participant.pk, user.pk, room.slug)
    return participant


def _enter(
    room: Room,
    user: AbstractBaseUser,
    *,
    connection_id: str,
    same_user: Participant | None,
    moderates: bool,
) -> Participant:
    if same_user is not None:
        # Reloading, reconnecting or another tab does not undo what a moderator blocked.
        audio, video = same_user.muted_audio_by_moderator, same_user.muted_video_by_moderator
    else:
        audio, video = room.join_muted and not moderates, False
    participant = Participant.objects.create(
        room=room,
        user=user,
        display_name=user.shown_name,
        connection_id=connection_id,
        last_seen_at=timezone.now(),
        muted_audio_by_moderator=audio,
        muted_video_by_moderator=video,
    )
    events.publish_participant_joined(participant)
    if room.ask_to_join and moderates:
        events.publish_waiting_refresh(room.pk)  # those waiting learn someone can let them in
    return participant


# --- The waiting room: rooms that ask people to wait until a moderator lets them in ---------
MAX_DENIALS = 3  # turned away this often in one meeting: no more asking until it is over


def _ask_to_join(*, room: Room, user: AbstractBaseUser, connection_id: str) -> JoinRequest | None:
    """The user's request to join, made or refreshed (a reconnecting page keeps its place);
    None when a moderator let them in already. JoinRefused when turned away too often."""
    now = timezone.now()
    request = JoinRequest.objects.select_for_update().filter(room=room, user=user).first()
    if request is not None and request.state == JoinRequest.State.ADMITTED:
        return None
    if request is None:
        request = JoinRequest(room=room, user=user, asked_at=now)
    elif request.state == JoinRequest.State.DENIED:
        if request.denials >= MAX_DENIALS:
            raise JoinRefused(
                Refusal(
                    "denied",
                    gettext("A moderator did not let you in. You can ask again next meeting."),
                )
            )
        request.state, request.asked_at = JoinRequest.State.WAITING, now
    elif request.last_seen_at < presence_cutoff():  # stopped asking a while ago: a new place
        request.asked_at = now
    request.display_name = user.shown_name
    request.connection_id = connection_id
    request.last_seen_at = now
    request.save()
    events.publish_waiting_changed(room.pk, list(join_requests_waiting(room=room)))
    logger.info("user %s asks to join room %s", user.pk, room.slug)
    return request


def join_request_touch(*, request_id: int) -> str | None:
    """A waiting page is still there: refresh its request. Its state (a decision the page may
    have missed), or None when the request is gone (the meeting ended around a decision)."""
    with transaction.atomic():
        JoinRequest.objects.filter(pk=request_id, state=JoinRequest.State.WAITING).update(
            last_seen_at=timezone.now()
        )
        return JoinRequest.objects.filter(pk=request_id).values_list("state", flat=True).first()


def join_request_withdraw(*, request_id: int, connection_id: str) -> bool:
    """The waiting page went away (closed, cancelled): it leaves the queue, unless another
    connection of the same user asks now. False when there was nothing to withdraw."""
    with transaction.atomic():
        request = JoinRequest.objects.filter(
            pk=request_id, state=JoinRequest.State.WAITING, connection_id=connection_id
        ).first()
        if request is None:
            return False
        request.delete()
        events.publish_waiting_changed(
            request.room_id, list(join_requests_waiting(room=request.room))
        )
    return True


def join_requests_reap_stale(*, room_id: int) -> int:
    """Forget requests whose page stopped asking (its worker died with it)."""
    with transaction.atomic():
        deleted, _counts = JoinRequest.objects.filter(
            room_id=room_id, state=JoinRequest.State.WAITING, last_seen_at__lt=presence_cutoff()
        ).delete()
        if deleted:
            room = Room.objects.get(pk=room_id)
            events.publish_waiting_changed(room_id, list(join_requests_waiting(room=room)))
    return deleted


def _decide(
    room: Room, requests: list[JoinRequest], *, admit: bool, by_user: AbstractBaseUser | None
) -> list[int]:
    now = timezone.now()
    for request in requests:
        request.state = JoinRequest.State.ADMITTED if admit else JoinRequest.State.DENIED
        request.decided_by, request.decided_at = by_user, now
        request.denials += 0 if admit else 1
        request.save(update_fields=["state", "decided_by", "decided_at", "denials"])
    user_ids = [request.user_id for request in requests]
    if user_ids:
        events.publish_join_decided(room.pk, user_ids=user_ids, admitted=admit)
        events.publish_waiting_changed(room.pk, list(join_requests_waiting(room=room)))
    return user_ids


def join_requests_decide(
    *, room_id: int, user_id: int | None, admit: bool, by_user: AbstractBaseUser
) -> list[int]:
    """A moderator lets a waiting user in (`admit`) or turns them away; everyone waiting when
    `user_id` is None. The user ids decided."""
    action = "let people in" if admit else "turn people away"
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action=action)
        waiting = join_requests_waiting(room=room).select_for_update()
        if user_id is not None:
            waiting = waiting.filter(user_id=user_id)
        requests = list(waiting)
        if user_id is not None and not requests:
            raise ActionRefused("not_found", gettext("That person is not waiting to join."))
        user_ids = _decide(room, requests, admit=admit, by_user=by_user)
    logger.info(
        "user %s %s users %s in room %s",
        by_user.pk,
        "admitted" if admit else "denied",
        user_ids,
        room_id,
    )
    return user_ids


def participant_leave(*, participant_id: int, state: str = Participant.State.LEFT) -> bool:
    """End a connection's presence; False when it had already ended (room closed, reaped)."""
    with transaction.atomic():
        updated = Participant.objects.filter(
            pk=participant_id, state=Participant.State.CONNECTED
        ).update(state=state, left_at=timezone.now(), hand_raised_at=None)
        if not updated:
            return False
        participant = Participant.objects.select_related("room", "user").get(pk=participant_id)
        events.publish_participant_left(participant)
        _after_leaving(participant)
    logger.info("participant %s left room %s (%s)", participant_id, participant.room_id, state)
    return True


def participant_touch(*, participant_id: int) -> bool:
    """Refresh a live connection's presence; False when the connection is no longer present."""
    return bool(
        Participant.objects.filter(pk=participant_id, state=Participant.State.CONNECTED).update(
            last_seen_at=timezone.now()
        )
    )


# --- Chat and hands: what people in a call do together ----------------------------------------
# Control characters other than newlines and tabs have no place in a chat line (and NUL cannot
# even be stored in PostgreSQL's text columns).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _present(participant_id: int) -> Participant:
    """The participant, if their connection is still present; else ActionRefused."""
    participant = (
        Participant.objects.select_related("room")
        .filter(pk=participant_id, state=Participant.State.CONNECTED)
        .first()
    )
    if participant is None:
        raise ActionRefused("forbidden", gettext("You are no longer in this room."))
    return participant


def _managed_room(*, room_id: int, by_user: AbstractBaseUser, action: str) -> Room:
    room = Room.objects.filter(pk=room_id).first()
    if room is None:
        raise ActionRefused("not_found", gettext("This room no longer exists."))
    if not room_is_managed_by(room=room, user=by_user):
        logger.warning("user %s may not %s in room %s: not its owner", by_user.pk, action, room_id)
        raise ActionRefused("forbidden", gettext("Only the room's owner can do that."))
    return room


def chat_post(*, participant_id: int, text: str) -> ChatMessage:
    """Post a chat message from a participant who is in the room; everyone in it gets it."""
    text = _CONTROL_CHARACTERS.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise ActionRefused("invalid", gettext("Type a message first."))
    if len(text) > CHAT_MESSAGE_MAX_LENGTH:
        limit = {"limit": CHAT_MESSAGE_MAX_LENGTH}
        raise ActionRefused(
            "too_long", gettext("Messages are limited to %(limit)d characters.") % limit
        )
    with transaction.atomic():
        participant = _present(participant_id)
        message = ChatMessage.objects.create(
            room=participant.room,
            author_id=participant.user_id,
            participant=participant,
            author_name=participant.display_name,
            text=text,
        )
        events.publish_chat_message(message)
    return message


def chat_delete(*, room_id: int, message_id: int, by_user: AbstractBaseUser) -> bool:
    """Delete a message of the room's chat for everyone: its owner only. False when the room
    has no such message (deleted already, or of another room)."""
    with transaction.atomic():
        _managed_room(room_id=room_id, by_user=by_user, action="delete a chat message")
        deleted, _counts = ChatMessage.objects.filter(pk=message_id, room_id=room_id).delete()
        if not deleted:
            return False
        events.publish_chat_deleted(room_id, message_id)
    logger.info("chat message %s of room %s deleted by user %s", message_id, room_id, by_user.pk)
    return True


def hand_set(*, participant_id: int, raised: bool) -> datetime | None:
    """Raise or lower a participant's own hand; when it went up (None: it is down). Raising a
    raised hand keeps its place in the queue."""
    with transaction.atomic():
        participant = _present(participant_id)
        if raised == (participant.hand_raised_at is not None):
            return participant.hand_raised_at
        participant.hand_raised_at = timezone.now() if raised else None
        participant.save(update_fields=["hand_raised_at"])
        events.publish_hand_changed(participant)
    return participant.hand_raised_at


def hand_lower_for(*, room_id: int, participant_id: int, by_user: AbstractBaseUser) -> bool:
    """The room's owner lowers someone's hand. False when it was not raised."""
    with transaction.atomic():
        _managed_room(room_id=room_id, by_user=by_user, action="lower a hand")
        participant = Participant.objects.filter(
            pk=participant_id, room_id=room_id, state=Participant.State.CONNECTED
        ).first()
        if participant is None:
            raise ActionRefused("not_found", gettext("That person is not in this room."))
        if participant.hand_raised_at is None:
            return False
        participant.hand_raised_at = None
        participant.save(update_fields=["hand_raised_at"])
        events.publish_hand_changed(participant)
    logger.info("hand of participant %s lowered by user %s", participant_id, by_user.pk)
    return True


# --- Running a meeting: moderators and what they may do -------------------------------------
MEDIA_KINDS = ("audio", "video")


def _moderated_room(*, room_id: int, by_user: AbstractBaseUser, action: str) -> Room:
    room = Room.objects.filter(pk=room_id).first()
    if room is None:
        raise ActionRefused("not_found", gettext("This room no longer exists."))
    if not room_moderates(room=room, user=by_user):
        logger.warning(
            "user %s may not %s in room %s: not a moderator", by_user.pk, action, room_id
        )
        raise ActionRefused("forbidden", gettext("Only the room's moderators can do that."))
    return room


def _moderated_participant(*, room: Room, participant_id: int) -> Participant:
    """A participant present in the room, whom a moderator may act on (not the owner)."""
    participant = Participant.objects.filter(
        pk=participant_id, room=room, state=Participant.State.CONNECTED
    ).first()
    if participant is None:
        raise ActionRefused("not_found", gettext("That person is not in this room."))
    if participant.user_id == room.owner_id:
        raise ActionRefused("forbidden", gettext("The room's owner cannot be muted or removed."))
    return participant


def moderator_grant(*, room_id: int, user_id: int, by_user: AbstractBaseUser) -> bool:
    """The owner makes a user present in the room a moderator of it (kept for later meetings
    too). False when they already were one."""
    with transaction.atomic():
        room = _managed_room(room_id=room_id, by_user=by_user, action="grant moderation")
        present = Participant.objects.filter(
            room=room, user_id=user_id, state=Participant.State.CONNECTED
        ).exists()
        if not present:
            raise ActionRefused("not_found", gettext("That person is not in this room."))
        if user_id == room.owner_id:
            return False
        _row, created = RoomModerator.objects.get_or_create(
            room=room, user_id=user_id, defaults={"granted_by": by_user}
        )
        if created:
            events.publish_moderators_changed(room.pk, room_moderator_ids(room=room))
    logger.info("user %s made user %s a moderator of room %s", by_user.pk, user_id, room_id)
    return created


def moderator_revoke(*, room_id: int, user_id: int, by_user: AbstractBaseUser) -> bool:
    """The owner takes a user's moderation of the room back. False when they had none."""
    with transaction.atomic():
        room = _managed_room(room_id=room_id, by_user=by_user, action="revoke moderation")
        deleted, _counts = RoomModerator.objects.filter(room=room, user_id=user_id).delete()
        if not deleted:
            return False
        events.publish_moderators_changed(room.pk, room_moderator_ids(room=room))
    logger.info("user %s revoked user %s's moderation of room %s", by_user.pk, user_id, room_id)
    return True


def participant_moderate_media(
    *, room_id: int, participant_id: int, kind: str, blocked: bool, by_user: AbstractBaseUser
) -> bool:
    """A moderator blocks (or allows again) a participant's microphone (`kind` "audio") or
    camera ("video") for everyone. Only the flag: the caller has the media server stop (or
    resume) forwarding it (signaling.media.moderation). False when it was so already."""
    if kind not in MEDIA_KINDS:
        raise ActionRefused("invalid", f"'kind' must be one of {', '.join(MEDIA_KINDS)}.")
    field = f"muted_{kind}_by_moderator"
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action=f"block {kind}")
        participant = _moderated_participant(room=room, participant_id=participant_id)
        if getattr(participant, field) == blocked:
            return False
        setattr(participant, field, blocked)
        participant.save(update_fields=[field])
        events.publish_media_blocked(participant, kind=kind, blocked=blocked)
    logger.info(
        "user %s %s the %s of participant %s in room %s",
        by_user.pk,
        "blocked" if blocked else "allowed",
        kind,
        participant_id,
        room_id,
    )
    return True


def participants_mute_all(*, room_id: int, kind: str, by_user: AbstractBaseUser) -> list[int]:
    """A moderator blocks the microphone (or camera) of everyone present who is not a moderator.
    The participant ids newly blocked; the caller has the media server enforce it."""
    if kind not in MEDIA_KINDS:
        raise ActionRefused("invalid", f"'kind' must be one of {', '.join(MEDIA_KINDS)}.")
    field = f"muted_{kind}_by_moderator"
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action=f"block everyone's {kind}")
        moderators = room_moderator_ids(room=room)
        blocked = []
        for participant in Participant.objects.filter(
            room=room, state=Participant.State.CONNECTED, **{field: False}
        ).select_related("user"):
            if participant.user_id in moderators or participant.user.is_staff:
                continue
            setattr(participant, field, True)
            participant.save(update_fields=[field])
            events.publish_media_blocked(participant, kind=kind, blocked=True)
            blocked.append(participant.pk)
    logger.info("user %s blocked the %s of %s in room %s", by_user.pk, kind, blocked, room_id)
    return blocked


def participant_unblock_self(*, participant_id: int, kind: str) -> bool:
    """A participant turns back on what a moderator blocked, in a room that lets people do so
    (`self_unmute`). False when it was not blocked; the caller has the media server forward it."""
    if kind not in MEDIA_KINDS:
        raise ActionRefused("invalid", f"'kind' must be one of {', '.join(MEDIA_KINDS)}.")
    field = f"muted_{kind}_by_moderator"
    with transaction.atomic():
        participant = _present(participant_id)
        if not getattr(participant, field):
            return False
        if not participant.room.self_unmute:
            raise ActionRefused(
                "forbidden",
                gettext("Only a moderator can allow it again. Raise your hand to ask."),
            )
        setattr(participant, field, False)
        participant.save(update_fields=[field])
        events.publish_media_blocked(participant, kind=kind, blocked=False)
    return True


def participant_remove(
    *, room_id: int, participant_id: int, by_user: AbstractBaseUser, ban: bool = False
) -> None:
    """A moderator removes a participant from the meeting: its presence ends (`removed`), its
    connection is told and closed (signaling.consumers), and the user cannot join again until
    the room is empty or a moderator readmits them; never again when `ban`ned (until readmitted).
    The caller releases its media."""
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action="remove someone")
        participant = _moderated_participant(room=room, participant_id=participant_id)
        if participant.user_id == by_user.pk:
            raise ActionRefused("invalid", gettext("To leave the meeting, use Leave."))
        RoomRemoval.objects.update_or_create(
            room=room, user_id=participant.user_id, defaults={"removed_by": by_user, "banned": ban}
        )
        participant.state = Participant.State.REMOVED
        participant.left_at = timezone.now()
        participant.hand_raised_at = None
        participant.save(update_fields=["state", "left_at", "hand_raised_at"])
        message = (
            gettext_noop("A moderator removed you from this meeting and banned you from the room.")
            if ban
            else gettext_noop("A moderator removed you from this meeting.")
        )
        events.publish_participant_removed(participant, message=message)
        events.publish_participant_left(participant)
    logger.info(
        "user %s removed participant %s (user %s) from room %s",
        by_user.pk,
        participant_id,
        participant.user_id,
        room_id,
    )


def removal_lift(*, room_id: int, user_id: int, by_user: AbstractBaseUser) -> bool:
    """A moderator lets a removed user join the meeting again. False when they were not
    removed."""
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action="readmit someone")
        deleted, _counts = RoomRemoval.objects.filter(room=room, user_id=user_id).delete()
    if deleted:
        logger.info("user %s readmitted user %s to room %s", by_user.pk, user_id, room_id)
    return bool(deleted)


def meeting_end(*, room_id: int, by_user: AbstractBaseUser) -> int:
    """A moderator ends the meeting for everyone: all are told (`room_closed`, reason `ended`)
    and disconnected; the room stays open for the next meeting. Returns the participants ended.
    The caller releases the room's media."""
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action="end the meeting")
        ended = _remove_everyone(
            room, reason="ended", message=gettext_noop("A moderator ended the meeting.")
        )
    logger.info(
        "user %s ended the meeting in room %s (%d participants)", by_user.pk, room_id, ended
    )
    return ended


# Recordings (rooms.services.recordings), here too so callers keep one `services` namespace.
from rooms.services.recordings import (  # noqa: E402, F401
    recording_composed,
    recording_delete,
    recording_failed,
    recording_start,
    recording_stop,
    recording_track_add,
    recording_track_end,
)
from rooms.services.videos import video_add, video_delete  # noqa: E402, F401
