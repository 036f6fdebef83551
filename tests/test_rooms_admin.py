"""The admin: rooms with live counts, search, filters and the close action; read-only history."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import User
from rooms import services
from rooms.models import ChatMessage, Participant, Room

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
