"""The lobby's live counts as people see them: real headless Chromium against daphne.

One person keeps the lobby open while others join a public room through its real socket and
leave it again; the card's count follows, and says "Full" at capacity, without a reload.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import Person, people_of, wait_until

pytestmark = pytest.mark.browser

# lobby.js asks every 5 s: a change shows within one poll and a slow page.
SEEN_WITHIN_MS = 10_000


@pytest.fixture
def people(chromium, product):
    with people_of(Person, chromium, product) as make:
        yield make


def test_the_lobby_counts_people_in_and_out_without_a_reload(people):
    from playwright.sync_api import expect

    ada = people("ada", "Ada Lovelace")
    room_url = ada.new_room("Lobby watch")
    slug = room_url.rstrip("/").rsplit("/", 1)[-1]
    # Two seats, so the card can fill up.
    ada.page.goto(f"/rooms/{slug}/edit/")
    ada.page.fill("input[name=max_participants]", "2")
    ada.page.click("#main button[type=submit]")
    ada.page.wait_for_url(re.compile(rf"/rooms/{slug}/$"))

    alan = people("alan", "Alan Turing")
    alan.page.goto("/rooms/")
    card = alan.page.locator(f"#public-rooms [data-room-slug='{slug}']")
    count = card.locator(".live-count")
    expect(count).to_have_text("0")
    alan.page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    grace = people("grace", "Grace Hopper")
    grace.open(room_url)
    grace.wait_connected()
    expect(count).to_have_text("1", timeout=SEEN_WITHIN_MS)
    expect(card.locator(".badge--full")).to_have_count(0)

    ada.join()
    ada.wait_connected()
    expect(count).to_have_text("2", timeout=SEEN_WITHIN_MS)
    expect(card.locator(".badge--full")).to_have_text("Full", timeout=SEEN_WITHIN_MS)

    # Grace leaves with the button, Ada by closing her tab.
    grace.page.click("#leave-button")
    expect(count).to_have_text("1", timeout=SEEN_WITHIN_MS)
    expect(card.locator(".badge--full")).to_have_count(0, timeout=SEEN_WITHIN_MS)
    ada.page.close()
    expect(count).to_have_text("0", timeout=SEEN_WITHIN_MS)

    assert alan.page.evaluate("window.__sameDocument === true")
    # Counting changes no one's words in a live region: the card has none.
    assert card.locator("[aria-live], [role=status]").count() == 0


# When the page asked rooms:live (ms, the page's clock); and a document.hidden the test can set
# (a page cannot be hidden otherwise in headless Chromium).
RECORD_LIVE_REQUESTS = """
window.__asked = [];
const nativeFetch = window.fetch;
window.fetch = (url, ...rest) => {
  if (String(url).includes('/rooms/live/?')) window.__asked.push(performance.now());
  return nativeFetch(url, ...rest);
};
Object.defineProperty(document, 'hidden', {
  configurable: true, get: () => window.__hidden === true,
});
"""


def test_the_lobby_asks_only_while_visible_and_less_often_after_errors(people):
    ada = people("ada2", "Ada Lovelace")
    ada.new_room("Quiet room")
    alan = people("alan2", "Alan Turing")
    page = alan.page
    page.add_init_script(RECORD_LIVE_REQUESTS)
    page.goto("/rooms/")

    def asked() -> list[float]:
        return page.evaluate("window.__asked")

    def set_hidden(hidden: bool) -> None:
        page.evaluate(
            "(hidden) => { window.__hidden = hidden;"
            " document.dispatchEvent(new Event('visibilitychange')); }",
            hidden,
        )

    wait_until("the lobby asks at once", asked)
    set_hidden(True)
    before = len(asked())
    page.wait_for_timeout(7_000)  # longer than the 5 s between polls
    assert len(asked()) == before, "the lobby polled while hidden"

    page.route(re.compile(r"/rooms/live/\?"), lambda route: route.fulfill(status=500, body="{}"))
    set_hidden(False)
    wait_until("the lobby asks at once when shown", lambda: len(asked()) > before, timeout=2)
    failed_at = asked()[-1]
    wait_until("the lobby asks again after an error", lambda: asked()[-1] > failed_at, timeout=15)
    assert asked()[-1] - failed_at >= 9_000, "no back-off after an error (5 s doubles to 10 s)"
