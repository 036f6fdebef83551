"""Writes on rooms, participants and their chat, hands and reactions. Every change that others
must see is published from here."""

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
    ChatMessage,
    Participant,
    Room,
    RoomModerator,
    RoomRemoval,
)
from rooms.selectors import (
    Refusal,
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
                )
        except IntegrityError:  # a slug collision: draw another suffix
            continue
        logger.info("room %s created by user %s", room.slug, owner.pk)
        return room
    raise RuntimeError("could not find a free room slug")


_UPDATABLE = frozenset(
    {"name", "description", "visibility", "max_participants", "locked", "screen_sharing"}
)


def room_update(*, room: Room, **changes: object) -> Room:
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise TypeError(f"room_update cannot change {sorted(unknown)}")
    for field, value in changes.items():
        setattr(room, field, value)
    with transaction.atomic():
        room.save(update_fields=[*changes, "updated_at"])
        events.publish_room_updated(room)
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
    RoomRemoval.objects.filter(room=room).delete()  # the meeting is over: a fresh start
    events.publish_room_closed(room.pk, reason=reason, message=message)
    return removed


def _forget_removals_if_empty(room_id: int) -> None:
    """Once nobody is connected, the meeting is over: whoever a moderator removed may join the
    next one."""
    if not Participant.objects.filter(room_id=room_id, state=Participant.State.CONNECTED).exists():
        RoomRemoval.objects.filter(room_id=room_id).delete()


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
        participant = Participant.objects.create(
            room=room,
            user=user,
            display_name=user.shown_name,
            connection_id=connection_id,
            last_seen_at=timezone.now(),
            # A reconnecting tab keeps what a moderator blocked: reloading does not undo it.
            muted_audio_by_moderator=previous is not None and previous.muted_audio_by_moderator,
            muted_video_by_moderator=previous is not None and previous.muted_video_by_moderator,
        )
        events.publish_participant_joined(participant)
    logger.info("participant %s (user %s) joined room %s", participant.pk, user.pk, room.slug)
    return participant


def participant_leave(*, participant_id: int, state: str = Participant.State.LEFT) -> bool:
    """End a connection's presence; False when it had already ended (room closed, reaped)."""
    with transaction.atomic():
        updated = Participant.objects.filter(
            pk=participant_id, state=Participant.State.CONNECTED
        ).update(state=state, left_at=timezone.now(), hand_raised_at=None)
        if not updated:
            return False
        participant = Participant.objects.get(pk=participant_id)
        events.publish_participant_left(participant)
        _forget_removals_if_empty(participant.room_id)
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


def participant_remove(*, room_id: int, participant_id: int, by_user: AbstractBaseUser) -> None:
    """A moderator removes a participant from the meeting: its presence ends (`removed`), its
    connection is told and closed (signaling.consumers), and the user cannot join again until
    the room is empty or a moderator readmits them. The caller releases its media."""
    with transaction.atomic():
        room = _moderated_room(room_id=room_id, by_user=by_user, action="remove someone")
        participant = _moderated_participant(room=room, participant_id=participant_id)
        if participant.user_id == by_user.pk:
            raise ActionRefused("invalid", gettext("To leave the meeting, use Leave."))
        RoomRemoval.objects.get_or_create(
            room=room, user_id=participant.user_id, defaults={"removed_by": by_user}
        )
        participant.state = Participant.State.REMOVED
        participant.left_at = timezone.now()
        participant.hand_raised_at = None
        participant.save(update_fields=["state", "left_at", "hand_raised_at"])
        events.publish_participant_removed(
            participant, message=gettext_noop("A moderator removed you from this meeting.")
        )
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
