"""Playing a video into a meeting as an owner does it, in real Chromium through the product's
pages: she uploads a WebM on the room's recordings page, joins, picks it in the room's details
and plays it for everyone; a tile with its title decodes and moves on her page and on a
participant's, who cannot play anything himself; she stops it and the tile goes for everyone,
with nothing left on the media server but the cameras."""

from __future__ import annotations

import pytest

from tests.browser import WAIT_MS, Caller, media_server_objects, people_of, wait_until
from tests.mediaserver.test_player import make_media

pytestmark = pytest.mark.browser

PLAYED = """(id) => {
  const tile = document.querySelector(`.tile--playback[data-playback-of="${id}"]`);
  const video = tile?.querySelector('video');
  if (!video || !video.videoWidth) return null;
  return {width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames,
          name: tile.textContent};
}"""


def elements(url: str) -> int:
    return sum(len(children) for children in media_server_objects(url).values())


def wait_played(viewer: Caller, owner: Caller) -> dict:
    who = owner.participant_id
    first = wait_until(
        f"the video on {viewer.name}'s page", lambda: viewer.page.evaluate(PLAYED, who), timeout=20
    )
    return wait_until(
        f"the video to move on {viewer.name}'s page",
        lambda: (
            (p := viewer.page.evaluate(PLAYED, who)) and p["frames"] >= first["frames"] + 10 and p
        ),
        timeout=20,
    )


def test_the_owner_uploads_a_video_and_plays_it_for_everyone(chromium, product, tmp_path):
    clip = make_media(tmp_path / "trailer.webm", seconds=60.0, size=(640, 360))
    with people_of(Caller, chromium, product) as make:
        ada, grace = make("playada", "Ada Lovelace"), make("playgrace", "Grace Hopper")
        room_url = ada.new_room("Film club")
        slug = room_url.rstrip("/").rsplit("/", 1)[-1]

        # Upload on the recordings page.
        ada.page.goto(f"/rooms/{slug}/recordings/")
        ada.page.fill("input[name=title]", "Trailer")
        ada.page.set_input_files("input[name=file]", str(clip))
        ada.page.click(".upload-form button[type=submit]")
        ada.page.wait_for_selector("#videos >> text=Trailer", timeout=WAIT_MS)

        ada.open(room_url)
        ada.wait_connected()
        grace.open(room_url)
        grace.wait_connected()
        grace.wait_video_from(ada)
        cameras = 2 + 2
        wait_until("both cameras connected", lambda: elements(product.media_url) == cameras)

        # Grace has nothing to play with.
        grace.page.click("#details-button")
        assert grace.page.locator("#play-tools").count() == 0

        ada.page.click("#details-button")
        ada.page.select_option("#play-select", label="Trailer (1:00)")
        ada.page.click("#play-button")
        for viewer in (ada, grace):
            picture = wait_played(viewer, ada)
            assert picture["width"] == 640 and "Trailer" in picture["name"]
        grace.page.wait_for_selector(
            "#room-notice >> text=Ada Lovelace is playing a video", timeout=WAIT_MS
        )
        stop = ada.page.locator("#play-stop-button")
        assert stop.is_visible() and "Trailer" in stop.inner_text()

        stop.click()
        for viewer in (ada, grace):
            viewer.page.wait_for_selector(".tile--playback", state="detached", timeout=WAIT_MS)
        assert ada.page.locator("#play-stop-button").is_hidden()
        wait_until("only the cameras left", lambda: elements(product.media_url) == cameras)
        assert not ada.errors and not grace.errors, (ada.errors, grace.errors)
