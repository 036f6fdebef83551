"""The call screen as a person sees it, in real Chromium through the product's pages: the call
fills the window at laptop and phone sizes without scrolling, the side panel and full screen,
the same account in a second tab (asked first, never hears itself), the pre-join screen's live
list, and what the page says once the room is gone."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser import WAIT_MS, Caller, Guest, people_of, wait_until

pytestmark = pytest.mark.browser

STAGE = """() => {
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom,
            width: r.width, height: r.height};
  };
  const stage = document.getElementById('stage');
  const shown = [...stage.querySelectorAll('.tile')].filter((t) => t.getClientRects().length);
  return {
    viewport: {width: innerWidth, height: innerHeight},
    scroll: {width: document.documentElement.scrollWidth,
             height: document.documentElement.scrollHeight},
    stage: box(stage),
    tiles: shown.map(box),
    all: stage.querySelectorAll('.tile').length,
    pages: Number(stage.dataset.pages),
    controls: box(document.querySelector('.call-controls')),
    headerShown: document.querySelector('.site-header').getClientRects().length > 0,
  };
}"""


def settled(page) -> dict:
    time.sleep(0.6)  # the layout's transitions (0.2 s) end
    return page.evaluate(STAGE)


def assert_fits(view: dict) -> None:
    """Nothing scrolls, and the tiles and the controls are all inside the window."""
    viewport = view["viewport"]
    assert view["scroll"]["width"] <= viewport["width"], view
    assert view["scroll"]["height"] <= viewport["height"], view
    for box in [*view["tiles"], view["controls"]]:
        assert box["left"] >= 0 and box["right"] <= viewport["width"] + 0.5, (box, viewport)
        assert box["top"] >= 0 and box["bottom"] <= viewport["height"] + 0.5, (box, viewport)
    assert not view["headerShown"], "the site's header still takes room from the call"


def test_a_nine_person_call_fills_the_window_on_a_laptop_and_a_phone(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace = make("fillada", "Ada Lovelace"), make("fillgrace", "Grace Hopper")
        ada.page.set_viewport_size({"width": 1280, "height": 800})
        room_url = ada.create_room("Nine people")
        grace.open(room_url)
        grace.wait_connected()
        guests = [Guest(chromium, product, f"fillguest{n}", f"Guest {n}") for n in range(7)]
        try:
            for guest in guests:
                guest.enter(room_url)
            ada.page.wait_for_function(
                "document.querySelectorAll('#stage .tile').length === 9", timeout=WAIT_MS
            )
            ada.wait_video_from(grace)

            # A laptop: the nine tiles on one screen, 16:9, together covering most of a stage
            # that is most of the window; the control bar at the bottom, no header above.
            view = settled(ada.page)
            assert_fits(view)
            assert view["pages"] == 1 and len(view["tiles"]) == 9, view
            for tile in view["tiles"]:
                assert tile["width"] >= 350, tile
                assert abs(tile["width"] / tile["height"] - 16 / 9) < 0.03, tile
            stage, viewport = view["stage"], view["viewport"]
            assert stage["width"] * stage["height"] >= 0.75 * viewport["width"] * viewport["height"]
            covered = sum(t["width"] * t["height"] for t in view["tiles"])
            assert covered >= 0.8 * stage["width"] * stage["height"], (covered, stage)
            # The top bar: the room's name and a running clock.
            assert ada.page.inner_text("#room-name") == "Nine people"
            clock = ada.page.inner_text("#call-clock")
            assert re.fullmatch(r"\d+:\d\d", clock), clock
            ada.page.wait_for_function(
                f"document.getElementById('call-clock').textContent !== {clock!r}", timeout=3000
            )

            # The people panel opens beside the call (the stage gives way, nothing scrolls),
            # lists everyone, and Escape closes it, back on its button.
            ada.page.click("#people-button")
            ada.page.wait_for_selector("#participants li >> nth=8")
            assert ada.page.locator("#participants li").count() == 9
            assert ada.page.inner_text("#people-count") == "9"
            with_panel = settled(ada.page)
            assert_fits(with_panel)
            assert with_panel["stage"]["width"] < stage["width"]
            ada.page.keyboard.press("Escape")
            ada.page.wait_for_selector("#people-panel", state="hidden")
            assert ada.page.evaluate("document.activeElement.id") == "people-button"

            # A phone, upright and on its side, and a small one: still no scrolling, every tile
            # and control on the screen (on pages if need be), pictures that are not stamps.
            phones = ({"width": 390, "height": 844}, {"width": 844, "height": 390})
            for size in (*phones, {"width": 360, "height": 640}):
                ada.page.set_viewport_size(size)
                view = settled(ada.page)
                assert_fits(view)
                assert len(view["tiles"]) * view["pages"] >= 9, view
                assert min(t["width"] for t in view["tiles"]) >= 150, view
                covered = sum(t["width"] * t["height"] for t in view["tiles"])
                assert covered >= 0.5 * view["stage"]["width"] * view["stage"]["height"], view

            # On the small phone the least needed controls wait in a More menu; from there,
            # the room's details (its link to share) open in the side panel.
            assert ada.page.is_visible("#more-button")
            assert ada.page.is_hidden("#more-menu")
            ada.page.click("#more-button")
            ada.page.wait_for_selector("#more-menu #details-button", state="visible")
            assert ada.page.is_visible("#more-menu #fullscreen-button")
            assert ada.page.is_visible(".call-controls #mic-button")  # these never move
            assert ada.page.is_visible(".call-controls #leave-button")
            ada.page.click("#details-button")
            ada.page.wait_for_selector("#more-menu", state="hidden")
            ada.page.wait_for_selector("#details-panel #invite-link")
            assert ada.page.input_value("#invite-link") == room_url
            # Back on a laptop: every control in the bar again, no More.
            ada.page.set_viewport_size({"width": 1280, "height": 800})
            ada.page.wait_for_selector("#more-button", state="hidden")
            assert ada.page.locator(".call-controls #fullscreen-button").is_visible()
        finally:
            for guest in guests:
                guest.close()


def test_full_screen_shows_the_call_alone(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada = make("fullada", "Ada Lovelace")
        ada.create_room("Full screen")
        ada.page.click("#fullscreen-button")
        ada.page.wait_for_function("document.fullscreenElement?.id === 'room'", timeout=WAIT_MS)
        ada.page.wait_for_selector("#fullscreen-button[aria-pressed=true]")
        assert ada.page.inner_text("#fullscreen-button").strip() == "Full screen"  # label stays
        ada.page.keyboard.press("f")
        ada.page.wait_for_function("document.fullscreenElement === null", timeout=WAIT_MS)
        ada.page.wait_for_selector("#fullscreen-button[aria-pressed=false]")


def test_the_same_account_in_a_second_tab_is_asked_and_never_hears_itself(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada = make("tabada", "Ada Lovelace")
        room_url = ada.new_room("Two tabs")
        # A second tab of the same browser (the same account), on the pre-join screen first.
        second = ada.context.new_page()
        errors: list[str] = []
        second.on("pageerror", lambda error: errors.append(str(error)))
        second.goto(room_url)
        assert second.locator("#also-you").is_hidden()
        # The first tab joins: the second tab's pre-join screen learns it within seconds.
        ada.join()
        ada.wait_connected()
        second.wait_for_selector("#also-you", state="visible", timeout=WAIT_MS)
        assert "Ada Lovelace" not in second.inner_text("#already-here")  # yourself is not "others"

        # Join asks first; Cancel keeps the pre-join screen.
        second.click("#join-button")
        second.wait_for_selector("#second-tab", state="visible")
        assert second.evaluate("document.activeElement.id") == "second-tab-join"
        second.click("#second-tab-cancel")
        second.wait_for_selector("#second-tab", state="hidden")
        assert second.get_attribute("#room-status", "data-state") == "ready"

        # Join here too: both tabs are in the call, and neither plays the other's sound.
        second.click("#join-button")
        second.click("#second-tab-join")
        second.wait_for_selector("#room-status[data-state=connected]", timeout=WAIT_MS)
        for page in (ada.page, second):
            tile = page.wait_for_selector(".tile--also-you", state="attached", timeout=WAIT_MS)
            wait_until(
                "the other tab's picture to arrive",
                lambda tile=tile: tile.evaluate("(t) => t.querySelector('video').videoWidth > 0"),
            )
            assert tile.evaluate("(t) => t.querySelector('video').muted")
            assert tile.evaluate("(t) => t.querySelector('.tile__sound').hidden")
        second.close()
        assert not errors, errors


def test_a_closed_room_ends_the_call_and_says_where_to_go(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace = make("closeada", "Ada Lovelace"), make("closegrace", "Grace Hopper")
        room_url = ada.new_room("Short meeting")
        grace.open(room_url)
        grace.wait_connected()
        grace.page.wait_for_selector(".call-controls", state="visible")
        # The owner deletes the room while Grace is in it.
        ada.page.goto(room_url + "delete/")
        ada.page.click("#main button[type=submit]")
        grace.page.wait_for_selector("#room-status[data-state=closed]", timeout=WAIT_MS)
        # The call is over: no controls, no tiles, what happened, and a way back.
        grace.page.wait_for_selector(".call-controls", state="hidden")
        assert grace.page.locator("#stage .tile").count() == 0
        message = grace.page.inner_text("#ended-message")
        assert "closed" in message, message
        assert grace.page.locator(".site-header").is_visible()
        grace.page.click("#lobby-link")
        grace.page.wait_for_url(re.compile(r"/rooms/$"))


def test_removed_or_ended_by_a_moderator_the_page_says_so_and_stays_put(chromium, product):
    import json

    from tests.browser import Guest

    with people_of(Caller, chromium, product) as make:
        grace, alan = make("movegrace", "Grace Hopper"), make("movealan", "Alan Turing")
        ada = Guest(chromium, product, "moveada", "Ada Lovelace")  # the owner, on a plain socket
        try:
            room_url = ada.new_room("Moderated")
            ada.enter(room_url)
            for person in (grace, alan):
                person.open(room_url)
                person.wait_connected()
            # Ada removes Grace: Grace's call ends with the reason, and no reconnecting.
            grace_id = int(grace.participant_id)
            ada.socket.send(json.dumps({"type": "remove", "participant_id": grace_id}))
            grace.page.wait_for_selector("#room-status[data-state=removed]", timeout=WAIT_MS)
            grace.page.wait_for_selector(".call-controls", state="hidden")
            assert grace.page.is_hidden("#retry-button")
            assert grace.page.inner_text("#ended-message").strip()
            alan.wait_not_sees("Grace Hopper")
            time.sleep(2)  # a page that reconnected would be back by now
            assert grace.page.get_attribute("#room-status", "data-state") == "removed"
            # Ada ends the meeting: Alan's page says so; the room is still there.
            ada.socket.send(json.dumps({"type": "end_meeting"}))
            alan.page.wait_for_selector("#room-status[data-state=closed]", timeout=WAIT_MS)
            assert alan.page.inner_text("#ended-message").strip()
            alan.page.goto(room_url)
            assert alan.page.locator("#join-button").is_visible()
        finally:
            ada.close()
