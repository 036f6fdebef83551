"""Who is talking, your own camera-off picture and the keyboard, in real Chromium: one person's
browser captures a voice-like tone, the others' silence (Chromium's fake audio capture from a
WAV file), and everyone sees the talker outlined, on their tile and in the people list.
"""

from __future__ import annotations

import math
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, Caller

pytestmark = pytest.mark.browser

RATE = 48_000


def _write_wav(path: Path, voiced: bool, seconds: float = 4.0) -> Path:
    """A voice-like signal (bursts of changing pitch, as syllables) or silence."""
    frames = bytearray()
    for n in range(int(RATE * seconds)):
        t = n / RATE
        sample = 0.0
        if voiced and (t % 0.4) < 0.3:  # 300 ms "syllables", 100 ms gaps
            pitch = 180 + 60 * math.sin(2 * math.pi * 0.7 * t)
            sample = 0.4 * math.sin(2 * math.pi * pitch * t) + 0.2 * math.sin(
                2 * math.pi * 2.5 * pitch * t
            )
        frames += struct.pack("<h", int(sample * 32767 * 0.8))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))
    return path


@pytest.fixture(scope="module")
def browsers(chromium, tmp_path_factory) -> Iterator[dict[str, object]]:
    """Two more Chromiums from the session's Playwright (one per process, as its sync API
    allows): one captures a voice, the other silence."""
    folder = tmp_path_factory.mktemp("audio")
    voice = _write_wav(folder / "voice.wav", voiced=True)
    silence = _write_wav(folder / "silence.wav", voiced=False)
    launched = {
        name: chromium.browser_type.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={audio}"],
        )
        for name, audio in (("talking", voice), ("quiet", silence))
    }
    yield launched
    for browser in launched.values():
        browser.close()


def test_the_talker_is_outlined_and_own_camera_off_shows_your_initial(browsers, product):
    made: list[Caller] = []
    try:
        ada = Caller(browsers["quiet"], product, "speakada", "Ada Lovelace")
        grace = Caller(browsers["talking"], product, "speakgrace", "Grace Hopper")
        alan = Caller(browsers["quiet"], product, "speakalan", "Alan Turing")
        made += [ada, grace, alan]
        room_url = ada.create_room("Talking room")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        for person in (ada, alan):
            person.wait_video_from(grace)
        grace_id, alan_id = grace.participant_id, alan.participant_id
        for person in made:
            person.page.click("#people-button")  # the people list, beside the call
            person.page.wait_for_selector("#people-panel.is-open #participants")

        # Everyone sees Grace talking: on her tile and in the people list; her own tile too.
        for person in (ada, alan):
            person.page.wait_for_selector(
                f".tile--speaking[data-participant-id='{grace_id}']", timeout=WAIT_MS
            )
            person.page.wait_for_selector(
                f"#participants li.is-speaking[data-participant-id='{grace_id}']", timeout=WAIT_MS
            )
        grace.page.wait_for_selector(".tile--local.tile--speaking", timeout=WAIT_MS)
        # Alan, in silence, is never outlined.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert (
                ada.page.locator(f".tile--speaking[data-participant-id='{alan_id}']").count() == 0
            )
            time.sleep(0.2)

        # Ada turns her camera off with the keyboard: her own tile shows her initial, the
        # others see "camera off" beside her name, and the button keeps its label.
        ada.page.locator("body").press("v")
        ada.page.wait_for_selector("#camera-button[aria-pressed=true]", timeout=WAIT_MS)
        assert ada.page.inner_text("#camera-button") == "Stop video"
        ada.page.wait_for_selector(".tile--local:not(.tile--video) .tile__avatar", timeout=WAIT_MS)
        ada_id = ada.participant_id
        grace.page.wait_for_selector(
            f"#participants li[data-participant-id='{ada_id}'] .badge--camera-off",
            timeout=WAIT_MS,
        )
        ada.page.locator("body").press("m")
        ada.page.wait_for_selector("#mic-button[aria-pressed=true]", timeout=WAIT_MS)
        grace.page.wait_for_selector(
            f"#participants li[data-participant-id='{ada_id}'] .badge--muted", timeout=WAIT_MS
        )
        ada.page.locator("body").press("v")
        ada.page.wait_for_selector(".tile--local.tile--video", timeout=WAIT_MS)
        assert not any(person.errors for person in made), [p.errors for p in made]
    finally:
        for person in made:
            person.close()


TILE_BOXES = """() => [...document.querySelectorAll('#stage .tile')].map((t) => {
  const r = t.getBoundingClientRect();
  return {id: t.dataset.participantId || 'you', width: r.width, height: r.height,
          main: t.classList.contains('tile--main')};
})"""


def test_grid_fills_the_screen_speaker_view_follows_the_talker_and_a_pin_holds(browsers, product):
    made: list[Caller] = []
    try:
        ada = Caller(browsers["quiet"], product, "layoutada", "Ada Lovelace")
        grace = Caller(browsers["talking"], product, "layoutgrace", "Grace Hopper")
        alan = Caller(browsers["quiet"], product, "layoutalan", "Alan Turing")
        made += [ada, grace, alan]
        ada.page.set_viewport_size({"width": 1280, "height": 800})
        room_url = ada.create_room("Layout room")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        ada.wait_video_from(grace)
        ada.wait_video_from(alan)
        grace_id, alan_id = grace.participant_id, alan.participant_id

        # The grid: three 16:9 tiles, larger than the old fixed 256 x 192, all on the first
        # screen below the room's header: nobody needs scrolling to.
        ada.page.wait_for_function(
            "document.querySelectorAll('#stage .tile').length === 3"
            " && document.getElementById('stage').dataset.layout === 'grid'"
        )
        time.sleep(0.6)  # the layout is applied on the next frame, the tiles move in 0.2 s
        boxes = ada.page.evaluate(TILE_BOXES)
        for box in boxes:
            assert box["width"] >= 270, boxes
            assert abs(box["width"] / box["height"] - 16 / 9) < 0.05, boxes
        bottom = ada.page.evaluate(
            "Math.max(...[...document.querySelectorAll('#stage .tile')]"
            ".map((t) => t.getBoundingClientRect().bottom))"
        )
        assert bottom <= 800, f"the call does not fit one screen: tiles end at {bottom} px"

        # The speaker view shows whoever talks large: Grace.
        ada.page.click("#layout-button")
        ada.page.wait_for_selector("#layout-button[aria-pressed=true]")
        ada.page.wait_for_selector(
            f".tile--main[data-participant-id='{grace_id}']", timeout=WAIT_MS
        )
        time.sleep(0.6)  # the tiles move there in 0.2 s
        main = next(b for b in ada.page.evaluate(TILE_BOXES) if b["main"])
        others = [b for b in ada.page.evaluate(TILE_BOXES) if not b["main"]]
        assert all(main["width"] > 2 * other["width"] for other in others)

        # Ada pins Alan: he stays large although Grace is the one talking; unpinned, Grace again.
        alan_tile = ada.page.locator(f".tile[data-participant-id='{alan_id}']")
        alan_tile.hover()
        alan_tile.locator(".tile__pin").click()
        ada.page.wait_for_selector(f".tile--main[data-participant-id='{alan_id}']")
        ada.page.wait_for_selector(
            f".tile[data-participant-id='{alan_id}'] .tile__pin[aria-pressed=true]"
        )
        time.sleep(2.5)  # longer than the active speaker's hold
        assert ada.page.locator(f".tile--main[data-participant-id='{alan_id}']").count() == 1
        alan_tile.locator(".tile__pin").click()
        ada.page.wait_for_selector(
            f".tile--main[data-participant-id='{grace_id}']", timeout=WAIT_MS
        )
        # Back to the grid: nobody is large.
        ada.page.click("#layout-button")
        ada.page.wait_for_selector("#stage[data-layout=grid]")
        assert ada.page.locator(".tile--main").count() == 0
        assert not any(person.errors for person in made), [p.errors for p in made]
    finally:
        for person in made:
            person.close()
