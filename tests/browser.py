"""Headless Chromium for browser tests: Debian's package driven by Playwright.

Loopback only: background networking is off (this machine's network is closed), and the flags
a WebRTC test needs (fake devices, loopback ICE without mDNS) are on from the start.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator
from typing import TypeVar

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


PASSWORD = "a sturdy pass phrase 42"
WAIT_MS = 10_000
P = TypeVar("P", bound="Person")


class Person:
    """One person in their own browser session (cookies are not shared between people)."""

    def __init__(self, chromium, product, username: str, display_name: str) -> None:
        self.context = chromium.new_context(base_url=product.url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.name = display_name
        self.sign_up(username, display_name)

    def sign_up(self, username: str, display_name: str) -> None:
        page = self.page
        page.goto("/accounts/signup/")
        page.fill("input[name=username]", username)
        page.fill("input[name=display_name]", display_name)
        page.fill("input[name=password1]", PASSWORD)
        page.fill("input[name=password2]", PASSWORD)
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/$"))

    def create_room(self, name: str, *, private: bool = False) -> str:
        page = self.page
        page.goto("/rooms/new/")
        page.fill("input[name=name]", name)
        page.check(f"input[name=visibility][value={'private' if private else 'public'}]")
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/[-a-z0-9]+/$"))
        self.join()
        self.wait_connected()
        return page.url

    def open(self, url: str) -> None:
        """Open a room page and click Join on its pre-join screen (when it has one)."""
        self.page.goto(url)
        if self.page.locator("#join-button").count():
            self.join()

    def join(self) -> None:
        self.page.click("#join-button:not([disabled])", timeout=WAIT_MS)

    def wait_connected(self) -> None:
        self.page.wait_for_selector("#room-status[data-state=connected]", timeout=WAIT_MS)

    def names_in_room(self) -> list[str]:
        return self.page.locator("#participants li").all_inner_texts()

    def wait_sees(self, name: str) -> None:
        self.page.wait_for_selector(f"#participants li:has-text('{name}')", timeout=WAIT_MS)

    def wait_not_sees(self, name: str) -> None:
        self.page.wait_for_selector(
            f"#participants li:has-text('{name}')", state="detached", timeout=WAIT_MS
        )

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def people_of(kind: type[P], chromium, product) -> Iterator[Callable[[str, str], P]]:
    """Make people (`kind(chromium, product, username, display_name)`) for one test; at its end
    close their browsers and fail if any page had a JavaScript error."""
    made: list[P] = []

    def make(username: str, display_name: str) -> P:
        made.append(kind(chromium, product, username, display_name))
        return made[-1]

    try:
        yield make
    finally:
        errors = {p.name: p.errors for p in made if p.errors}
        for person in made:
            person.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"
