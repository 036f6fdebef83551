"""Writes on rooms: creation, updates, joins and leaves, closing, reaping; and what they publish."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections

from rooms import events, services
from rooms.invites import invite_token
from rooms.models import Participant, Room
from rooms.services import JoinRefused
from tests.conftest import record_participant


class GroupListener:
    """Joins a room's group on the channel layer and collects what services publish to it."""

    def __init__(self, room: Room) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(events.room_group(room.pk), self.channel)

    def events(self) -> list[dict]:
        received = []

        async def drain() -> None:
            import asyncio

            while True:
                try:
                    message = await asyncio.wait_for(self.layer.receive(self.channel), 0.2)
                except TimeoutError:
                    return
                received.append(message)

        async_to_sync(drain)()
        return received


@pytest.fixture
def owner(make_user):
    return make_user("owner", display_name="Olive Owner")


@pytest.fixture
def guest(make_user):
    return make_user("guest", display_name="Gus Guest")


@pytest.mark.django_db
class TestRoomCreate:
    def test_slug_is_readable_and_unique(self, owner):
        one = services.room_create(owner=owner, name="Design Review!")
        two = services.room_create(owner=owner, name="Design Review!")
        assert one.slug.startswith("design-review-")
        assert two.slug.startswith("design-review-")
        assert one.slug != two.slug

    def test_name_without_letters_still_gets_a_slug(self, owner):
        assert services.room_create(owner=owner, name="🎉🎉").slug.startswith("room-")


@pytest.mark.django_db(transaction=True)
class TestRoomUpdate:
    def test_update_saves_and_tells_the_room(self, owner):
        room = services.room_create(owner=owner, name="Old")
        listener = GroupListener(room)
        services.room_update(room=room, name="New", locked=True)
        room.refresh_from_db()
        assert (room.name, room.locked) == ("New", True)
        [message] = listener.events()
        assert message["event"]["type"] == "room_updated"
        assert message["event"]["room"]["name"] == "New"
        assert message["event"]["room"]["locked"] is True

    def test_update_refuses_fields_it_does_not_own(self, owner):
        room = services.room_create(owner=owner, name="Old")
        with pytest.raises(TypeError):
            services.room_update(room=room, slug="hijack")


@pytest.mark.django_db(transaction=True)
@pytest.mark.topology
class TestParticipantJoinAndLeave:
    def test_join_records_and_announces(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        listener = GroupListener(room)
        participant = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        assert participant.display_name == "Gus Guest"
        assert participant.state == Participant.State.CONNECTED
        [message] = listener.events()
        assert message["event"] == {
            "type": "participant_joined",
            "participant": events.participant_payload(participant),
        }

    def test_leave_is_recorded_once(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        listener = GroupListener(room)
        assert services.participant_leave(participant_id=participant.pk) is True
        assert services.participant_leave(participant_id=participant.pk) is False
        participant.refresh_from_db()
        assert participant.state == Participant.State.LEFT
        assert [m["event"]["type"] for m in listener.events()] == ["participant_left"]

    def test_concurrent_joins_never_overfill_a_room(self, owner, make_user):
        room = services.room_create(owner=owner, name="Pair", max_participants=2)
        users = [make_user(f"racer{n}") for n in range(6)]
        barrier = threading.Barrier(len(users))
        outcomes: list[str] = []

        def join(user) -> None:
            barrier.wait()
            try:
                services.participant_join(room_id=room.pk, user=user, connection_id=user.username)
                outcomes.append("joined")
            except JoinRefused as refused:
                outcomes.append(refused.refusal.reason)
            except Exception as error:  # a database error must show up as a failure
                outcomes.append(repr(error))
            finally:
                close_old_connections()

        threads = [threading.Thread(target=join, args=(user,)) for user in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["full"] * 4 + ["joined"] * 2
        assert Participant.objects.filter(room=room, state="connected").count() == 2


@pytest.mark.django_db(transaction=True)
class TestAccessRules:
    def test_private_room_requires_invite_unless_owner(self, owner, guest):
        room = services.room_create(owner=owner, name="Secret", visibility="private")
        with pytest.raises(JoinRefused) as refused:
            services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        assert refused.value.refusal.reason == "private"
        services.participant_join(
            room_id=room.pk, user=guest, connection_id="c1", invite=invite_token(room)
        )
        services.participant_join(room_id=room.pk, user=owner, connection_id="c2")

    def test_locked_and_closed(self, owner, guest):
        room = services.room_create(owner=owner, name="Board", locked=True)
        with pytest.raises(JoinRefused) as refused:
            services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        assert refused.value.refusal.reason == "locked"
        services.room_close(room=room)
        with pytest.raises(JoinRefused) as refused:
            services.participant_join(room_id=room.pk, user=owner, connection_id="c2")
        assert refused.value.refusal.reason == "closed"
        services.room_reopen(room=room)
        services.participant_join(room_id=room.pk, user=owner, connection_id="c2")

    def test_stale_participants_do_not_take_seats(self, owner, guest):
        room = services.room_create(owner=owner, name="Pair", max_participants=2)
        for name in ("ghost1", "ghost2"):
            record_participant(room, owner, seen_ago=3600, name=name)
        services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        ghosts = Participant.objects.filter(display_name__startswith="ghost")
        assert set(ghosts.values_list("state", flat=True)) == {Participant.State.DROPPED}


@pytest.mark.django_db(transaction=True)
class TestCloseDeleteReap:
    def test_close_removes_everyone_and_tells_them(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        listener = GroupListener(room)
        assert services.room_close(room=room, message="Bye") == 1
        [message] = listener.events()
        assert message["event"] == {"type": "room_closed", "reason": "closed", "message": "Bye"}
        assert not Participant.objects.filter(state=Participant.State.CONNECTED).exists()

    def test_delete_tells_the_room_then_removes_it(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        listener = GroupListener(room)
        services.room_delete(room=room)
        assert not Room.objects.filter(pk=room.pk).exists()
        [message] = listener.events()
        assert message["event"]["reason"] == "deleted"

    def test_reaper_marks_only_stale_connections(self, owner, guest, settings):
        settings.PRESENCE_STALE_SECONDS = 60
        room = services.room_create(owner=owner, name="Sync")
        fresh = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        stale = record_participant(room, owner, seen_ago=61)
        listener = GroupListener(room)
        assert services.participants_reap_stale() == 1
        fresh.refresh_from_db()
        stale.refresh_from_db()
        assert fresh.state == Participant.State.CONNECTED
        assert stale.state == Participant.State.DROPPED
        [message] = listener.events()
        assert message["event"]["participant_id"] == stale.pk

    def test_touch_keeps_a_connection_present_and_reports_when_it_is_gone(self, owner):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=owner, connection_id="c")
        assert services.participant_touch(participant_id=participant.pk) is True
        services.participant_leave(participant_id=participant.pk)
        assert services.participant_touch(participant_id=participant.pk) is False
