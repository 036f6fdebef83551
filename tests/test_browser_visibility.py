"""Hidden tiles cost no video: a page receives a publisher's video only while its tile is on
screen (the media server stops forwarding it: its VIDEO connection to the viewer's endpoint
goes away), keeps the sound, and gets the picture back as soon as the tile is scrolled into
view. Real Chromium and the product as `make run` serves it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from signaling.kurento import KurentoClient, ServerManager
from tests.browser import WAIT_MS, Caller, people_of, wait_until

pytestmark = pytest.mark.browser


def video_connections(url: str) -> int:
    """How many VIDEO connections the media server's elements make, over the Kurento Protocol."""

    async def count() -> int:
        client = KurentoClient(url, request_timeout=5, connect_timeout=5)
        total = 0
        try:
            for pipeline in await ServerManager(client).get_pipelines():
                for element in await client.invoke(pipeline, "getChildren") or []:
                    sinks = await client.invoke(element, "getSinkConnections", mediaType="VIDEO")
                    total += len(sinks or [])
        finally:
            await client.close()
        return total

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright owns this thread's loop
        return pool.submit(asyncio.run, count()).result(timeout=30)


def test_only_tiles_on_screen_receive_video(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada = make("seeada", "Ada Lovelace")
        ada.page.set_viewport_size({"width": 400, "height": 600})  # a phone
        room_url = ada.create_room("Scrolling room")
        # A window that ends just above the call: every tile is below the fold.
        stage_top = ada.page.evaluate(
            "document.getElementById('stage').getBoundingClientRect().top"
        )
        ada.page.set_viewport_size({"width": 400, "height": int(stage_top) - 20})
        grace, alan = make("seegrace", "Grace Hopper"), make("seealan", "Alan Turing")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        grace.wait_video_from(alan)
        alan.wait_video_from(grace)
        # Grace and Alan see everyone (4 video connections); Ada sees none of her 2 tiles.
        wait_until(
            "Ada's hidden tiles to stop their video",
            lambda: video_connections(product.media_url) == 4,
            timeout=20,
        )
        ada.mark_frames()
        time.sleep(2)
        assert ada.frames_since_mark() <= 5, "video still arrives for tiles nobody sees"

        # Ada scrolls to Grace's tile: its picture comes back at once.
        grace_id = grace.participant_id
        ada.page.locator(f".tile[data-participant-id='{grace_id}']").scroll_into_view_if_needed()
        ada.wait_video_from(grace)
        assert video_connections(product.media_url) >= 5
        ada.page.wait_for_selector(
            f".tile--video[data-participant-id='{grace_id}']", timeout=WAIT_MS
        )
