"""The admin: rooms with live counts, search, filters and the close action; read-only history."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.urls import reverse

from accounts.models import User
from rooms import selectors, services
from rooms.models import ChatMessage, JoinRequest, Participant, Room, RoomModerator, RoomRemoval
from tests.conftest import record_participant
from tests.test_rooms_services import GroupListener

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(client):
    admin = User.objects.create_superuser(username="root", password="x" * 20)
    client.force_login(admin)
    return client


@pytest.fixture
def rooms(make_user):
    owner = make_user("owner")
    guest = make_user("guest")
    busy = services.room_create(owner=owner, name="Busy room")
    quiet = services.room_create(owner=owner, name="Quiet room", visibility="private")
    services.participant_join(room_id=busy.pk, user=guest, connection_id="c1")
    services.participant_join(room_id=busy.pk, user=owner, connection_id="c2")
    return busy, quiet


def test_changelist_shows_live_counts(admin_client_logged, rooms):
    page = admin_client_logged.get(reverse("admin:rooms_room_changelist"))
    assert page.status_code == 200
    listed = {room.name: room.live_count for room in page.context["cl"].result_list}
    assert listed == {"Busy room": 2, "Quiet room": 0}
    assert "Live participants" in page.content.decode()


def test_changelist_search_filter_and_ordering(admin_client_logged, rooms):
    url = reverse("admin:rooms_room_changelist")
    found = admin_client_logged.get(url, {"q": "quiet"}).context["cl"].result_list
    assert [r.name for r in found] == ["Quiet room"]
    private = admin_client_logged.get(url, {"visibility__exact": "private"}).context["cl"]
    assert [r.name for r in private.result_list] == ["Quiet room"]
    by_count = admin_client_logged.get(url, {"o": "-6"}).context["cl"].result_list
    assert [r.name for r in by_count] == ["Busy room", "Quiet room"]


def test_room_change_page_renders_with_history_link(admin_client_logged, rooms):
    busy, _ = rooms
    page = admin_client_logged.get(reverse("admin:rooms_room_change", args=[busy.pk]))
    assert page.status_code == 200
    history = reverse("admin:rooms_participant_changelist") + f"?room__id__exact={busy.pk}"
    assert history in page.content.decode()
    listed = admin_client_logged.get(history)
    assert listed.status_code == 200
    assert {p.room_id for p in listed.context["cl"].result_list} == {busy.pk}


def test_close_action_closes_rooms_and_removes_participants(admin_client_logged, rooms):
    busy, quiet = rooms
    response = admin_client_logged.post(
        reverse("admin:rooms_room_changelist"),
        {"action": "close_rooms", "_selected_action": [busy.pk]},
        follow=True,
    )
    assert "2 participant(s) were disconnected" in response.content.decode()
    busy.refresh_from_db()
    quiet.refresh_from_db()
    assert busy.is_closed and not quiet.is_closed
    assert not Participant.objects.filter(room=busy, state="connected").exists()

    admin_client_logged.post(
        reverse("admin:rooms_room_changelist"),
        {"action": "reopen_rooms", "_selected_action": [busy.pk]},
    )
    assert not Room.objects.get(pk=busy.pk).is_closed


def test_participant_history_is_read_only(admin_client_logged, rooms):
    participant = Participant.objects.first()
    changelist = admin_client_logged.get(reverse("admin:rooms_participant_changelist"))
    assert changelist.status_code == 200
    assert len(changelist.context["cl"].result_list) == 2
    assert admin_client_logged.get(reverse("admin:rooms_participant_add")).status_code == 403
    change = admin_client_logged.get(
        reverse("admin:rooms_participant_change", args=[participant.pk])
    )
    assert change.status_code == 200  # viewable
    assert b'name="_save"' not in change.content
    admin_client_logged.post(
        reverse("admin:rooms_participant_change", args=[participant.pk]),
        {"display_name": "Changed"},
    )
    participant.refresh_from_db()
    assert participant.display_name != "Changed"


def test_a_rooms_chat_is_readable_and_read_only(admin_client_logged, rooms):
    busy, quiet = rooms
    speaker = Participant.objects.filter(room=busy).first()
    services.chat_post(participant_id=speaker.pk, text="<b>Hello</b> from the busy room")
    elsewhere = services.participant_join(room_id=quiet.pk, user=quiet.owner, connection_id="c3")
    services.chat_post(participant_id=elsewhere.pk, text="In the quiet room")
    message = ChatMessage.objects.get(room=busy)

    # The room's page links to its chat, and the list shows only that room's messages.
    page = admin_client_logged.get(reverse("admin:rooms_room_change", args=[busy.pk]))
    chat_url = reverse("admin:rooms_chatmessage_changelist") + f"?room__id__exact={busy.pk}"
    assert chat_url.replace("&", "&amp;") in page.content.decode()
    assert "Chat of this room (1)" in page.content.decode()
    listed = admin_client_logged.get(chat_url)
    assert [m.pk for m in listed.context["cl"].result_list] == [message.pk]
    assert "&lt;b&gt;Hello&lt;/b&gt;" in listed.content.decode()  # text, never markup

    # Read-only: no adding, no changing, no deleting a message behind the room's back.
    assert admin_client_logged.get(reverse("admin:rooms_chatmessage_add")).status_code == 403
    change_url = reverse("admin:rooms_chatmessage_change", args=[message.pk])
    change = admin_client_logged.get(change_url)
    assert change.status_code == 200
    assert b'name="_save"' not in change.content
    admin_client_logged.post(change_url, {"text": "Changed"})
    message.refresh_from_db()
    assert message.text == "<b>Hello</b> from the busy room"
    delete_url = reverse("admin:rooms_chatmessage_delete", args=[message.pk])
    assert admin_client_logged.post(delete_url, {"post": "yes"}).status_code == 403
    assert ChatMessage.objects.filter(pk=message.pk).exists()


def test_deleting_a_room_deletes_its_chat(rooms):
    busy, quiet = rooms
    speaker = Participant.objects.filter(room=busy).first()
    services.chat_post(participant_id=speaker.pk, text="Bye")
    busy.delete()
    assert not ChatMessage.objects.exists()
    assert Room.objects.filter(pk=quiet.pk).exists()


# --- Moderating rooms from the admin -----------------------------------------------------------
def _post_data(page) -> dict:
    """What the browser would post back from a change page: its form and every inline's."""
    data = {}

    def add(form) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value

    add(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for name in formset.management_form.fields:
            data[formset.management_form.add_prefix(name)] = formset.management_form[name].value()
        for form in formset.forms:
            add(form)
    return data


@pytest.fixture
def meeting(make_user, make_room):
    """A meeting that asks people to wait: its owner, two guests in it, one moderator (not
    in it), one person waiting to be let in."""
    owner = make_user("olive", display_name="Olive Owner")
    room = make_room(owner, "Standup", ask_to_join=True)
    moderator = make_user("mona", display_name="Mona Moderator")
    RoomModerator.objects.create(room=room, user=moderator, granted_by=owner)
    guests = [make_user("gus", display_name="Gus Guest"), make_user("gia", display_name="Gia")]
    owner_in = services.participant_join(room_id=room.pk, user=owner, connection_id="c-owner")
    guests_in = []
    for guest in guests:
        # Let in by a moderator, as the room asks.
        with pytest.raises(services.JoinWaiting):
            services.participant_join(room_id=room.pk, user=guest, connection_id=f"w-{guest}")
        services.join_requests_decide(room_id=room.pk, user_id=guest.pk, admit=True, by_user=owner)
        guests_in.append(
            services.participant_join(room_id=room.pk, user=guest, connection_id=f"c-{guest}")
        )
    waiter = make_user("wally", display_name="Wally Waiting")
    with pytest.raises(services.JoinWaiting):
        services.participant_join(room_id=room.pk, user=waiter, connection_id="w-wally")
    return SimpleNamespace(
        room=room,
        owner=owner,
        owner_in=owner_in,
        moderator=moderator,
        guests=guests,
        guests_in=guests_in,
        waiter=waiter,
    )


def _act(client, model: str, action: str, pks, **query) -> str:
    url = reverse(f"admin:rooms_{model}_changelist")
    response = client.post(url, {"action": action, "_selected_action": pks}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_room_page_shows_moderators_live_participants_and_the_waiting_list(
    admin_client_logged, meeting
):
    # Someone who left and someone gone stale are not in the meeting now.
    left = services.participant_join(room_id=meeting.room.pk, user=meeting.owner, connection_id="x")
    services.participant_leave(participant_id=left.pk)
    record_participant(meeting.room, meeting.moderator, seen_ago=3600, name="Stale Steve")
    page = admin_client_logged.get(reverse("admin:rooms_room_change", args=[meeting.room.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    inlines = {i.formset.model: i.formset for i in page.context["inline_admin_formsets"]}
    assert [f.instance.user for f in inlines[RoomModerator].forms] == [meeting.moderator]
    assert [f.instance.pk for f in inlines[Participant].forms] == [
        meeting.owner_in.pk,
        *(p.pk for p in meeting.guests_in),
    ]
    assert [f.instance.user for f in inlines[JoinRequest].forms] == [meeting.waiter]
    for name in ("mona", "Gus Guest", "Gia", "Wally Waiting"):
        assert name in html
    assert "Stale Steve" not in html
    assert "In the meeting now" in html and "Waiting to be let in" in html
    live_url = (
        reverse("admin:rooms_participant_changelist")
        + f"?room__id__exact={meeting.room.pk}&live=yes"
    )
    assert live_url.replace("&", "&amp;") in html
    assert "3 people in the meeting now" in html
    live = admin_client_logged.get(live_url).context["cl"].result_list
    assert {p.pk for p in live} == {meeting.owner_in.pk, *(p.pk for p in meeting.guests_in)}
    waiting_url = (
        reverse("admin:rooms_joinrequest_changelist") + f"?room__id__exact={meeting.room.pk}"
    )
    assert waiting_url in html
    assert "1 person waiting" in html
    requests = admin_client_logged.get(waiting_url).context["cl"].result_list
    assert {r.user for r in requests} == {meeting.waiter, *meeting.guests}
    # The live and waiting lists are shown, not edited: saving the room leaves them be.
    response = admin_client_logged.post(
        reverse("admin:rooms_room_change", args=[meeting.room.pk]), _post_data(page)
    )
    assert response.status_code == 302, response.context["errors"]
    assert Participant.objects.filter(room=meeting.room, state="connected").count() == 4


def test_room_filters_for_the_meeting_settings(admin_client_logged, meeting, make_room):
    make_room(meeting.owner, "Plain")
    url = reverse("admin:rooms_room_changelist")
    for parameter in ("ask_to_join__exact", "join_muted__exact", "self_unmute__exact"):
        assert parameter in admin_client_logged.get(url).content.decode()
    asking = admin_client_logged.get(url, {"ask_to_join__exact": "1"}).context["cl"].result_list
    assert [r.name for r in asking] == ["Standup"]


def test_participant_actions_mute_allow_and_remove_through_the_services(
    admin_client_logged, meeting
):
    gus, gia = meeting.guests_in
    pks = [gus.pk, gia.pk]
    page = admin_client_logged.get(reverse("admin:rooms_participant_changelist"))
    for label in ("Mute microphone", "Allow microphone", "Stop camera", "Allow camera"):
        assert label in page.content.decode()

    html = _act(admin_client_logged, "participant", "mute_audio", pks)
    assert "Muted the microphones of 2 participants." in html
    assert all(p.muted_audio_by_moderator for p in Participant.objects.filter(pk__in=pks))
    _act(admin_client_logged, "participant", "mute_video", [gus.pk])
    gus.refresh_from_db()
    assert gus.muted_video_by_moderator
    _act(admin_client_logged, "participant", "allow_video", [gus.pk])
    _act(admin_client_logged, "participant", "allow_audio", [gia.pk])
    gus.refresh_from_db()
    gia.refresh_from_db()
    assert not gus.muted_video_by_moderator and gus.muted_audio_by_moderator
    assert not gia.muted_audio_by_moderator

    html = _act(admin_client_logged, "participant", "remove_from_meeting", [gia.pk])
    assert "Removed 1 participant from the meeting." in html
    gia.refresh_from_db()
    assert gia.state == Participant.State.REMOVED
    assert selectors.room_entry_refusal(room=meeting.room, user=gia.user).reason == "removed"

    # Who is no longer in the meeting is skipped, with a word.
    html = _act(admin_client_logged, "participant", "mute_audio", [gia.pk])
    assert "Skipped 1 participant who is no longer in the meeting." in html
    gia.refresh_from_db()
    assert not gia.muted_audio_by_moderator


def test_the_owner_cannot_be_muted_or_removed_and_the_others_go_on(admin_client_logged, meeting):
    owner_in, (gus, _gia) = meeting.owner_in, meeting.guests_in
    html = _act(admin_client_logged, "participant", "mute_audio", [owner_in.pk, gus.pk])
    assert "Not done for Olive Owner: The room&#x27;s owner cannot be muted or removed." in html
    assert "Muted the microphone of 1 participant." in html
    owner_in.refresh_from_db()
    gus.refresh_from_db()
    assert not owner_in.muted_audio_by_moderator and gus.muted_audio_by_moderator

    html = _act(admin_client_logged, "participant", "remove_and_ban", [owner_in.pk])
    assert "cannot be muted or removed" in html
    owner_in.refresh_from_db()
    assert owner_in.state == Participant.State.CONNECTED
    assert not RoomRemoval.objects.exists()


def test_ban_then_let_back_in(admin_client_logged, meeting):
    gus = meeting.guests_in[0]
    html = _act(admin_client_logged, "participant", "remove_and_ban", [gus.pk])
    assert "Removed and banned 1 participant." in html
    gus.refresh_from_db()
    assert gus.state == Participant.State.REMOVED
    assert selectors.room_entry_refusal(room=meeting.room, user=gus.user).reason == "banned"

    changelist = admin_client_logged.get(
        reverse("admin:rooms_roomremoval_changelist"), {"banned__exact": "1"}
    )
    removal = RoomRemoval.objects.get()
    assert list(changelist.context["cl"].result_list) == [removal]
    assert removal.removed_by.username == "root"
    assert admin_client_logged.get(reverse("admin:rooms_roomremoval_add")).status_code == 403
    html = _act(admin_client_logged, "roomremoval", "let_back_in", [removal.pk])
    assert "Let 1 person back in." in html
    assert not RoomRemoval.objects.exists()
    assert selectors.room_entry_refusal(room=meeting.room, user=gus.user) is None


def test_deleting_a_removal_lets_them_back_in(admin_client_logged, meeting):
    gus = meeting.guests_in[0]
    services.participant_remove(
        room_id=meeting.room.pk, participant_id=gus.pk, by_user=meeting.owner, ban=True
    )
    removal = RoomRemoval.objects.get()
    admin_client_logged.post(
        reverse("admin:rooms_roomremoval_delete", args=[removal.pk]), {"post": "yes"}
    )
    assert not RoomRemoval.objects.exists()
    assert selectors.room_entry_refusal(room=meeting.room, user=gus.user) is None


def test_join_requests_let_in_and_turn_away(admin_client_logged, meeting, make_user):
    other = make_user("otto", display_name="Otto Other")
    with pytest.raises(services.JoinWaiting):
        services.participant_join(room_id=meeting.room.pk, user=other, connection_id="w-otto")
    waiting = JoinRequest.objects.get(user=meeting.waiter)
    other_waiting = JoinRequest.objects.get(user=other)
    page = admin_client_logged.get(
        reverse("admin:rooms_joinrequest_changelist"), {"state__exact": "waiting"}
    )
    assert set(page.context["cl"].result_list) == {waiting, other_waiting}
    assert admin_client_logged.get(reverse("admin:rooms_joinrequest_add")).status_code == 403
    change = admin_client_logged.get(reverse("admin:rooms_joinrequest_change", args=[waiting.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content

    html = _act(admin_client_logged, "joinrequest", "let_in", [waiting.pk])
    assert "Let 1 person in." in html
    waiting.refresh_from_db()
    assert waiting.state == JoinRequest.State.ADMITTED
    assert waiting.decided_by.username == "root"
    # Let in: they join without waiting again.
    services.participant_join(room_id=meeting.room.pk, user=meeting.waiter, connection_id="c-w")

    html = _act(admin_client_logged, "joinrequest", "turn_away", [other_waiting.pk, waiting.pk])
    assert "Turned 1 person away." in html
    assert "Not done for Wally Waiting: That person is not waiting to join." in html
    other_waiting.refresh_from_db()
    waiting.refresh_from_db()
    assert other_waiting.state == JoinRequest.State.DENIED and other_waiting.denials == 1
    assert waiting.state == JoinRequest.State.ADMITTED


@pytest.mark.django_db(transaction=True)
def test_staff_add_and_remove_moderators_and_the_meeting_is_told(client, meeting, make_user):
    admin = User.objects.create_superuser(username="root", password="x" * 20)
    client.force_login(admin)
    newcomer = make_user("nina", display_name="Nina New")
    listener = GroupListener(meeting.room)
    url = reverse("admin:rooms_room_change", args=[meeting.room.pk])

    # Remove Mona, add Nina.
    data = _post_data(client.get(url))
    prefix = "moderators"
    assert data[f"{prefix}-TOTAL_FORMS"] == 1
    data[f"{prefix}-0-DELETE"] = "on"
    data[f"{prefix}-TOTAL_FORMS"] = 2
    data[f"{prefix}-1-user"] = str(newcomer.pk)
    data[f"{prefix}-1-room"] = str(meeting.room.pk)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["errors"]

    assert not selectors.room_moderates(room=meeting.room, user=meeting.moderator)
    assert selectors.room_moderates(room=meeting.room, user=newcomer)
    assert RoomModerator.objects.get().granted_by == admin
    told = [m["event"] for m in listener.events() if m["event"]["type"] == "moderators_changed"]
    assert told == [
        {"type": "moderators_changed", "user_ids": sorted([meeting.owner.pk, newcomer.pk])}
    ]

    # Saving without touching the moderators tells nobody.
    response = client.post(url, _post_data(client.get(url)))
    assert response.status_code == 302
    assert not [m for m in listener.events() if m["event"]["type"] == "moderators_changed"]

    # Someone who moderates already is not added twice.
    data = _post_data(client.get(url))
    data.update({f"{prefix}-TOTAL_FORMS": 2, f"{prefix}-1-user": str(newcomer.pk)})
    response = client.post(url, data)
    assert response.status_code == 200 and response.context["errors"]
    assert RoomModerator.objects.count() == 1


def test_no_admin_for_people_who_are_not_staff(client, meeting):
    client.force_login(meeting.owner)
    for url in (
        reverse("admin:rooms_room_change", args=[meeting.room.pk]),
        reverse("admin:rooms_participant_changelist"),
        reverse("admin:rooms_joinrequest_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    response = client.post(
        reverse("admin:rooms_participant_changelist"),
        {"action": "remove_from_meeting", "_selected_action": [meeting.guests_in[0].pk]},
    )
    assert response.status_code == 302
    assert Participant.objects.get(pk=meeting.guests_in[0].pk).state == "connected"


def test_the_live_filter_leaves_out_who_left_or_went_stale(admin_client_logged, meeting):
    stale = record_participant(meeting.room, meeting.moderator, seen_ago=3600)
    gone = record_participant(meeting.room, meeting.waiter, state="left")
    url = reverse("admin:rooms_participant_changelist")
    live = admin_client_logged.get(url, {"live": "yes"}).context["cl"].result_list
    assert {p.pk for p in live} == {meeting.owner_in.pk, *(p.pk for p in meeting.guests_in)}
    other = admin_client_logged.get(url, {"live": "no"}).context["cl"].result_list
    assert {p.pk for p in other} == {stale.pk, gone.pk}


def test_changing_the_settings_in_the_admin_is_told_and_turning_off_asking_lets_people_in(
    admin_client_logged, meeting
):
    url = reverse("admin:rooms_room_change", args=[meeting.room.pk])
    data = _post_data(admin_client_logged.get(url))
    del data["ask_to_join"]  # unticked
    data["name"] = "Standup (open)"
    response = admin_client_logged.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    meeting.room.refresh_from_db()
    assert (meeting.room.name, meeting.room.ask_to_join) == ("Standup (open)", False)
    # As when the owner turns it off: whoever waited is let in.
    assert JoinRequest.objects.get(user=meeting.waiter).state == JoinRequest.State.ADMITTED
