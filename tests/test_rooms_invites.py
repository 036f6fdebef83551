"""Invite tokens: valid for their room until reset, forged or foreign ones refused."""

from __future__ import annotations

import time
from unittest import mock

import pytest

from rooms import services
from rooms.invites import invite_is_valid, invite_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_user):
    return make_user("owner")


def test_token_opens_its_own_room_only(owner):
    room = services.room_create(owner=owner, name="A", visibility="private")
    other = services.room_create(owner=owner, name="B", visibility="private")
    token = invite_token(room)
    assert invite_is_valid(room, token)
    assert not invite_is_valid(other, token)
    assert not invite_is_valid(room, None)
    assert not invite_is_valid(room, "")
    assert not invite_is_valid(room, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


def test_reset_invalidates_earlier_tokens(owner):
    room = services.room_create(owner=owner, name="A", visibility="private")
    old = invite_token(room)
    services.room_reset_invite(room=room)
    assert not invite_is_valid(room, old)
    assert invite_is_valid(room, invite_token(room))


def test_tokens_expire_when_a_lifetime_is_set(owner, settings):
    room = services.room_create(owner=owner, name="A", visibility="private")
    settings.ROOM_INVITE_MAX_AGE = 3600
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 7200):
        old = invite_token(room)
    assert not invite_is_valid(room, old)
    assert invite_is_valid(room, invite_token(room))
