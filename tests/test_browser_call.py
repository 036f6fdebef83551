"""Calls as people make them: real headless Chromium with fake camera and microphone, daphne
serving the product, and the embedded media server in its own process, all on loopback.

Three people in one room each decode the two others' video (frames counted and a picture
sampled from the tile) and receive their audio; a parallel room stays apart; leaving with the
button and closing the tab both take a person's tile away; when everyone is gone the media
server holds no pipeline.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.browser import (
    INBOUND_AUDIO_PACKETS,
    MEDIA_WAIT_MS,
    WAIT_MS,
    Caller,
    media_server_pipelines,
    people_of,
    wait_until,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def callers(chromium, product):
    with people_of(Caller, chromium, product) as make:
        yield make


def test_three_people_see_and_hear_each_other_and_everything_is_released(callers, product):
    ada = callers("callada", "Ada Lovelace")
    room_url = ada.create_room("Call room")
    grace, alan = callers("callgrace", "Grace Hopper"), callers("callalan", "Alan Turing")
    for person in (grace, alan):
        person.open(room_url)
        person.wait_connected()
    trio = (ada, grace, alan)
    for person in trio:
        person.page.wait_for_selector(".tile--local", timeout=WAIT_MS)
        for other in trio:
            if other is not person:
                picture = person.wait_video_from(other)
                assert picture["width"] >= 320
    for person in trio:
        person.page.wait_for_function(
            f"({INBOUND_AUDIO_PACKETS})().then((c) => c.filter((n) => n > 20).length >= 2)",
            timeout=MEDIA_WAIT_MS,
        )
    assert len(media_server_pipelines(product.media_url)) == 1
    # Each remote tile shows its connection's quality, with the figures for hover and focus.
    for person in trio:
        mark = person.page.wait_for_selector(
            ".tile:not(.tile--local) .tile__quality[data-level=good]", timeout=WAIT_MS
        )
        figures = mark.get_attribute("aria-label") or ""
        assert figures.startswith("Connection: good.") and "kbps" in figures, figures
        assert int(figures.split(". ", 1)[1].split(" kbps")[0]) > 50, figures

    # Ada switches her camera off and mutes: the others see her initial and a muted badge.
    ada_id = ada.participant_id
    ada.page.click("#camera-button")
    ada.page.click("#mic-button")
    for person in (grace, alan):
        person.page.wait_for_selector(
            f".tile[data-participant-id='{ada_id}']:not(.tile--video) .tile__muted:visible",
            timeout=WAIT_MS,
        )
    ada.page.click("#camera-button")
    ada.page.click("#mic-button")
    grace.page.wait_for_selector(
        f".tile--video[data-participant-id='{ada_id}'] .tile__muted[hidden]",
        state="attached",
        timeout=WAIT_MS,
    )

    # A parallel room: its caller sees nobody from the first room, and nobody there sees him.
    edsger = callers("calledsger", "Edsger Dijkstra")
    edsger.create_room("Other room")
    edsger.page.wait_for_selector(".tile--local", timeout=WAIT_MS)
    # His room gets a pipeline of its own once he publishes (a moment after he is connected).
    wait_until("a second pipeline", lambda: len(media_server_pipelines(product.media_url)) == 2)
    time.sleep(1)
    assert edsger.remote_tiles() == 0
    assert ada.remote_tiles() == 2

    # Leaving with the button takes Alan's tile away from the others.
    alan_id = alan.participant_id
    alan.page.click("#leave-button")
    for person in (ada, grace):
        person.wait_tile_gone(alan_id)
    # Closing the tab without leaving does too.
    grace_id = grace.participant_id
    grace.page.close()
    ada.wait_tile_gone(grace_id)
    assert ada.remote_tiles() == 0

    ada.page.click("#leave-button")
    edsger.page.click("#leave-button")
    deadline = time.monotonic() + 10
    while media_server_pipelines(product.media_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert media_server_pipelines(product.media_url) == []


BLOCK_CAMERA = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
"""


@pytest.fixture
def own_product(tmp_path):
    """A product with its own media server, which this test may stop."""
    from tests.live import ProductServer

    server = ProductServer(tmp_path).start()
    yield server
    server.stop()


def test_blocked_camera_and_a_media_server_that_is_down_are_explained(chromium, own_product):
    made = []
    try:
        ada = Caller(chromium, own_product, "blockada", "Ada Lovelace")
        grace = Caller(chromium, own_product, "blockgrace", "Grace Hopper")
        made += [ada, grace]
        room_url = ada.create_room("Careful room")
        ada.page.wait_for_selector(".tile--local", timeout=WAIT_MS)

        # Grace refuses the camera: she is told so, and still sees and hears Ada.
        grace.context.add_init_script(BLOCK_CAMERA)
        grace.open(room_url)
        grace.wait_connected()
        grace.page.wait_for_selector("#room-notice:has-text('are blocked')", timeout=WAIT_MS)
        grace.wait_video_from(ada)
        assert grace.page.locator(".tile--local").count() == 0
        # Ada sees Grace's tile all the same: her initial, no picture.
        avatar = ada.page.wait_for_selector(
            f".tile[data-participant-id='{grace.participant_id}']:not(.tile--video)",
            timeout=WAIT_MS,
        )
        assert avatar.inner_text().startswith("G")
        assert grace.page.is_hidden("#mic-button") and grace.page.is_hidden("#camera-button")

        # The media server goes away: a newcomer is told, and the room itself keeps working.
        assert own_product.media_process is not None
        own_product.media_process.terminate()
        own_product.media_process.wait(timeout=10)
        alan = Caller(chromium, own_product, "blockalan", "Alan Turing")
        made.append(alan)
        alan.open(room_url)
        alan.wait_connected()
        alan.page.wait_for_selector(
            "#room-notice:has-text('media server cannot be reached')", timeout=WAIT_MS
        )
        ada.wait_sees("Alan Turing")
        assert not any(person.errors for person in made), [p.errors for p in made]
    finally:
        for person in made:
            person.close()


@pytest.mark.parametrize("code", ["not_publishing", "conflict"])
def test_a_late_refusal_of_an_abandoned_attempt_leaves_the_newer_connection_alone(
    callers, product, code
):
    """A connection is negotiated again while its previous attempt still waits for its answer
    (the publisher published again, a stall timer fired); when the old attempt's refusal comes
    last, it must not touch the newer connection: neither drop the tile's link
    (`not_publishing`) nor start yet another negotiation after a backoff (`conflict`). This is
    what left a picture missing for 12 s after a network outage in one full-suite run."""
    ada = callers(f"race{code}ada", "Ada Lovelace")
    room_url = ada.create_room("Race room")
    grace = callers(f"race{code}grace", "Grace Hopper")
    held: list[dict] = []  # Grace's first subscribe: never reaches the server
    sockets: list = []

    def route(ws) -> None:
        server = ws.connect_to_server()
        sockets.append(ws)

        def from_page(message: str | bytes) -> None:
            data = json.loads(message) if isinstance(message, str) else {}
            if data.get("type") == "subscribe" and not held:
                held.append(data)
                return
            server.send(message)

        ws.on_message(from_page)

    grace.page.route_web_socket(re.compile(r"/ws/"), route)
    grace.open(room_url)
    grace.wait_connected()
    wait_until("Grace's first subscribe is sent", lambda: grace.page.evaluate("1") and held)
    # Ada "publishes again": Grace negotiates afresh while her first attempt waits.
    announce = {"type": "participant_published", "participant_id": int(ada.participant_id)}
    sockets[0].send(json.dumps({**announce, "source": "camera", "title": ""}))
    grace.wait_video_from(ada)
    made = grace.connections_made()

    refusal = {"type": "error", "id": held[0]["id"], "code": code, "message": "refused"}
    sockets[0].send(json.dumps(refusal))
    grace.page.wait_for_timeout(3_000)  # past the first retry's backoff (1 s)
    grace.wait_video_from(ada)
    assert grace.connections_made() == made, "the working connection was negotiated again"
