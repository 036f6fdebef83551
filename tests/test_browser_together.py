"""Working together in a call, in real Chromium through the product's pages: three people chat
(a link made clickable, markup shown as text, an unread count on a closed chat), a late joiner
reads the history, the owner deletes a message for everyone; hands go up in order, on the tiles
and in the people list, and the owner lowers one; a reaction floats over its sender's tile."""

from __future__ import annotations

import pytest

from tests.browser import WAIT_MS, Caller, Person, people_of, wait_until

pytestmark = pytest.mark.browser

LINK_MESSAGE = "Agenda: https://example.org/agenda?week=12 (see it)."
HOSTILE_MESSAGE = "<img src=x onerror=alert(1)>"

CHAT_LOG = """() => [...document.querySelectorAll('#chat-log .chat-message')].map((m) => ({
  name: m.querySelector('.chat-message__name').textContent,
  time: m.querySelector('time').getAttribute('datetime'),
  text: m.querySelector('.chat-message__text').textContent,
}))"""


def people_in_order(caller: Caller) -> list[str]:
    """The people list as shown: each name, with its hand's place when it is up."""
    return caller.page.evaluate(
        """() => [...document.querySelectorAll('#participants li')].map((li) =>
             li.querySelector('.participant__name').textContent +
             (li.querySelector('.participant__hand') ?
               ' ' + li.querySelector('.participant__hand').textContent : ''))"""
    )


def send_chat(caller: Caller, text: str) -> None:
    caller.page.fill("#chat-input", text)
    caller.page.press("#chat-input", "Enter")
    caller.page.wait_for_function(
        "document.getElementById('chat-input').value === ''", timeout=WAIT_MS
    )


def test_chat_hands_and_reactions_between_three_people(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada = make("togada", "Ada Lovelace")
        grace = make("toggrace", "Grace Hopper")
        alan = make("togalan", "Alan Turing")
        dialogs: list[str] = []  # an alert() would be a script someone sent in the chat

        def dialog_opened(dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        for person in (ada, grace, alan):
            person.page.on("dialog", dialog_opened)
        room_url = ada.create_room("Together")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        for person in (ada, grace, alan):
            person.page.wait_for_selector("#participants li >> nth=2", state="attached")
        grace_id, alan_id = grace.participant_id, alan.participant_id

        # --- Chat: Ada and Grace have it open, Alan does not. ---
        for person in (ada, grace):
            person.page.click("#chat-button")
            person.page.wait_for_selector("#chat-input", state="visible")
        assert grace.page.is_visible("#chat-empty")
        send_chat(ada, LINK_MESSAGE)
        send_chat(ada, HOSTILE_MESSAGE)
        grace.page.wait_for_selector("#chat-log .chat-message >> nth=1")
        log = grace.page.evaluate(CHAT_LOG)
        assert [(m["name"], m["text"]) for m in log] == [
            ("Ada Lovelace", LINK_MESSAGE),
            ("Ada Lovelace", HOSTILE_MESSAGE),
        ]
        assert all(m["time"].endswith("+00:00") for m in log), log
        assert grace.page.is_hidden("#chat-empty")
        for person in (grace, alan):  # the markup is text: no image, no script ran
            person.page.wait_for_selector("#chat-log .chat-message >> nth=1", state="attached")
            assert person.page.locator("#chat-log img").count() == 0
        link = grace.page.locator("#chat-log a")
        assert link.count() == 1
        assert link.get_attribute("href") == "https://example.org/agenda?week=12"
        assert link.inner_text() == "https://example.org/agenda?week=12"  # not the "(see it)."
        assert set(link.get_attribute("rel").split()) == {"noopener", "noreferrer", "nofollow"}
        assert link.get_attribute("target") == "_blank"
        # Only the owner may delete: Grace has no delete buttons.
        assert grace.page.locator(".chat-message__delete").count() == 0

        # Alan's chat is closed: a count on its button, gone once he opens it.
        alan.page.wait_for_selector("#chat-unread:not([hidden])", timeout=WAIT_MS)
        assert alan.page.inner_text("#chat-unread").split()[0] == "2"
        alan.page.click("#chat-button")
        alan.page.wait_for_selector("#chat-unread", state="hidden")
        send_chat(alan, "Hello from Alan")
        ada.page.wait_for_selector("#chat-log .chat-message:has-text('Hello from Alan')")
        assert ada.page.is_hidden("#chat-unread")  # her chat is open

        # A late joiner reads what was said.
        katherine = make("togkatherine", "Katherine Johnson")
        katherine.open(room_url)
        katherine.wait_connected()
        katherine.page.click("#chat-button")
        katherine.page.wait_for_selector("#chat-log .chat-message >> nth=2")
        history = katherine.page.evaluate(CHAT_LOG)
        assert [m["text"] for m in history] == [LINK_MESSAGE, HOSTILE_MESSAGE, "Hello from Alan"]
        assert katherine.page.locator("#chat-log img").count() == 0

        # The owner deletes the hostile message: gone for everyone.
        ada.page.locator("#chat-log .chat-message").nth(1).locator(".chat-message__delete").click()
        for person in (ada, grace, alan, katherine):
            wait_until(
                f"the message to be gone on {person.name}'s page",
                lambda person=person: (
                    [m["text"] for m in person.page.evaluate(CHAT_LOG)]
                    == [LINK_MESSAGE, "Hello from Alan"]
                ),
            )
        katherine.page.goto("about:blank")  # she leaves: three people are enough from here

        # --- Hands: Grace, then Alan (with H); the list and the tiles say so, in order. ---
        grace.page.click("#hand-button")
        grace.page.wait_for_selector("#hand-button[aria-pressed=true]")
        assert grace.page.inner_text("#hand-button").strip() == "Raise hand"  # the label stays
        ada.page.wait_for_selector(f".tile[data-participant-id='{grace_id}'] .tile__hand")
        alan.page.keyboard.press("Escape")  # out of the chat box: H is a shortcut, not a letter
        alan.page.keyboard.press("h")
        alan.page.wait_for_selector("#hand-button[aria-pressed=true]")
        ada.page.wait_for_selector(f".tile[data-participant-id='{alan_id}'] .tile__hand")
        grace.page.wait_for_selector(".tile--local .tile__hand")
        grace.page.wait_for_selector(f".tile[data-participant-id='{alan_id}'] .tile__hand")
        wait_until(
            "raised hands first, in the order they went up",
            lambda: (
                people_in_order(ada) == ["Grace Hopper ✋ 1", "Alan Turing ✋ 2", "Ada Lovelace"]
            ),
        )
        assert people_in_order(alan)[:2] == ["Grace Hopper ✋ 1", "Alan Turing ✋ 2"]
        # Only the owner is offered to lower others' hands.
        assert alan.page.locator(".participant__lower").count() == 0

        # The owner lowers Grace's hand: Alan is first now.
        ada.page.click("#people-button")
        ada.page.click(f"#participants li[data-participant-id='{grace_id}'] .participant__lower")
        grace.page.wait_for_selector("#hand-button[aria-pressed=false]")
        grace.page.wait_for_selector(".tile--local .tile__hand", state="detached")
        ada.page.wait_for_selector(
            f".tile[data-participant-id='{grace_id}'] .tile__hand", state="detached"
        )
        wait_until(
            "Alan's hand alone, first",
            lambda: people_in_order(ada) == ["Alan Turing ✋ 1", "Ada Lovelace", "Grace Hopper"],
        )
        assert "lowered your hand" in grace.page.inner_text("#room-notice")

        # --- Reactions: Alan's 👍 floats over Alan's tile, for Ada and for himself. ---
        alan.page.click("#reactions-button")
        alan.page.wait_for_selector("#reactions-menu", state="visible")
        alan.page.click("#reactions-menu [data-emoji='👍']")
        ada.page.wait_for_selector(
            f".tile[data-participant-id='{alan_id}'] .reaction-float:has-text('👍')",
            state="attached",
            timeout=WAIT_MS,
        )
        alan.page.wait_for_selector(".tile--local .reaction-float", state="attached")
        # ... and is gone a few seconds later.
        ada.page.wait_for_selector(
            f".tile[data-participant-id='{alan_id}'] .reaction-float",
            state="detached",
            timeout=WAIT_MS,
        )
        alan.page.keyboard.press("Escape")
        alan.page.wait_for_selector("#reactions-menu", state="hidden")
        assert dialogs == []


LINKIFY = """async (cases) => {
  const { textNodes } = await import('/static/js/chat.js');
  return cases.map((text) => textNodes(text).map((node) =>
    node.nodeName === 'A' ? ['a', node.getAttribute('href'), node.textContent]
                          : ['text', node.textContent]));
}"""


def test_only_web_addresses_become_links(chromium, product):
    cases = {
        "javascript:alert(1)": [["text", "javascript:alert(1)"]],
        "data:text/html,<b>x</b> ftp://a.org": [["text", "data:text/html,<b>x</b> ftp://a.org"]],
        "http:// nothing": [["text", "http:// nothing"]],
        "see https://a.org/wiki/Foo_(bar).": [
            ["text", "see "],
            ["a", "https://a.org/wiki/Foo_(bar)", "https://a.org/wiki/Foo_(bar)"],
            ["text", "."],
        ],
        "(HTTPS://A.ORG/Path)": [
            ["text", "("],
            ["a", "https://a.org/Path", "HTTPS://A.ORG/Path"],
            ["text", ")"],
        ],
        'https://a.org/"onmouseover="alert(1)': [
            ["a", "https://a.org/", "https://a.org/"],
            ["text", '"onmouseover="alert(1)'],
        ],
        "https://a.org<script>alert(1)</script>": [
            ["a", "https://a.org/", "https://a.org"],
            ["text", "<script>alert(1)</script>"],
        ],
    }
    with people_of(Person, chromium, product) as make:
        page = make("linkada", "Ada Lovelace").page
        page.goto("/rooms/")
        assert page.evaluate(LINKIFY, list(cases)) == list(cases.values())
