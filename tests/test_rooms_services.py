"""Writes on rooms: creation, updates, joins and leaves, closing, reaping; and what they publish."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections
from django.utils import timezone

from rooms import events, services
from rooms.invites import invite_token
from rooms.models import ChatMessage, Participant, Room
from rooms.services import ActionRefused, JoinRefused
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


@pytest.mark.django_db(transaction=True)
class TestChat:
    def test_post_stores_trims_and_tells_the_room(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        listener = GroupListener(room)
        message = services.chat_post(participant_id=participant.pk, text="  hello\r\nthere\x00 ")
        assert message.text == "hello\nthere"
        assert (message.room, message.author, message.participant) == (room, guest, participant)
        assert message.author_name == "Gus Guest"
        [event] = listener.events()
        assert event["event"] == {
            "type": "chat_message",
            "message": {
                "id": message.pk,
                "participant_id": participant.pk,
                "user_id": guest.pk,
                "name": "Gus Guest",
                "text": "hello\nthere",
                "sent_at": message.created_at.isoformat(),
            },
        }

    @pytest.mark.parametrize(
        ("text", "code"), [("", "invalid"), (" \n\t ", "invalid"), ("x" * 1001, "too_long")]
    )
    def test_empty_and_too_long_messages_are_refused(self, owner, text, code):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=owner, connection_id="c1")
        with pytest.raises(ActionRefused) as refused:
            services.chat_post(participant_id=participant.pk, text=text)
        assert refused.value.code == code
        assert not ChatMessage.objects.exists()

    def test_a_thousand_characters_pass(self, owner):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=owner, connection_id="c1")
        assert len(services.chat_post(participant_id=participant.pk, text="é" * 1000).text) == 1000

    def test_only_a_connected_participant_may_post(self, owner):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=owner, connection_id="c1")
        services.participant_leave(participant_id=participant.pk)
        with pytest.raises(ActionRefused) as refused:
            services.chat_post(participant_id=participant.pk, text="hello?")
        assert refused.value.code == "forbidden"

    def test_owner_deletes_for_everyone_and_others_may_not(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        message = services.chat_post(participant_id=participant.pk, text="oops")
        listener = GroupListener(room)
        with pytest.raises(ActionRefused) as refused:
            services.chat_delete(room_id=room.pk, message_id=message.pk, by_user=guest)
        assert refused.value.code == "forbidden"
        assert ChatMessage.objects.filter(pk=message.pk).exists()
        assert services.chat_delete(room_id=room.pk, message_id=message.pk, by_user=owner)
        assert not ChatMessage.objects.filter(pk=message.pk).exists()
        [event] = listener.events()
        assert event["event"] == {"type": "chat_deleted", "message_id": message.pk}
        # Gone already, or of another room: nothing to delete, nothing said.
        other = services.room_create(owner=owner, name="Other")
        listener = GroupListener(room)  # a fresh one: each drains on an event loop of its own
        assert not services.chat_delete(room_id=room.pk, message_id=message.pk, by_user=owner)
        assert not services.chat_delete(room_id=other.pk, message_id=message.pk, by_user=owner)
        assert listener.events() == []

    def test_deleting_a_room_deletes_its_chat_and_a_user_leaves_their_words(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        kept = services.room_create(owner=owner, name="Kept")
        for where in (room, kept):
            participant = services.participant_join(
                room_id=where.pk, user=guest, connection_id=f"c{where.pk}"
            )
            services.chat_post(participant_id=participant.pk, text=f"hi {where.name}")
        services.room_delete(room=room)
        assert list(ChatMessage.objects.values_list("text", flat=True)) == ["hi Kept"]
        guest.delete()
        [message] = ChatMessage.objects.all()
        assert (message.author, message.participant, message.author_name) == (
            None,
            None,
            "Gus Guest",
        )


@pytest.mark.django_db(transaction=True)
class TestHands:
    def test_raise_and_lower_tell_the_room_once(self, owner, guest):
        room = services.room_create(owner=owner, name="Sync")
        participant = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        listener = GroupListener(room)
        raised_at = services.hand_set(participant_id=participant.pk, raised=True)
        assert raised_at is not None
        # Raising again keeps the place in the queue, and tells nobody.
        assert services.hand_set(participant_id=participant.pk, raised=True) == raised_at
        assert services.hand_set(participant_id=participant.pk, raised=False) is None
        assert services.hand_set(participant_id=participant.pk, raised=False) is None
        events_sent = [m["event"] for m in listener.events()]
        assert events_sent == [
            {
                "type": "hand_changed",
                "participant_id": participant.pk,
                "raised": True,
                "raised_at": raised_at.isoformat(),
            },
            {
                "type": "hand_changed",
                "participant_id": participant.pk,
                "raised": False,
                "raised_at": None,
            },
        ]

    def test_owner_lowers_someone_else_and_nobody_else_may(self, owner, guest, make_user):
        room = services.room_create(owner=owner, name="Sync")
        raiser = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        services.hand_set(participant_id=raiser.pk, raised=True)
        with pytest.raises(ActionRefused) as refused:
            services.hand_lower_for(room_id=room.pk, participant_id=raiser.pk, by_user=guest)
        assert refused.value.code == "forbidden"
        assert services.hand_lower_for(room_id=room.pk, participant_id=raiser.pk, by_user=owner)
        raiser.refresh_from_db()
        assert raiser.hand_raised_at is None
        assert not services.hand_lower_for(room_id=room.pk, participant_id=raiser.pk, by_user=owner)
        # Someone of another room is not found from this one.
        other = services.room_create(owner=make_user("third"), name="Other")
        with pytest.raises(ActionRefused) as refused:
            services.hand_lower_for(room_id=other.pk, participant_id=raiser.pk, by_user=other.owner)
        assert refused.value.code == "not_found"

    def test_a_hand_goes_down_however_the_connection_ends(self, owner, guest, settings):
        settings.PRESENCE_STALE_SECONDS = 60
        room = services.room_create(owner=owner, name="Sync")
        left = services.participant_join(room_id=room.pk, user=guest, connection_id="c1")
        reaped = record_participant(room, guest)
        removed = services.participant_join(room_id=room.pk, user=owner, connection_id="c3")
        for participant in (left, reaped, removed):
            services.hand_set(participant_id=participant.pk, raised=True)
        services.participant_leave(participant_id=left.pk)
        Participant.objects.filter(pk=reaped.pk).update(
            last_seen_at=timezone.now() - timedelta(seconds=120)
        )
        services.participants_reap_stale(room_id=room.pk)
        services.room_close(room=room)
        assert not Participant.objects.filter(hand_raised_at__isnull=False).exists()
