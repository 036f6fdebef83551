"""Room pages: who may see and do what."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rooms import services
from rooms.invites import invite_token
from rooms.models import Room

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_user):
    return make_user("owner", display_name="Olive")


@pytest.fixture
def stranger(make_user):
    return make_user("stranger")


@pytest.fixture
def room(owner):
    return services.room_create(owner=owner, name="Weekly sync", description="Our standup")


@pytest.fixture
def private_room(owner):
    return services.room_create(owner=owner, name="Secret plans", visibility="private")


def _login(client, user):
    client.force_login(user)
    return client


def test_home_greets_visitors_and_sends_members_to_the_lobby(client, owner):
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("signup").encode() in response.content
    assert _login(client, owner).get("/").url == reverse("rooms:lobby")


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("rooms:lobby", "get"),
        ("rooms:create", "get"),
        ("rooms:detail", "get"),
        ("rooms:edit", "get"),
        ("rooms:delete", "get"),
        ("rooms:lock", "post"),
        ("rooms:invite_reset", "post"),
    ],
)
def test_anonymous_visitors_are_sent_to_log_in(client, room, name, method):
    url = (
        reverse(name, kwargs={"slug": room.slug})
        if name
        not in {
            "rooms:lobby",
            "rooms:create",
        }
        else reverse(name)
    )
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login") + "?next=")


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("rooms:edit", "get"),
        ("rooms:edit", "post"),
        ("rooms:delete", "get"),
        ("rooms:delete", "post"),
        ("rooms:lock", "post"),
        ("rooms:invite_reset", "post"),
    ],
)
def test_only_the_owner_manages_a_room(client, room, stranger, name, method):
    response = getattr(_login(client, stranger), method)(
        reverse(name, kwargs={"slug": room.slug}), {"name": "Hijacked", "locked": "true"}
    )
    assert response.status_code == 403
    room.refresh_from_db()
    assert room.name == "Weekly sync"
    assert room.locked is False


def test_lobby_lists_public_rooms_with_live_counts_and_my_rooms(
    client, owner, stranger, room, private_room
):
    services.participant_join(room_id=room.pk, user=stranger, connection_id="c1")
    theirs = services.room_create(owner=stranger, name="Their secret", visibility="private")
    page = _login(client, owner).get(reverse("rooms:lobby"))
    assert page.status_code == 200
    public = page.context["public_rooms"]
    assert [r.name for r in public] == ["Weekly sync"]
    assert public[0].live_count == 1
    assert {r.name for r in page.context["my_rooms"]} == {"Weekly sync", "Secret plans"}
    html = page.content.decode()
    assert f'data-room-slug="{room.slug}"' in html
    assert theirs.name not in html


def test_lobby_search(client, owner, room):
    services.room_create(owner=owner, name="Design review")
    page = _login(client, owner).get(reverse("rooms:lobby"), {"q": "design"})
    assert [r.name for r in page.context["public_rooms"]] == ["Design review"]


def test_create_room(client, owner):
    response = _login(client, owner).post(
        reverse("rooms:create"),
        {
            "name": "Retro",
            "description": "",
            "visibility": "private",
            "max_participants": 6,
            "screen_sharing": "owner",
        },
    )
    room = Room.objects.get(name="Retro")
    assert response.url == room.get_absolute_url()
    assert (room.owner, room.visibility, room.max_participants) == (owner, "private", 6)
    assert room.screen_sharing == "owner"


def test_create_room_validates_capacity(client, owner, settings):
    settings.ROOM_MAX_PARTICIPANTS_LIMIT = 20
    response = _login(client, owner).post(
        reverse("rooms:create"),
        {
            "name": "Huge",
            "visibility": "public",
            "max_participants": 21,
            "screen_sharing": "everyone",
        },
    )
    assert response.status_code == 200
    assert "at most 20" in response.content.decode()
    assert not Room.objects.filter(name="Huge").exists()


def test_owner_edits_room(client, owner, room):
    _login(client, owner)
    assert client.get(reverse("rooms:edit", kwargs={"slug": room.slug})).status_code == 200
    response = client.post(
        reverse("rooms:edit", kwargs={"slug": room.slug}),
        {
            "name": "Renamed",
            "description": "x",
            "visibility": "public",
            "max_participants": 4,
            "screen_sharing": "owner",
        },
    )
    assert response.status_code == 302
    room.refresh_from_db()
    assert (room.name, room.max_participants, room.screen_sharing) == ("Renamed", 4, "owner")


def test_owner_locks_and_unlocks(client, owner, room):
    _login(client, owner)
    client.post(reverse("rooms:lock", kwargs={"slug": room.slug}), {"locked": "true"})
    room.refresh_from_db()
    assert room.locked
    client.post(reverse("rooms:lock", kwargs={"slug": room.slug}), {"locked": "false"})
    room.refresh_from_db()
    assert not room.locked


def test_lock_answers_json_for_the_room_page(client, owner, room):
    response = _login(client, owner).post(
        reverse("rooms:lock", kwargs={"slug": room.slug}),
        {"locked": "true"},
        headers={"accept": "application/json"},
    )
    assert response.json() == {"locked": True}
    room.refresh_from_db()
    assert room.locked


def test_favicon_redirects_to_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    assert response.url.endswith(".svg")


def test_owner_deletes_room_after_confirming(client, owner, room):
    _login(client, owner)
    url = reverse("rooms:delete", kwargs={"slug": room.slug})
    assert client.get(url).status_code == 200
    assert Room.objects.filter(pk=room.pk).exists()
    assert client.post(url).url == reverse("rooms:lobby")
    assert not Room.objects.filter(pk=room.pk).exists()


def test_room_page_carries_the_socket_address(client, stranger, room):
    page = _login(client, stranger).get(room.get_absolute_url())
    assert page.status_code == 200
    assert page.context["client_config"]["wsPath"] == f"/ws/rooms/{room.slug}/"
    assert page.context["invite_url"] is None
    assert b'id="room-config"' in page.content


def test_room_page_has_the_chat_hands_and_reactions(client, owner, stranger, room):
    page = _login(client, stranger).get(room.get_absolute_url())
    assert page.context["client_config"]["isOwner"] is False
    html = page.content.decode()
    for part in ('id="chat-panel"', 'id="chat-button"', 'id="hand-button"', 'id="reactions-menu"'):
        assert part in html
    assert html.count('class="reactions-menu__button"') == 6
    assert 'data-emoji="❤️" aria-label="Love"' in html
    page = _login(client, owner).get(room.get_absolute_url())
    assert page.context["client_config"]["isOwner"] is True


def test_room_form_asks_who_may_share_their_screen(client, owner):
    page = _login(client, owner).get(reverse("rooms:create"))
    html = page.content.decode()
    assert "Who can share their screen" in html
    assert "The owner can always share their screen." in html
    assert page.context["form"]["screen_sharing"].value() == "everyone"


def test_unknown_room_is_404(client, stranger):
    assert _login(client, stranger).get("/rooms/nope/").status_code == 404


def test_private_room_is_refused_without_invite(client, stranger, private_room):
    page = _login(client, stranger).get(private_room.get_absolute_url())
    assert page.status_code == 403
    assert "invite link" in page.content.decode()


def test_invite_link_opens_a_private_room(client, owner, stranger, private_room):
    owner_page = _login(client, owner).get(private_room.get_absolute_url())
    invite_url = owner_page.context["invite_url"]
    assert invite_url.startswith("http://testserver/rooms/")
    assert invite_url in owner_page.content.decode()

    client.logout()
    _login(client, stranger)
    landing = client.get(invite_url)
    assert landing.url == private_room.get_absolute_url()  # the token leaves the address bar
    page = client.get(landing.url)
    assert page.status_code == 200
    assert page.context["client_config"]["wsPath"].startswith(
        f"/ws/rooms/{private_room.slug}/?invite="
    )


def test_forged_and_reset_invites_are_refused(client, owner, stranger, private_room):
    old = invite_token(private_room)
    _login(client, owner).post(reverse("rooms:invite_reset", kwargs={"slug": private_room.slug}))
    client.logout()
    _login(client, stranger)
    for token in (old, "forged"):
        client.get(private_room.get_absolute_url(), {"invite": token})
        assert client.get(private_room.get_absolute_url()).status_code == 403


def test_closed_room_page_says_so(client, stranger, room):
    services.room_close(room=room)
    page = _login(client, stranger).get(room.get_absolute_url())
    assert page.status_code == 410
    assert "closed" in page.content.decode()


def test_the_pre_join_screen_says_who_is_already_in(client, stranger, owner, room, make_user):
    from tests.conftest import record_participant

    page = _login(client, stranger).get(room.get_absolute_url())
    assert "Nobody is in the room yet." in page.content.decode()
    record_participant(room, owner, name="Ada Lovelace")
    record_participant(room, make_user("grace"), name="Grace Hopper")
    record_participant(room, make_user("gone"), name="Gone Away", state="left")
    text = client.get(room.get_absolute_url()).content.decode()
    assert "In the room now: Ada Lovelace, Grace Hopper" in text
    assert "Gone Away" not in text
    assert '<p id="also-you" hidden>' in text  # the page shows it when it becomes true
    assert '"alsoHere": false' in text
    record_participant(room, stranger, name="Stranger")  # this user, in another tab
    text = client.get(room.get_absolute_url()).content.decode()
    assert '<p id="also-you">You are already in this room in another tab' in text
    assert '"alsoHere": true' in text
    for index in range(6):
        record_participant(room, make_user(f"many{index}"), name=f"Many {index}")
    text = client.get(room.get_absolute_url()).content.decode()
    assert "and 3 others" in text


# --- rooms:live, the lobby's live counts ---------------------------------------------------


def _live(client, rooms):
    return client.get(reverse("rooms:live"), {"rooms": rooms})


def test_live_counts_public_rooms_and_my_own(client, owner, stranger, room, private_room):
    from tests.conftest import record_participant

    theirs = services.room_create(owner=stranger, name="Their secret", visibility="private")
    record_participant(room, stranger)
    record_participant(room, owner)
    record_participant(theirs, stranger)
    services.room_update(room=private_room, locked=True, max_participants=4)
    response = _live(
        _login(client, owner), f"{room.slug},{private_room.slug},{theirs.slug},no-such-room-x1"
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert response.json() == {
        "rooms": {
            room.slug: {"count": 2, "max": 10, "locked": False, "closed": False},
            private_room.slug: {"count": 0, "max": 4, "locked": True, "closed": False},
        }
    }
    # The same question from someone else: the owner's private room is not theirs to count.
    client.logout()
    assert set(_live(_login(client, stranger), f"{room.slug},{private_room.slug}").json()["rooms"])
    assert private_room.slug not in _live(client, private_room.slug).json()["rooms"]


def test_live_says_when_a_public_room_closed(client, stranger, room):
    services.room_close(room=room)
    rooms = _live(_login(client, stranger), room.slug).json()["rooms"]
    assert rooms[room.slug]["closed"] is True


def test_live_answers_for_a_bounded_number_of_rooms(client, owner, room):
    last = services.room_create(owner=owner, name="Asked last")
    asked = [room.slug, *(f"filler-{index}" for index in range(120)), last.slug]
    rooms = _live(_login(client, owner), ",".join(asked)).json()["rooms"]
    assert set(rooms) == {room.slug}  # only the first 100 slugs asked are looked at


@pytest.mark.parametrize(
    "rooms",
    [
        "",
        "," * 10_000,
        "x" * 100_000,
        ",".join(["weekly-sync"] * 5_000),
        "café-☕,Ünïcødé,\U0001d530\U0001d529\U0001d532\U0001d524,\u202e-rtl",
        "a\x00b,../../etc/passwd,%00,' OR 1=1 --,<script>",
        "a" * 61,
    ],
    ids=["empty", "commas", "long", "repeated", "unicode", "junk", "overlong-slug"],
)
def test_live_survives_hostile_queries(client, owner, room, rooms):
    response = _live(_login(client, owner), rooms)
    assert response.status_code == 200
    assert response.json() == {"rooms": {}}


def test_live_survives_a_hostile_query_string(client, owner, room):
    _login(client, owner)
    url = reverse("rooms:live")
    for query in ("", "rooms", "rooms=%ff%fe", "rooms=a&rooms=b", "&".join(["x=1"] * 5_000)):
        response = client.get(f"{url}?{query}")
        assert response.status_code in {200, 400}, query
    assert client.get(f"{url}?rooms={room.slug}&rooms=%E2%98%95").json() == {"rooms": {}}
    assert client.get(f"{url}?rooms=%E2%98%95&rooms={room.slug}").json()["rooms"][room.slug]


# --- rooms:presence, who is in, for the pre-join screen -------------------------------------


def _presence(client, room):
    return client.get(reverse("rooms:presence", kwargs={"slug": room.slug}))


@pytest.mark.parametrize("name", ["rooms:live", "rooms:presence"])
def test_json_endpoints_refuse_anonymous_visitors_in_json(client, room, name):
    url = reverse(name, kwargs={"slug": room.slug}) if name == "rooms:presence" else reverse(name)
    response = client.get(url, {"rooms": room.slug})
    assert response.status_code == 403
    assert response.json() == {"error": "login_required"}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("name", ["rooms:live", "rooms:presence"])
def test_json_endpoints_only_read(client, owner, room, name):
    url = reverse(name, kwargs={"slug": room.slug}) if name == "rooms:presence" else reverse(name)
    assert _login(client, owner).post(url).status_code == 405


def test_presence_says_who_is_in(client, owner, stranger, room, make_user):
    from tests.conftest import record_participant

    _login(client, stranger)
    response = _presence(client, room)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert response.json() == {
        "count": 0,
        "names": [],
        "more": 0,
        "you_elsewhere": False,
        "recording": False,
    }

    record_participant(room, owner, name="Ada Lovelace")
    record_participant(room, make_user("gone"), name="Gone Away", state="left")
    record_participant(room, make_user("ghost"), name="Ghost", seen_ago=3_600)
    record_participant(room, stranger, name="Stranger")  # this user, in another tab
    for index in range(6):
        record_participant(room, make_user(f"many{index}"), name=f"Many {index}")
    assert _presence(client, room).json() == {
        "count": 8,
        "names": ["Ada Lovelace", "Many 0", "Many 1", "Many 2", "Many 3"],
        "more": 2,
        "you_elsewhere": True,
        "recording": False,
    }
    # The room page's pre-join screen tells the same.
    page = client.get(room.get_absolute_url())
    assert page.context["already_here"] == ("Ada Lovelace", "Many 0", "Many 1", "Many 2", "Many 3")
    assert (page.context["already_here_more"], page.context["also_here_yourself"]) == (2, True)
    assert page.context["being_recorded"] is False
    # A recorded meeting says so before anyone joins it.
    services.recording_start(room_id=room.pk, by_user=owner)
    assert _presence(client, room).json()["recording"] is True
    assert client.get(room.get_absolute_url()).context["being_recorded"] is True


def test_presence_of_an_unknown_room_is_404(client, stranger):
    response = _login(client, stranger).get(reverse("rooms:presence", kwargs={"slug": "nope"}))
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


def test_presence_of_a_private_room_needs_its_invite(client, owner, stranger, private_room):
    from tests.conftest import record_participant

    record_participant(private_room, owner, name="Olive")
    _login(client, stranger)
    response = _presence(client, private_room)
    assert (response.status_code, response.json()) == (403, {"error": "private"})
    # A forged invite kept by the room page changes nothing; the real one opens the door.
    client.get(private_room.get_absolute_url(), {"invite": "forged"})
    assert _presence(client, private_room).status_code == 403
    client.get(private_room.get_absolute_url(), {"invite": invite_token(private_room)})
    response = _presence(client, private_room)
    assert response.status_code == 200
    assert response.json()["names"] == ["Olive"]
    client.logout()
    assert _presence(_login(client, owner), private_room).json()["you_elsewhere"] is True


def test_presence_of_a_closed_room_is_gone(client, stranger, room):
    services.room_close(room=room)
    response = _presence(_login(client, stranger), room)
    assert (response.status_code, response.json()) == (410, {"error": "closed"})
