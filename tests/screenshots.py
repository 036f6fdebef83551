"""Screenshots of the call for docs/ (the README shows one): `python -m tests.screenshots`.

Runs the product as `make run` would (tests.live.ProductServer), fills a room with three people
in Chromium (fake cameras) and six guests without a camera (tests.browser.Guest), and saves what
the first person sees at laptop and phone sizes, in the grid, the speaker view and while
presenting a screen with the chat open, and the pre-join screen, into docs/screenshots/.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from tests.browser import CHROMIUM, CHROMIUM_ARGS, Caller, Guest, people_of
from tests.live import ROOT, ProductServer

OUT = ROOT / "docs" / "screenshots"
SIZES = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
CALLERS = [("ada", "Ada Lovelace"), ("grace", "Grace Hopper"), ("alan", "Alan Turing")]
GUESTS = [
    "Katherine Johnson",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Hedy Lamarr",
    "Tim Berners-Lee",
]


SUFFIX = {"value": ""}


def shoot(page, name: str) -> Path:
    time.sleep(1.5)  # the layout's transitions settle, pictures arrive
    path = OUT / f"{name}{SUFFIX['value']}.png"
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=len(GUESTS), help="people without a camera")
    parser.add_argument("--locale", default=None, help="the browsers' language, e.g. ko-KR")
    args = parser.parse_args()
    suffix = f"-{args.locale.split('-')[0]}" if args.locale else ""
    Caller.locale = Guest.locale = args.locale
    SUFFIX["value"] = suffix
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        product = ProductServer(Path(tmp)).start()
        stack.callback(product.stop)
        playwright = stack.enter_context(sync_playwright())
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        stack.callback(chromium.close)
        make = stack.enter_context(people_of(Caller, chromium, product))
        ada, *others = [make(f"shot{user}", name) for user, name in CALLERS]
        ada.page.set_viewport_size(SIZES["laptop"])
        room_url = ada.new_room("Weekly planning")
        shoot(ada.page, "prejoin-laptop")
        ada.join()
        ada.wait_connected()
        for caller in others:
            caller.open(room_url)
            caller.wait_connected()
        for index, name in enumerate(GUESTS[: args.guests]):
            guest = Guest(chromium, product, f"shotguest{index}", name)
            stack.callback(guest.close)
            guest.enter(room_url)
        for caller in others:
            ada.wait_video_from(caller)
        shoot(ada.page, "call-laptop")
        ada.page.click("#layout-button")
        shoot(ada.page, "speaker-laptop")
        ada.page.click("#people-button")
        shoot(ada.page, "people-laptop")
        ada.page.click("#people-button")
        ada.page.click("#layout-button")
        ada.page.click("#share-button")  # Chromium's fake screen
        ada.page.wait_for_selector(".tile--own-screen.tile--video")
        ada.page.click("#chat-button")
        ada.page.fill("#chat-input", "Slides are up: https://example.org/deck")
        ada.page.keyboard.press("Enter")
        shoot(ada.page, "presenting-laptop")
        ada.page.click("#chat-button")
        ada.page.click("#share-button")
        ada.page.set_viewport_size(SIZES["phone"])
        shoot(ada.page, "call-phone")
        ada.page.set_viewport_size({"width": 844, "height": 390})
        shoot(ada.page, "call-phone-landscape")


if __name__ == "__main__":
    main()
