"""A Korean speaker's whole way through the product, in real Chromium set to ko-KR: sign-up,
the lobby, a new room, the pre-join screen, a two-person call with its panels open, the
account's and the room's pages, a missing page, a room closed under a caller, log-in. On
every page, nothing a person can read, or hear from a screen reader, is English: the visible
text, and every label, title and placeholder. People's and rooms' names, the brand and a few
technical words are allowed."""

from __future__ import annotations

import re

import pytest

from tests.browser import PASSWORD, WAIT_MS, wait_until

pytestmark = pytest.mark.browser

# What may stay in Latin letters: the brand, people's and rooms' names chosen in this test,
# and technical terms a Korean interface writes as they are.
ALLOWED = {"Conference", "Ada", "Lovelace", "Grace", "Hopper", "hanada", "hangrace"}
ALLOWED |= {"English", "TURN", "HTTPS"}
ALLOWED |= {"localhost", "http", "https", "rooms", "invite", "ms", "kbps", "Mb", "fake", "device"}
ALLOWED |= {"Fake", "Default", "Audio", "Input", "Output", "Weekly", "sync"}  # device, room names
ALLOWED |= {"Enter", "Shift", "Esc"}  # keys, as their keycaps say
ALLOWED |= {"WebM", "MP"}  # video file formats (MP4), as Korean interfaces write them

# Everything a person reads or a screen reader says: text in the page, and the attributes that
# become names and descriptions. Hidden elements (a closed panel) are skipped by innerText but
# their labels are not: a screen reader can reach them once shown.
READABLE = """() => {
  const texts = [document.body.innerText, document.title];
  for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], [alt]')) {
    for (const name of ['aria-label', 'title', 'placeholder', 'alt']) {
      const value = el.getAttribute(name);
      if (value) texts.push(value);
    }
  }
  for (const el of document.querySelectorAll('input[type=submit], input[type=button]')) {
    texts.push(el.value);
  }
  return texts.join('\\n');
}"""


def english_words(page) -> set[str]:
    text = page.evaluate(READABLE)
    text = re.sub(r"https?://\S+", " ", text)  # links are addresses, not words
    words = set(re.findall(r"[A-Za-z]{2,}", text))
    return {word for word in words if word not in ALLOWED}


def assert_korean(page, where: str) -> None:
    found = english_words(page)
    assert not found, f"English on {where}: {sorted(found)}"


def test_a_korean_speaker_meets_no_english_from_sign_up_to_a_call(chromium, product):
    people = []
    try:
        for username, name in (("hanada", "Ada Lovelace"), ("hangrace", "Grace Hopper")):
            context = chromium.new_context(base_url=product.url, locale="ko-KR")
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
            people.append((context, page, errors))
            page.goto("/")
            assert_korean(page, "the landing page")
            page.goto("/accounts/signup/")
            assert_korean(page, "the sign-up form")
            page.fill("input[name=username]", username)
            page.fill("input[name=display_name]", name)
            page.fill("input[name=password1]", PASSWORD)
            page.fill("input[name=password2]", PASSWORD)
            page.click("#main button[type=submit]")
            page.wait_for_url(re.compile(r"/rooms/$"))
            assert_korean(page, "the lobby")
        (_, ada, _), (_, grace, _) = people

        ada.goto("/rooms/new/")
        assert_korean(ada, "the new room form")
        ada.fill("input[name=name]", "Weekly sync")
        ada.click("#main button[type=submit]")
        ada.wait_for_url(re.compile(r"/rooms/[-a-z0-9]+/$"))
        room_url = ada.url
        ada.wait_for_selector("#camera-select option", state="attached", timeout=WAIT_MS)
        assert_korean(ada, "the pre-join screen")
        ada.click("#join-button")
        ada.wait_for_selector("#room-status[data-state=connected]", timeout=WAIT_MS)

        grace.goto(room_url)
        grace.click("#join-button")
        grace.wait_for_selector("#room-status[data-state=connected]", timeout=WAIT_MS)
        wait_until(
            "Grace's picture on Ada's page",
            lambda: ada.locator(".tile--video:not(.tile--local)").count() == 1,
        )
        assert_korean(ada, "the call")
        for panel in ("#people-button", "#chat-button", "#details-button", "#devices-button"):
            ada.click(panel)
            assert_korean(ada, f"the call with {panel} open")
            ada.keyboard.press("Escape")
        ada.click("#reactions-button")
        assert_korean(ada, "the reactions menu")
        ada.keyboard.press("Escape")

        # Around the call: the account's pages, the room's settings, a missing page.
        (context, *_) = people[0]
        other = context.new_page()
        for path, where in (
            ("/accounts/profile/", "the profile"),
            ("/accounts/password/", "the password form"),
            (room_url + "edit/", "the room's settings"),
            (room_url + "delete/", "the delete question"),
            ("/rooms/no-such-room-zzzzzz/", "the missing page"),
        ):
            other.goto(path)
            assert_korean(other, where)
        # The owner deletes the room: Grace's call ends, and her page says so in Korean.
        other.goto(room_url + "delete/")
        other.click("#main button[type=submit]")
        grace.wait_for_selector("#room-status[data-state=closed]", timeout=WAIT_MS)
        assert_korean(grace, "the page after the room closed")
        other.close()
        # Logged out: the log-in page.
        grace.goto("/")
        grace.click(".site-nav__logout button")
        grace.goto("/accounts/login/")
        assert_korean(grace, "the log-in form")
        for *_, errors in people:
            assert errors == [], errors
    finally:
        for context, *_ in people:
            context.close()
