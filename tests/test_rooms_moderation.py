"""Moderators in the rooms domain: who moderates, what the services allow and store, and when a
removal stops keeping someone out (the socket side is tests/test_signaling_moderation.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from rooms import selectors, services
from rooms.models import Participant, RoomModerator, RoomRemoval
from rooms.services import ActionRefused, JoinRefused

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
def grace(make_user):
    return make_user("grace")


@pytest.fixture
def alan(make_user):
    return make_user("alan")


@pytest.fixture
def room(make_room, ada):
    return make_room(ada, "Weekly sync")


def _join(room, user) -> Participant:
    return services.participant_join(room_id=room.pk, user=user, connection_id=f"c-{user.pk}")


def test_who_moderates(room, make_room, ada, grace, alan):
    assert selectors.room_moderates(room=room, user=ada)
    assert not selectors.room_moderates(room=room, user=grace)
    assert not selectors.room_moderates(room=room, user=AnonymousUser())
    assert selectors.room_moderator_ids(room=room) == {ada.pk}
    _join(room, grace)
    assert services.moderator_grant(room_id=room.pk, user_id=grace.pk, by_user=ada) is True
    assert services.moderator_grant(room_id=room.pk, user_id=grace.pk, by_user=ada) is False
    assert selectors.room_moderates(room=room, user=grace)
    assert selectors.room_moderator_ids(room=room) == {ada.pk, grace.pk}
    # Per room: moderating one room is nothing in another.
    other = make_room(alan, "Elsewhere")
    assert not selectors.room_moderates(room=other, user=grace)
    alan.is_staff = True
    assert selectors.room_moderates(room=room, user=alan)
    assert services.moderator_revoke(room_id=room.pk, user_id=grace.pk, by_user=ada) is True
    assert services.moderator_revoke(room_id=room.pk, user_id=grace.pk, by_user=ada) is False
    assert not RoomModerator.objects.exists()


def test_only_the_owner_grants_and_only_to_someone_present(room, ada, grace, alan):
    _join(room, grace)
    with pytest.raises(ActionRefused) as refused:
        services.moderator_grant(room_id=room.pk, user_id=alan.pk, by_user=ada)
    assert refused.value.code == "not_found"
    RoomModerator.objects.create(room=room, user=grace, granted_by=ada)
    with pytest.raises(ActionRefused) as refused:  # a moderator does not make moderators
        services.moderator_grant(room_id=room.pk, user_id=grace.pk, by_user=grace)
    assert refused.value.code == "forbidden"


def test_blocking_media_is_stored_and_checked(room, ada, grace, alan):
    grace_in = _join(room, grace)
    owner_in = _join(room, ada)
    changed = services.participant_moderate_media(
        room_id=room.pk, participant_id=grace_in.pk, kind="video", blocked=True, by_user=ada
    )
    assert changed is True
    grace_in.refresh_from_db()
    assert (grace_in.muted_audio_by_moderator, grace_in.muted_video_by_moderator) == (False, True)
    assert not services.participant_moderate_media(
        room_id=room.pk, participant_id=grace_in.pk, kind="video", blocked=True, by_user=ada
    )
    for kind, by_user, target, code in (
        ("audio", alan, grace_in.pk, "forbidden"),  # not a moderator
        ("screen", ada, grace_in.pk, "invalid"),
        ("audio", ada, grace_in.pk + 1000, "not_found"),
        ("audio", ada, owner_in.pk, "forbidden"),  # the owner is not muted
    ):
        with pytest.raises(ActionRefused) as refused:
            services.participant_moderate_media(
                room_id=room.pk, participant_id=target, kind=kind, blocked=True, by_user=by_user
            )
        assert refused.value.code == code


def test_a_removal_keeps_the_user_out_until_the_room_is_empty(room, ada, grace):
    owner_in = _join(room, ada)
    grace_in = _join(room, grace)
    services.participant_remove(room_id=room.pk, participant_id=grace_in.pk, by_user=ada)
    grace_in.refresh_from_db()
    assert grace_in.state == Participant.State.REMOVED
    with pytest.raises(JoinRefused) as refused:
        _join(room, grace)
    assert refused.value.refusal.reason == "removed"
    services.participant_leave(participant_id=owner_in.pk)
    assert not RoomRemoval.objects.exists()
    _join(room, grace)


def test_a_removal_ends_when_the_last_one_is_reaped_or_a_moderator_readmits(room, ada, grace):
    owner_in = _join(room, ada)
    grace_in = _join(room, grace)
    services.participant_remove(room_id=room.pk, participant_id=grace_in.pk, by_user=ada)
    assert services.removal_lift(room_id=room.pk, user_id=grace.pk, by_user=ada) is True
    assert services.removal_lift(room_id=room.pk, user_id=grace.pk, by_user=ada) is False
    grace_in = _join(room, grace)
    services.participant_remove(room_id=room.pk, participant_id=grace_in.pk, by_user=ada)
    # Ada's worker died: once she is reaped, nobody is left, and the removal with her.
    Participant.objects.filter(pk=owner_in.pk).update(
        last_seen_at=timezone.now() - timedelta(hours=1)
    )
    assert services.participants_reap_stale(room_id=room.pk) == 1
    assert not RoomRemoval.objects.exists()
    _join(room, grace)


def test_ending_the_meeting_ends_everyone_and_keeps_the_room(room, ada, grace, alan):
    _join(room, ada)
    grace_in = _join(room, grace)
    _join(room, alan)
    with pytest.raises(ActionRefused) as refused:
        services.meeting_end(room_id=room.pk, by_user=grace)
    assert refused.value.code == "forbidden"
    services.participant_remove(room_id=room.pk, participant_id=grace_in.pk, by_user=ada)
    assert services.meeting_end(room_id=room.pk, by_user=ada) == 2
    room.refresh_from_db()
    assert room.closed_at is None
    assert not Participant.objects.filter(state=Participant.State.CONNECTED).exists()
    assert not RoomRemoval.objects.exists()
    _join(room, grace)
