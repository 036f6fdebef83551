"""Hidden tiles cost no video: a page receives a publisher's video only while its tile is on
screen (the media server stops forwarding it: its VIDEO connection to the viewer's endpoint
goes away), keeps the sound, and gets the picture back as soon as its page of tiles shows.
Real Chromium and the product as `make run` serves it.
"""

from __future__ import annotations

import time

import pytest

from tests.browser import WAIT_MS, Caller, people_of, video_connections, wait_until

pytestmark = pytest.mark.browser


FRAMES = (
    "(id) => document.querySelector(`.tile[data-participant-id='${id}'] video`)"
    "?.getVideoPlaybackQuality().totalVideoFrames ?? 0"
)


def frames_flow(caller: Caller, participant_id: str, seconds: float = 1.5) -> int:
    """How many frames the caller's tile of that participant decodes in a while."""
    before = caller.page.evaluate(FRAMES, participant_id)
    time.sleep(seconds)
    return caller.page.evaluate(FRAMES, participant_id) - before


def test_video_follows_the_page_of_tiles_on_screen(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada = make("seeada", "Ada Lovelace")
        room_url = ada.create_room("Paged room")
        grace, alan = make("seegrace", "Grace Hopper"), make("seealan", "Alan Turing")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        grace.wait_video_from(alan)
        alan.wait_video_from(grace)
        ada.wait_video_from(grace)
        ada.wait_video_from(alan)
        assert video_connections(product.media_url) == 6  # everyone sees everyone

        # Switching a tile's video is a request the page waits on: its reply must settle it (a
        # missed reply showed only as a warning when the request timed out, 10-20 s later).
        warnings: list[str] = []
        ada.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
        first_switch = time.monotonic()
        # A window so small that one page holds two tiles: Ada's own and one other.
        ada.page.set_viewport_size({"width": 400, "height": 260})
        ada.page.wait_for_function(
            "document.getElementById('stage').dataset.pages === '2'", timeout=WAIT_MS
        )
        ada.page.wait_for_selector("#pager", state="visible")
        assert ada.page.inner_text("#pager-where").strip() == "1 / 2"
        on_page = ada.page.eval_on_selector(
            "#stage .tile:not(.tile--local):not(.tile--off-page)", "(t) => t.dataset.participantId"
        )
        off_page = grace.participant_id if on_page == alan.participant_id else alan.participant_id
        # The tile on the next page stops receiving video: the media server stops sending it.
        wait_until(
            "the tile off the page to stop its video",
            lambda: video_connections(product.media_url) == 5,
            timeout=20,
        )
        assert frames_flow(ada, off_page) <= 2, "video still arrives for a tile nobody sees"
        assert frames_flow(ada, on_page) >= 10

        # The next page: its tile gets its picture back at once, the one left behind stops.
        ada.page.click("#pager-next")
        ada.page.wait_for_selector("#pager-where:text-is('2 / 2')", timeout=WAIT_MS)
        assert ada.page.is_disabled("#pager-next") and not ada.page.is_disabled("#pager-previous")
        ada.page.wait_for_selector(
            f".tile--video[data-participant-id='{off_page}']:not(.tile--off-page)",
            timeout=WAIT_MS,
        )
        wait_until("the new page's video to flow", lambda: frames_flow(ada, off_page, 1) >= 5)
        wait_until(
            "the previous page's video to stop",
            lambda: frames_flow(ada, on_page, 1) <= 1,
            timeout=20,
        )
        assert video_connections(product.media_url) == 5
        # A big window again: one page, everyone's picture.
        ada.page.set_viewport_size({"width": 1280, "height": 800})
        ada.page.wait_for_selector("#pager", state="hidden")
        wait_until(
            "every tile's video to come back",
            lambda: video_connections(product.media_url) == 6,
            timeout=20,
        )
        # Past any request's timeout (the page's own clock: console messages arrive meanwhile).
        ada.page.wait_for_timeout(max(0.0, first_switch + 25 - time.monotonic()) * 1000)
        assert not [text for text in warnings if "switch a video" in text], warnings
