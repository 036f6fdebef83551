"""Recording a three-person meeting in real Chromium, end to end: the owner starts it from the
room's details, everyone sees the badge, the owner stops it, the product composes one file, and
the owner downloads it from the room's recordings page; a participant cannot.

Ada's browser captures a clapperboard from files (Chromium's fake capture): the picture flashes
white and a beep sounds at the same instants, every second. The others capture a dark picture
and silence. In the downloaded file, the flashes and the beeps must still coincide.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import statistics
import tempfile
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
# Chromium's fake camera repeats a frame each time its file loops, so a 2-second clapperboard
# drifted a frame (33 ms) every 2 s against its sound, and the offset measured in the 8 s that
# Ada's browser records and in the meeting's recording differed by where the two windows fell
# (0.104 in one run). A file longer than the meeting drifts at most once in it.
SECONDS = 30  # the files loop; a whole number of flash periods keeps them aligned
WIDTH, HEIGHT = 160, 120  # small: 30 s of raw pictures


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
    n = numpy.arange(SECONDS * RATE)
    loud = (n % RATE) < RATE // 10 if beeps else numpy.zeros(n.shape, dtype=bool)
    values = numpy.where(loud, 0.5 * numpy.sin(2 * math.pi * 1000 * n / RATE), 0.0)
    samples = (values * 32767).astype("<i2").tobytes()
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


# Chromium's fake capture starts reading each file when its device opens; the page opens the
# microphone and the camera separately (each chosen on its own), so the two files would start
# apart and the clapperboard would be out of sync before it reached the product. Here both
# tracks come from one capture, opened once, so that they start together.
ONE_CAPTURE = """
(() => {
  const media = navigator.mediaDevices;
  const original = media.getUserMedia.bind(media);
  let both = null;
  media.getUserMedia = async (constraints = {}) => {
    both ??= original({ audio: true, video: true });
    const stream = await both;
    const tracks = stream.getTracks().filter((track) => constraints[track.kind]);
    return new MediaStream(tracks.map((track) => track.clone()));
  };
})();
"""


# What Ada's browser sends, recorded by the browser itself (MediaRecorder on the tracks of her
# publishing connection): the clapperboard as captured, the reference the product must keep.
RECORD_SENT = """async (milliseconds) => {
  const pc = window.__pcs.find((c) => c.getSenders().some((s) => s.track?.kind === 'video'));
  const stream = new MediaStream(pc.getSenders().map((s) => s.track).filter(Boolean));
  const recorder = new MediaRecorder(stream, { mimeType: 'video/webm;codecs=vp8,opus' });
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.start();
  await new Promise((resolve) => setTimeout(resolve, milliseconds));
  recorder.stop();
  await new Promise((resolve) => { recorder.onstop = resolve; });
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


def _offset(path: Path) -> float:
    """Where the beeps fall against the flashes, as a fraction of their one-second period: the
    circular mean of (beep - flash) over every flash and the beep nearest it. Circular, because
    two fake devices that start apart can put the beeps anywhere in the period, half a period
    away included."""
    flashes, beeps = _marks(path)
    assert len(flashes) >= 3 and len(beeps) >= 3, (path.name, flashes, beeps)
    angles = [2 * math.pi * (min(beeps, key=lambda b: abs(b - f)) - f) for f in flashes]
    mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
    return mean / (2 * math.pi)


def _marks(path: Path) -> tuple[list[float], list[float]]:
    """When the picture brightens (Ada's tile turning white) and when a beep starts."""
    # A picture's shade is its 95th-percentile brightness, not its mean: whatever the layout
    # (Ada's tile alone, or one of a 2x2 grid, where her flash covers 19 % of the picture), a
    # white tile covers more than 5 % of it. With the mean, a picture where her tile filled the
    # frame (the grid changes as the tracks end at the stop) could outshine every flash in the
    # grid: CI once found a single flash, in the recording's last moments.
    with av.open(str(path)) as container:
        shades = [
            (float(frame.time), float(numpy.percentile(frame.to_ndarray(format="gray"), 95)))
            for frame in container.decode(video=0)
        ]
    # Between the usual (dark) picture and the brightest: robust to a few odd frames.
    usual, high = statistics.median(s for _, s in shades), max(s for _, s in shades)
    middle = (usual + high) / 2
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
        ada.context.add_init_script(ONE_CAPTURE)
        grace, alan = plain("recgrace", "Grace Hopper"), plain("recalan", "Alan Turing")
        room_url = ada.create_room("Recorded review")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        for person in (grace, alan):
            person.wait_video_from(ada)
        # Grace and Alan talk with their cameras off: on two cores, three browsers encoding
        # and decoding three videos starve Chromium's fake camera, whose file then plays slower
        # than its sound (its own clapperboard drifts before anything reaches the product).
        for person in (grace, alan):
            person.page.click("#camera-button")
            person.page.wait_for_selector("#camera-button[aria-pressed=true]", timeout=WAIT_MS)
        # Only moderators see the control; Grace does not.
        grace.page.click("#details-button")
        assert grace.page.is_hidden("#record-button")

        # The recording runs from the moment the room is told (Grace's page shows the badge)
        # to the moment it is told it stopped.
        ada.page.click("#details-button")
        ada.page.click("#record-button")
        grace.page.wait_for_selector("#recording-indicator", state="visible", timeout=WAIT_MS)
        started = time.monotonic()
        for person in (ada, alan):
            person.page.wait_for_selector("#recording-indicator", state="visible", timeout=WAIT_MS)
        assert ada.page.inner_text("#record-button") == "Stop recording"
        sent = Path(tempfile.mkdtemp()) / "sent.webm"
        sent.write_bytes(base64.b64decode(ada.page.evaluate(RECORD_SENT, 8_000)))

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
        # In the downloaded file the beeps come where they came, against the flashes, in what
        # Ada's browser sent (however its fake devices lined them up), within 100 ms.
        recorded, captured = _offset(path), _offset(sent)
        assert abs((recorded - captured + 0.5) % 1.0 - 0.5) < 0.1, (recorded, captured)
        page.close()
