"""Reads: the lobby lists, live counts, who may enter or share a screen, chat and hands."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from rooms import selectors, services
from rooms.models import Room
from tests.conftest import record_participant

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def other(make_user):
    return make_user("other")


@pytest.mark.topology
def test_live_count_counts_only_present_connections(owner, other, settings):
    settings.PRESENCE_STALE_SECONDS = 60
    room = services.room_create(owner=owner, name="Busy")
    record_participant(room, owner)
    record_participant(room, other)
    record_participant(room, other, state="left")
    record_participant(room, other, seen_ago=120)  # its worker died
    [listed] = selectors.rooms_public()
    assert listed.live_count == 2
    assert selectors.participants_live_count(room=room) == 2
    assert [p.user for p in selectors.participants_live(room=room)] == [owner, other]


@pytest.mark.topology
def test_public_list_hides_private_and_closed_rooms_and_searches(owner):
    services.room_create(owner=owner, name="Design review", description="Weekly")
    services.room_create(owner=owner, name="Standup")
    services.room_create(owner=owner, name="Secret", visibility="private")
    closed = services.room_create(owner=owner, name="Old")
    services.room_close(room=closed)
    assert {r.name for r in selectors.rooms_public()} == {"Design review", "Standup"}
    assert [r.name for r in selectors.rooms_public(search="weekly")] == ["Design review"]
    assert [r.name for r in selectors.rooms_public(search="STAND")] == ["Standup"]


def test_public_rooms_sorted_busiest_first(owner, other):
    quiet = services.room_create(owner=owner, name="A quiet room")
    busy = services.room_create(owner=owner, name="Z busy room")
    record_participant(busy, other)
    assert [r.pk for r in selectors.rooms_public()] == [busy.pk, quiet.pk]


def test_owned_rooms_include_private_and_closed(owner, other):
    services.room_create(owner=owner, name="Mine", visibility="private")
    closed = services.room_create(owner=owner, name="Closed one")
    services.room_close(room=closed)
    services.room_create(owner=other, name="Theirs")
    assert {r.name for r in selectors.rooms_owned(user=owner)} == {"Mine", "Closed one"}


def test_access_refusals(owner, other):
    room = services.room_create(owner=owner, name="Private", visibility="private")
    assert selectors.room_access_refusal(room=room, user=AnonymousUser()).reason == (
        "login_required"
    )
    assert selectors.room_access_refusal(room=room, user=other).reason == "private"
    assert selectors.room_access_refusal(room=room, user=owner) is None
    assert selectors.room_is_managed_by(room=room, user=owner)
    assert not selectors.room_is_managed_by(room=room, user=other)
    assert not selectors.room_is_managed_by(room=room, user=AnonymousUser())


def test_lobby_live_counts_cover_public_and_own_rooms_only(owner, other):
    public = services.room_create(owner=other, name="Open")
    mine = services.room_create(owner=owner, name="Mine", visibility="private")
    theirs = services.room_create(owner=other, name="Theirs", visibility="private")
    closed = services.room_create(owner=other, name="Was open")
    services.room_close(room=closed)
    record_participant(public, other)
    record_participant(mine, owner)
    record_participant(theirs, other)
    asked = [public.slug, mine.slug, theirs.slug, closed.slug, "no-such-room"]
    counts = {r.slug: r.live_count for r in selectors.rooms_in_lobby(user=owner, slugs=asked)}
    # A closed public room stays, so the lobby can say it closed; someone else's private never.
    assert counts == {public.slug: 1, mine.slug: 1, closed.slug: 0}
    assert selectors.rooms_in_lobby(user=owner, slugs=[]).count() == 0


def test_room_presence_names_the_others_and_spots_you(owner, other, make_user):
    room = services.room_create(owner=owner, name="Busy")
    assert selectors.room_presence(room=room, user=owner) == selectors.RoomPresence(
        count=0, others_shown=(), others_more=0, you_elsewhere=False
    )
    record_participant(room, owner, name="Olive")
    record_participant(room, other, name="Ada")
    record_participant(room, other, name="Ada again")  # her second tab
    record_participant(room, make_user("gone"), name="Gone", state="left")
    presence = selectors.room_presence(room=room, user=owner, shown=1)
    assert presence == selectors.RoomPresence(
        count=3, others_shown=("Ada",), others_more=1, you_elsewhere=True
    )
    assert selectors.room_presence(room=room, user=other).others_shown == ("Olive",)


def test_screen_sharing_is_for_everyone_or_the_owner(owner, other):
    room = services.room_create(owner=owner, name="Demo")
    assert selectors.room_allows_sharing(room=room, user=owner)
    assert selectors.room_allows_sharing(room=room, user=other)
    assert not selectors.room_allows_sharing(room=room, user=AnonymousUser())
    services.room_update(room=room, screen_sharing=Room.ScreenSharing.OWNER)
    assert selectors.room_allows_sharing(room=room, user=owner)
    assert not selectors.room_allows_sharing(room=room, user=other)


def test_recent_chat_is_the_last_messages_oldest_first(owner, other):
    room = services.room_create(owner=owner, name="Chatty")
    elsewhere = services.room_create(owner=owner, name="Elsewhere")
    here = record_participant(room, owner)
    services.chat_post(participant_id=record_participant(elsewhere, other).pk, text="not here")
    for n in range(105):
        services.chat_post(participant_id=here.pk, text=f"message {n}")
    recent = selectors.chat_recent(room=room)
    assert [m.text for m in recent] == [f"message {n}" for n in range(5, 105)]
    assert [m.text for m in selectors.chat_recent(room=room, limit=2)] == [
        "message 103",
        "message 104",
    ]


def test_raised_hands_in_the_order_they_went_up_among_those_present(owner, other, settings):
    settings.PRESENCE_STALE_SECONDS = 60
    room = services.room_create(owner=owner, name="Hands")
    first, second, third = (record_participant(room, user) for user in (other, owner, other))
    gone = record_participant(room, owner, seen_ago=120)
    start = timezone.now()
    for participant, after in ((second, 2), (first, 1), (gone, 0)):
        participant.hand_raised_at = start + timedelta(seconds=after)
        participant.save(update_fields=["hand_raised_at"])
    assert list(selectors.hands_raised(room=room)) == [first, second]
    assert third not in selectors.hands_raised(room=room)
