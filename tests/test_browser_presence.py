"""Live presence as people use it: real headless Chromium against daphne serving the product.

New users sign up through the pages, create rooms, join from separate browser sessions and
watch each other appear and disappear in the live list.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import WAIT_MS, Person, people_of

pytestmark = pytest.mark.browser


@pytest.fixture
def people(chromium, product):
    with people_of(Person, chromium, product) as make:
        yield make


def test_people_see_each_other_arrive_and_leave(people, product):
    ada = people("ada", "Ada Lovelace")
    room_url = ada.create_room("Team room")
    assert len(ada.names_in_room()) == 1
    assert "Ada Lovelace" in ada.names_in_room()[0]

    grace = people("grace", "Grace Hopper")
    grace.open(room_url)
    grace.wait_connected()
    grace.wait_sees("Ada Lovelace")
    ada.wait_sees("Grace Hopper")
    assert ada.page.locator("#participant-count").inner_text().strip().endswith("(2)")

    # The lobby counts both of them.
    alan = people("alan", "Alan Turing")
    alan.page.goto("/rooms/")
    slug = room_url.rstrip("/").rsplit("/", 1)[-1]
    count = alan.page.locator(f"[data-room-slug='{slug}'] .live-count").inner_text()
    assert "2" in count

    # Leaving with the button takes Grace to the lobby and out of Ada's list.
    grace.page.click("#leave-button")
    grace.page.wait_for_url(re.compile(r"/rooms/$"))
    ada.wait_not_sees("Grace Hopper")

    # Closing the tab without leaving also takes her out.
    grace.open(room_url)
    grace.wait_connected()
    ada.wait_sees("Grace Hopper")
    grace.page.close()
    ada.wait_not_sees("Grace Hopper")
    assert len(ada.names_in_room()) == 1


def test_private_room_opens_with_the_invite_link_only(people):
    ada = people("ada2", "Ada Lovelace")
    ada.create_room("Secret plans", private=True)
    invite = ada.page.input_value("#invite-link")
    assert "invite=" in invite
    room_url = invite.split("?", 1)[0]

    alan = people("alan2", "Alan Turing")
    alan.open(room_url)
    assert "invite link" in alan.page.locator("#main").inner_text()
    assert not alan.page.locator("#participants").count()

    grace = people("grace2", "Grace Hopper")
    grace.open(invite)
    grace.wait_connected()
    ada.wait_sees("Grace Hopper")


def test_locked_room_tells_newcomers_why(people):
    ada = people("ada3", "Ada Lovelace")
    room_url = ada.create_room("Board meeting")
    me = ada.page.get_attribute("#participants li.is-you", "data-participant-id")
    ada.page.click("#details-button")  # the owner's settings are in the room's details panel
    ada.page.click("#lock-button")
    ada.page.wait_for_selector("#lock-button:has-text('Unlock room')", timeout=WAIT_MS)
    ada.page.wait_for_selector("#room-badges .badge--locked", timeout=WAIT_MS)
    # Locking happened in place: Ada is still the same participant, still connected.
    ada.wait_connected()
    assert ada.page.get_attribute("#participants li.is-you", "data-participant-id") == me

    alan = people("alan3", "Alan Turing")
    alan.open(room_url)
    status = alan.page.wait_for_selector("#room-status[data-state=refused]", timeout=WAIT_MS)
    assert "locked" in status.inner_text()


@pytest.fixture
def slow_reaping_product(tmp_path):
    """A server that takes minutes to reap: only resume can clear a reconnecting tab's ghost."""
    from tests.live import ProductServer

    server = ProductServer(tmp_path, {"PRESENCE_STALE_SECONDS": "300"}).start()
    yield server
    server.stop()


def test_pages_recover_from_a_crashed_server_without_ghosts(chromium, slow_reaping_product):
    product = slow_reaping_product
    made = [Person(chromium, product, name, f"{name.title()} Test") for name in ("ada", "grace")]
    ada, grace = made
    ada.name, grace.name = "Ada Test", "Grace Test"
    room_url = ada.create_room("Resilient room")
    grace.open(room_url)
    grace.wait_connected()
    ada.wait_sees("Grace Test")

    product.crash()
    for person in (ada, grace):
        person.page.wait_for_selector("#room-status[data-state=reconnecting]", timeout=WAIT_MS)
    product.serve()
    for person in (ada, grace):
        person.page.wait_for_selector("#room-status[data-state=connected]", timeout=40_000)
    # Each reconnecting tab took over from its own dead connection: no "(also you)" ghosts.
    for person in (ada, grace):
        person.page.wait_for_function(
            "document.querySelectorAll('#participants li').length === 2", timeout=WAIT_MS
        )
        names = " ".join(person.names_in_room())
        assert "also you" not in names
        assert "Ada Test" in names and "Grace Test" in names
    for person in made:
        assert not person.errors
        person.close()
