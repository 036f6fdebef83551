"""The pre-join camera and connection test as people use it: real headless Chromium with a fake
camera, daphne serving the product, and the embedded media server in its own process, all on
loopback.

On the pre-join screen the person starts the test from the keyboard: the picture comes back
through the media server (the test's video decodes more and more frames), a round-trip time and
the route (direct here: no TURN) are shown, the test ends by itself and the media server holds
no pipeline. A second test stopped with the button is released too; a third is cut short by
Join, which still joins, and the test's pipeline goes while the room's stays.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import (
    MEDIA_WAIT_MS,
    WAIT_MS,
    Person,
    media_server_pipelines,
    people_of,
    wait_until,
)

pytestmark = pytest.mark.browser

# Frames the test's video element has decoded, or None while it shows nothing.
RETURNED_FRAMES = """() => {
  const video = document.querySelector('#connection-test video');
  if (!video || video.hidden || !video.videoWidth) return null;
  return video.getVideoPlaybackQuality().totalVideoFrames;
}"""


@pytest.fixture
def people(chromium, product):
    with people_of(Person, chromium, product) as make:
        yield make


def wait_returned_picture(person: Person) -> int:
    """Wait until the returned picture decodes frames, and more of them a moment later."""
    first = wait_until(
        "the returned picture decodes", lambda: person.page.evaluate(RETURNED_FRAMES), timeout=20
    )
    return wait_until(
        "the returned picture keeps decoding",
        lambda: (frames := person.page.evaluate(RETURNED_FRAMES) or 0) >= first + 10 and frames,
        timeout=10,
    )


def test_the_camera_comes_back_with_a_round_trip_time_and_everything_is_released(people, product):
    ada = people("testada", "Ada Lovelace")
    page = ada.page
    ada.new_room("Test room")
    button = page.wait_for_selector("#connection-test-button:visible", timeout=WAIT_MS)
    assert button.inner_text() == "Test camera and connection"
    assert media_server_pipelines(product.media_url) == []  # nothing held until asked

    # Keyboard: the button takes Enter.
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#connection-test[data-state=running]", timeout=WAIT_MS)
    assert button.inner_text() == "Stop test"
    wait_returned_picture(ada)
    assert len(media_server_pipelines(product.media_url)) == 1

    # It ends by itself once the picture has come back for a while, and says how it went.
    page.wait_for_selector("#connection-test[data-state=passed]", timeout=MEDIA_WAIT_MS)
    status = page.locator("#connection-test [role=status]").inner_text()
    assert "picture came back" in status, status
    assert re.search(r"Round trip (\d+ ms|under 1 ms); connection direct\.", status), status
    assert page.get_attribute("#connection-test", "data-route") == "direct"
    assert float(page.get_attribute("#connection-test", "data-rtt-ms") or "-1") >= 0
    facts = page.locator("#connection-test li").all_inner_texts()
    assert facts[0] == "Picture back: yes" and facts[2] == "Connection: direct", facts
    assert button.inner_text() == "Test camera and connection"
    wait_until(
        "the test's pipeline is released", lambda: not media_server_pipelines(product.media_url)
    )

    # Stopped with the button: released as well.
    button.click()
    wait_returned_picture(ada)
    button.click()
    page.wait_for_selector("#connection-test[data-state=stopped]", timeout=WAIT_MS)
    assert page.locator("#connection-test [role=status]").inner_text() == "Test stopped."
    wait_until(
        "the stopped test's pipeline is released",
        lambda: not media_server_pipelines(product.media_url),
    )

    # Join while a test runs: the test stops, the person joins, and only the room's pipeline
    # stays on the media server.
    button.click()
    wait_returned_picture(ada)
    (test_pipeline,) = media_server_pipelines(product.media_url)
    ada.join()
    ada.wait_connected()
    assert page.get_attribute("#connection-test", "data-state") == "stopped"
    assert page.is_hidden("#connection-test")
    page.wait_for_selector(".tile--local", timeout=WAIT_MS)
    wait_until(
        "the room's pipeline is there and the test's is gone",
        lambda: (
            (found := media_server_pipelines(product.media_url))
            and test_pipeline not in found
            and len(found) == 1
        ),
    )
    page.click("#leave-button")
    wait_until(
        "the room's pipeline is released", lambda: not media_server_pipelines(product.media_url)
    )
