"""Screen sharing as people do it, in real Chromium through the product's pages: Chromium's fake
screen capture (the fake-UI flag picks the screen) is published from one browser and decoded on
two others, shown large; it ends for everyone from the button, from the browser's own "Stop
sharing", and when the sharer leaves; a late joiner gets it; nothing is left on the media
server; a room for the owner's screen only has no share button for the others."""

from __future__ import annotations

import re

import pytest

from tests.browser import WAIT_MS, Caller, media_server_objects, people_of, wait_until

pytestmark = pytest.mark.browser

SCREEN = """(id) => {
  const tile = document.querySelector(`.tile--screen[data-screen-of="${id}"]`);
  const video = tile?.querySelector('video');
  if (!video || !video.videoWidth) return null;
  return {width: video.videoWidth, height: video.videoHeight,
          frames: video.getVideoPlaybackQuality().totalVideoFrames,
          main: tile.classList.contains('tile--main')};
}"""


def elements(url: str) -> int:
    return sum(len(children) for children in media_server_objects(url).values())


def wait_screen_from(viewer: Caller, sharer: Caller) -> dict:
    """The sharer's screen decodes on the viewer's page, moving, and shown large."""
    who = sharer.participant_id
    first = wait_until(
        f"{sharer.name}'s screen on {viewer.name}'s page",
        lambda: viewer.page.evaluate(SCREEN, who),
        timeout=20,
    )
    return wait_until(
        f"{sharer.name}'s screen to move on {viewer.name}'s page",
        lambda: (
            (p := viewer.page.evaluate(SCREEN, who)) and p["frames"] >= first["frames"] + 5 and p
        ),
        timeout=20,
    )


def wait_no_screen(viewer: Caller, sharer_id: str) -> None:
    viewer.page.wait_for_selector(
        f".tile--screen[data-screen-of='{sharer_id}']",
        state="detached",
        timeout=WAIT_MS,
    )


def test_share_a_screen_with_two_others_and_stop_it_every_way(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace, alan = (
            make(f"share{n}", name)
            for n, name in (
                ("ada", "Ada Lovelace"),
                ("grace", "Grace Hopper"),
                ("alan", "Alan Turing"),
            )
        )
        room_url = ada.create_room("Slides")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        ada.wait_video_from(grace)
        cameras = 3 + 6  # three publishing endpoints, each received by the two others
        wait_until("every camera connected", lambda: elements(product.media_url) == cameras)

        # Ada shares: both others see her screen large, at full size, decoded and moving;
        # the people list says she presents.
        ada.page.click("#share-button")
        ada.page.wait_for_selector("#share-button[aria-pressed=true]", timeout=WAIT_MS)
        assert ada.page.inner_text("#share-button").strip() == "Share screen"  # the label stays
        for viewer in (grace, alan):
            picture = wait_screen_from(viewer, ada)
            # Encoded for detail: the capture's full size (cameras here send 640x480).
            assert picture["width"] >= 1280 and picture["height"] >= 720, picture
            assert picture["main"], "the shared screen is not the large tile"
            assert viewer.page.get_attribute("#stage", "data-layout") == "presentation"
            viewer.page.wait_for_selector(
                f"#participants li[data-participant-id='{ada.participant_id}'] .badge--sharing",
                state="attached",
            )
        assert ada.page.locator(".tile--own-screen").count() == 1
        assert elements(product.media_url) == cameras + 1 + 2  # her screen and two viewers

        # She stops from the button: gone for everyone, and on the media server.
        ada.page.click("#share-button")
        ada.page.wait_for_selector("#share-button[aria-pressed=false]")
        for viewer in (grace, alan):
            wait_no_screen(viewer, ada.participant_id)
            assert viewer.page.get_attribute("#stage", "data-layout") == "grid"
        wait_until("the share's endpoints released", lambda: elements(product.media_url) == cameras)

        # Alan shares, and stops from the browser's own "Stop sharing" (the track ends).
        alan.page.click("#share-button")
        for viewer in (ada, grace):
            wait_screen_from(viewer, alan)
        alan.page.evaluate(
            "() => document.querySelector('.tile--own-screen video').srcObject"
            ".getVideoTracks()[0].dispatchEvent(new Event('ended'))"
        )
        alan.page.wait_for_selector("#share-button[aria-pressed=false]", timeout=WAIT_MS)
        for viewer in (ada, grace):
            wait_no_screen(viewer, alan.participant_id)
        wait_until("Alan's share released", lambda: elements(product.media_url) == cameras)

        # Grace shares and leaves: her share ends with her.
        grace.page.click("#share-button")
        for viewer in (ada, alan):
            wait_screen_from(viewer, grace)
        grace_id = grace.participant_id
        grace.page.click("#leave-button")
        grace.page.wait_for_url(re.compile(r"/rooms/$"))
        for viewer in (ada, alan):
            wait_no_screen(viewer, grace_id)
        wait_until(
            "Grace's camera and share released",
            lambda: elements(product.media_url) == 2 + 2,  # two cameras, each seen by the other
        )


def test_a_late_joiner_sees_the_share_and_a_room_can_keep_sharing_to_its_owner(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace = make("ownshareada", "Ada Lovelace"), make("ownsharegrace", "Grace Hopper")
        room_url = ada.create_room("Owner presents")
        ada.page.click("#share-button")
        ada.page.wait_for_selector("#share-button[aria-pressed=true]", timeout=WAIT_MS)
        # Grace comes in while Ada presents: the screen is there for her at once.
        grace.open(room_url)
        grace.wait_connected()
        wait_screen_from(grace, ada)
        assert grace.page.is_visible("#share-button")
        # The owner changes the room: only she may share. Grace's button goes, live.
        editor = ada.context.new_page()
        editor.goto(room_url + "edit/")
        editor.check("input[name=screen_sharing][value=owner]")
        # The save must have landed before the page goes: closing it during the POST's navigation
        # could cancel the request (the setting never changes) or hang the close itself.
        with editor.expect_navigation(timeout=WAIT_MS):
            editor.click("#main button[type=submit]")
        editor.close()
        grace.page.wait_for_selector("#share-button", state="hidden", timeout=WAIT_MS)
        ada.page.wait_for_selector("#share-button", state="visible")
