"""Recording a three-person meeting in real Chromium, end to end: the owner starts it from the
room's details, everyone sees the badge, the owner stops it, the product composes one file, and
the owner downloads it from the room's recordings page; a participant cannot.

Ada's browser captures a clapperboard from files (Chromium's fake capture): the picture flashes
white and a beep sounds at the same instants, every second. The others capture a dark picture
and silence. In the downloaded file, the flashes and the beeps must still coincide.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, Caller, people_of

pytestmark = pytest.mark.browser

FPS = 30
RATE = 48_000
SECONDS = 2  # the files loop; a whole number of flash periods keeps them aligned
WIDTH, HEIGHT = 320, 240


def _write_y4m(path: Path, *, flashes: bool) -> Path:
    """Y4M video: dark, turning white for 100 ms at every whole second (if `flashes`)."""
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        chroma = bytes([128]) * (WIDTH * HEIGHT // 2)
        for index in range(SECONDS * FPS):
            white = flashes and (index % FPS) < FPS // 10
            out.write(b"FRAME\n" + bytes([235 if white else 24]) * (WIDTH * HEIGHT) + chroma)
    return path


def _write_wav(path: Path, *, beeps: bool) -> Path:
    """WAV audio: a 1 kHz beep for 100 ms at every whole second (if `beeps`), else silence."""
    samples = bytearray()
    for n in range(SECONDS * RATE):
        loud = beeps and (n % RATE) < RATE // 10
        value = 0.5 * math.sin(2 * math.pi * 1000 * n / RATE) if loud else 0.0
        samples += struct.pack("<h", int(value * 32767))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(samples))
    return path


@pytest.fixture(scope="module")
def browsers(chromium, tmp_path_factory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("clapperboard")
    sources = {
        "clap": (
            _write_y4m(folder / "clap.y4m", flashes=True),
            _write_wav(folder / "clap.wav", beeps=True),
        ),
        "plain": (
            _write_y4m(folder / "dark.y4m", flashes=False),
            _write_wav(folder / "quiet.wav", beeps=False),
        ),
    }
    launched = {
        name: chromium.browser_type.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                *CHROMIUM_ARGS,
                f"--use-file-for-fake-video-capture={video}",
                f"--use-file-for-fake-audio-capture={audio}",
            ],
        )
        for name, (video, audio) in sources.items()
    }
    yield launched
    for browser in launched.values():
        browser.close()


def _marks(path: Path) -> tuple[list[float], list[float]]:
    """When the picture brightens (Ada's tile turning white) and when a beep starts."""
    with av.open(str(path)) as container:
        shades = [
            (float(frame.time), float(frame.to_ndarray(format="gray").mean()))
            for frame in container.decode(video=0)
        ]
    low, high = min(s for _, s in shades), max(s for _, s in shades)
    middle = (low + high) / 2
    flashes = [
        at for (_, before), (at, shade) in itertools.pairwise(shades) if before < middle <= shade
    ]
    with av.open(str(path)) as container:
        levels = [
            (
                float(frame.time),
                float(numpy.sqrt(numpy.mean(frame.to_ndarray().astype(float) ** 2))),
            )
            for frame in container.decode(audio=0)
        ]
    loudest = max(level for _, level in levels)
    beeps = [
        at
        for (_, before), (at, level) in itertools.pairwise(levels)
        if before < loudest / 4 <= level
    ]
    return flashes, beeps


def test_the_owner_records_a_meeting_and_downloads_one_file_in_sync(browsers, product) -> None:
    with (
        people_of(Caller, browsers["clap"], product) as clap,
        people_of(Caller, browsers["plain"], product) as plain,
    ):
        ada = clap("recada", "Ada Lovelace")
        grace, alan = plain("recgrace", "Grace Hopper"), plain("recalan", "Alan Turing")
        room_url = ada.create_room("Recorded review")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        for person in (grace, alan):
            person.wait_video_from(ada)
        # Only moderators see the control; Grace does not.
        grace.page.click("#details-button")
        assert grace.page.is_hidden("#record-button")

        ada.page.click("#details-button")
        ada.page.click("#record-button")
        started = time.monotonic()
        for person in (ada, grace, alan):
            person.page.wait_for_selector("#recording-indicator", state="visible", timeout=WAIT_MS)
        assert ada.page.inner_text("#record-button") == "Stop recording"
        ada.page.wait_for_timeout(8_000)

        ada.page.once("dialog", lambda dialog: dialog.accept())
        ada.page.click("#record-button")
        grace.page.wait_for_selector("#recording-indicator", state="hidden", timeout=WAIT_MS)
        recorded_for = time.monotonic() - started

        # Grace cannot reach the recordings; Ada finds hers ready once it is composed.
        slug = room_url.rstrip("/").rsplit("/", 1)[-1]
        answer = grace.page.goto(f"/rooms/{slug}/recordings/")
        assert answer is not None and answer.status == 404
        page = ada.context.new_page()
        page.goto(f"/rooms/{slug}/recordings/")
        deadline = time.monotonic() + 90
        while not page.locator("#recordings a[download]").count():
            assert time.monotonic() < deadline, page.inner_text("#main")
            page.wait_for_timeout(1_000)
            page.reload()
        with page.expect_download() as download:
            page.click("#recordings a[download]")
        assert re.fullmatch(r"recorded-review-\d{8}-\d{4}\.mp4", download.value.suggested_filename)
        path = Path(download.value.path())

        with av.open(str(path)) as container:
            kinds = {s.type: s.codec_context.name for s in container.streams}
            duration = container.duration / 1_000_000
        assert kinds == {"video": "h264", "audio": "aac"}
        assert abs(duration - recorded_for) < 0.15 * recorded_for, (duration, recorded_for)
        flashes, beeps = _marks(path)
        assert len(flashes) >= 5 and len(beeps) >= 5, (flashes, beeps)
        offsets = [min(beeps, key=lambda b: abs(b - f)) - f for f in flashes]
        assert all(abs(offset) < 0.1 for offset in offsets), offsets
        page.close()
