"""Invite links for private rooms: a signed token naming the room and its current invite key.

Nothing is stored per invite. Resetting the room's invite key invalidates every earlier link;
ROOM_INVITE_MAX_AGE (seconds) optionally expires links on their own.
"""

from django.conf import settings
from django.core import signing

from rooms.models import Room

_SALT = "rooms.invite"


def invite_token(room: Room) -> str:
    return signing.dumps({"room": room.pk, "key": room.invite_key}, salt=_SALT, compress=True)


def invite_is_valid(room: Room, token: str | None) -> bool:
    if not token:
        return False
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.ROOM_INVITE_MAX_AGE)
    except signing.BadSignature:  # also covers SignatureExpired
        return False
    return (
        isinstance(data, dict)
        and data.get("room") == room.pk
        and data.get("key") == room.invite_key
    )
