"""Headless Chromium for browser tests: Debian's package driven by Playwright.

Loopback only: background networking is off (this machine's network is closed), and the flags
a WebRTC test needs (fake devices, loopback ICE without mDNS) are on from the start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from signaling.kurento import KurentoClient, ObjectNotFound, ServerManager

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


PASSWORD = "a sturdy pass phrase 42"
WAIT_MS = 10_000
P = TypeVar("P", bound="Person")


class Person:
    """One person in their own browser session (cookies are not shared between people)."""

    locale: str | None = None  # the browser's language (Accept-Language), e.g. "ko-KR"

    def __init__(self, chromium, product, username: str, display_name: str) -> None:
        options = {"locale": self.locale} if self.locale else {}
        self.context = chromium.new_context(base_url=product.url, **options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.name = display_name
        self.sign_up(username, display_name)

    def sign_up(self, username: str, display_name: str) -> None:
        page = self.page
        page.goto("/accounts/signup/")
        page.fill("input[name=username]", username)
        page.fill("input[name=display_name]", display_name)
        page.fill("input[name=password1]", PASSWORD)
        page.fill("input[name=password2]", PASSWORD)
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/$"))

    def new_room(self, name: str, *, private: bool = False, **settings: bool) -> str:
        """Create a room through the form and stay on its pre-join screen; its address.
        `settings` tick or untick the form's checkboxes (ask_to_join=True...)."""
        page = self.page
        page.goto("/rooms/new/")
        page.fill("input[name=name]", name)
        page.check(f"input[name=visibility][value={'private' if private else 'public'}]")
        for field, on in settings.items():
            page.set_checked(f"input[name={field}]", on)
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/[-a-z0-9]+/$"))
        return page.url

    def create_room(self, name: str, *, private: bool = False, **settings: bool) -> str:
        """Create a room and join it; its address."""
        url = self.new_room(name, private=private, **settings)
        self.join()
        self.wait_connected()
        return url

    def open(self, url: str) -> None:
        """Open a room page and click Join on its pre-join screen (when it has one)."""
        self.page.goto(url)
        if self.page.locator("#join-button").count():
            self.join()

    def join(self) -> None:
        self.page.click("#join-button:not([disabled])", timeout=WAIT_MS)

    def wait_connected(self) -> None:
        self.page.wait_for_selector("#room-status[data-state=connected]", timeout=WAIT_MS)

    def names_in_room(self) -> list[str]:
        return self.page.locator("#participants li").all_inner_texts()

    def wait_sees(self, name: str) -> None:
        # The people list is in a side panel that may be closed: present is enough.
        self.page.wait_for_selector(
            f"#participants li:has-text('{name}')", state="attached", timeout=WAIT_MS
        )

    def wait_not_sees(self, name: str) -> None:
        self.page.wait_for_selector(
            f"#participants li:has-text('{name}')", state="detached", timeout=WAIT_MS
        )

    def close(self) -> None:
        """Leave every page first (its media and connections end as on a tab's unload), then
        close the browser session. Closing a session whose pages still capture and send media
        could hang Chromium for minutes on this 2-core machine (seen in full runs)."""
        for page in self.context.pages:
            with contextlib.suppress(Exception):
                page.goto("about:blank", timeout=5_000)
        self.context.close()


@contextlib.contextmanager
def people_of(kind: type[P], chromium, product) -> Iterator[Callable[[str, str], P]]:
    """Make people (`kind(chromium, product, username, display_name)`) for one test; at its end
    close their browsers and fail if any page had a JavaScript error."""
    made: list[P] = []

    def make(username: str, display_name: str) -> P:
        made.append(kind(chromium, product, username, display_name))
        return made[-1]

    try:
        yield make
    finally:
        errors = {p.name: p.errors for p in made if p.errors}
        for person in made:
            person.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


MEDIA_WAIT_MS = 30_000

# Keep a handle on every peer connection the page makes, to read its statistics.
RECORD_PEER_CONNECTIONS = """
window.__pcs = [];
window.__pcLog = [];  // [ms since the page began, connection number, its new state]
const NativePeerConnection = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(...args) {
    super(...args);
    const number = window.__pcs.push(this) - 1;
    window.__pcLog.push([performance.now(), number, 'made']);
    this.addEventListener('connectionstatechange', () => {
      window.__pcLog.push([performance.now(), number, this.connectionState]);
    });
  }
};
"""

# The tile of one participant: its size, decoded frames and mean brightness of a sampled picture.
TILE_PICTURE = """(id) => {
  const video = document.querySelector(`.tile[data-participant-id="${id}"] video`);
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 48;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0, 64, 48);
  const pixels = context.getImageData(0, 0, 64, 48).data;
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    sum += 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
  }
  return {width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames,
          luma: sum / (pixels.length / 4)};
}"""

INBOUND_AUDIO_PACKETS = """async () => {
  const counts = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') counts.push(r.packetsReceived);
    });
  }
  return counts;
}"""


# Video frames decoded since the last mark, by the page's connected peer connections (a
# connection made after the mark counts from zero; a closed one no longer counts).
MARK_FRAMES = """async () => {
  window.__frameMarks = new Map();
  for (const pc of window.__pcs) {
    if (pc.connectionState === 'closed') continue;
    let decoded = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') decoded += r.framesDecoded || 0;
    });
    window.__frameMarks.set(pc, decoded);
  }
}"""
FRAMES_SINCE_MARK = """async () => {
  let total = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState !== 'connected') continue;
    let decoded = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') decoded += r.framesDecoded || 0;
    });
    total += decoded - (window.__frameMarks?.get(pc) ?? 0);
  }
  return total;
}"""


class Caller(Person):
    def __init__(self, chromium, product, username: str, display_name: str) -> None:
        super().__init__(chromium, product, username, display_name)
        self.context.add_init_script(RECORD_PEER_CONNECTIONS)
        self.console: list[tuple[float, str, str]] = []  # (time.monotonic(), type, text)
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type in ("warning", "error"):
            self.console.append((time.monotonic(), message.type, message.text))

    def timeline(self, since: float) -> list[str]:
        """What the page's connections and console did, in seconds from `since`
        (time.monotonic()): read when a test of healing fails, to tell why."""
        now_ms, log = self.page.evaluate("[performance.now(), window.__pcLog]")
        now = time.monotonic()
        lines = [
            (now - (now_ms - at) / 1000 - since, f"connection {number} {state}")
            for at, number, state in log
        ]
        lines += [(at - since, f"console {kind}: {text[:200]}") for at, kind, text in self.console]
        return [f"{self.name} {at:+7.2f} s {what}" for at, what in sorted(lines)]

    @property
    def participant_id(self) -> str:
        value = self.page.get_attribute("#participants li.is-you", "data-participant-id")
        assert value is not None
        return value

    def picture_of(self, participant_id: str) -> dict | None:
        return self.page.evaluate(TILE_PICTURE, participant_id)

    def wait_video_from(self, other: Caller) -> dict:
        """Wait until the other's tile shows decoded, moving, non-black video."""
        who = other.participant_id
        self.page.wait_for_selector(f".tile[data-participant-id='{who}']", timeout=WAIT_MS)
        deadline = time.monotonic() + MEDIA_WAIT_MS / 1000
        first = None
        while time.monotonic() < deadline:
            picture = self.picture_of(who)
            if picture and picture["frames"] > 0:
                if first is None:
                    first = picture
                elif picture["frames"] >= first["frames"] + 10 and picture["luma"] > 20:
                    # The picture shows, not the avatar that stands in for it.
                    self.page.wait_for_selector(
                        f".tile--video[data-participant-id='{who}']", timeout=WAIT_MS
                    )
                    return picture
            time.sleep(0.2)
        raise AssertionError(f"{self.name} decoded no moving picture from {other.name}: {first}")

    def connections_made(self) -> int:
        """How many peer connections the page has made so far."""
        return self.page.evaluate("window.__pcs.length")

    def mark_frames(self) -> None:
        """Start counting decoded video frames afresh (see frames_since_mark)."""
        self.page.evaluate(MARK_FRAMES)

    def frames_since_mark(self) -> int:
        """Video frames the page decoded since mark_frames, on connections that are up."""
        return self.page.evaluate(FRAMES_SINCE_MARK)

    def remote_tiles(self) -> int:
        return self.page.locator(".tile:not(.tile--local)").count()

    def wait_tile_gone(self, participant_id: str) -> None:
        self.page.wait_for_selector(
            f".tile[data-participant-id='{participant_id}']", state="detached", timeout=WAIT_MS
        )


def media_server_pipelines(url: str) -> list[str]:
    """Ask the media server, over the Kurento Protocol, which pipelines it holds."""
    return list(media_server_objects(url))


def media_server_objects(url: str) -> dict[str, list[str]]:
    """Ask the media server, over the Kurento Protocol: its pipelines and their elements."""

    async def ask() -> dict[str, list[str]]:
        client = KurentoClient(url, request_timeout=5, connect_timeout=5)
        found = {}
        try:
            for pipeline in await ServerManager(client).get_pipelines():
                with contextlib.suppress(ObjectNotFound):  # released meanwhile
                    found[pipeline] = list(await client.invoke(pipeline, "getChildren") or [])
        finally:
            await client.close()
        return found

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright owns this thread's loop
        return pool.submit(asyncio.run, ask()).result(timeout=30)


def media_connections(url: str, media_type: str) -> int:
    """How many connections of that media type ("AUDIO", "VIDEO") the media server's elements
    make, over the Kurento Protocol."""

    async def count() -> int:
        client = KurentoClient(url, request_timeout=5, connect_timeout=5)
        total = 0
        try:
            for pipeline in await ServerManager(client).get_pipelines():
                # A pipeline or element released while it is counted (a meeting ending) has no
                # connections left.
                with contextlib.suppress(ObjectNotFound):
                    for element in await client.invoke(pipeline, "getChildren") or []:
                        with contextlib.suppress(ObjectNotFound):
                            sinks = await client.invoke(
                                element, "getSinkConnections", mediaType=media_type
                            )
                            total += len(sinks or [])
        finally:
            await client.close()
        return total

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright owns this thread's loop
        return pool.submit(asyncio.run, count()).result(timeout=30)


def audio_connections(url: str) -> int:
    """How many AUDIO connections the media server's elements make."""
    return media_connections(url, "AUDIO")


def video_connections(url: str) -> int:
    """How many VIDEO connections the media server's elements make."""
    return media_connections(url, "VIDEO")


def wait_until(what: str, condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(0.25)


# The page's peer connections: their states, and each tile's state line.
CONNECTIONS = """() => ({
  pcs: window.__pcs.map((pc) => pc.connectionState),
  tiles: [...document.querySelectorAll('.tile')].map(
    (t) => `${t.dataset.participantId || 'you'}: ${t.dataset.state} ${t.innerText}`),
})"""


class Heal:
    """Measures how long the callers took to decode video again once the fault is over."""

    def __init__(self, *callers: Caller) -> None:
        self.callers = callers
        self.connections = {caller: caller.connections_made() for caller in callers}
        self.started = time.monotonic()

    def fault_over(self) -> None:
        """The fault is over: the clock starts, and frames count from now."""
        for caller in self.callers:
            caller.mark_frames()
        self.started = time.monotonic()

    def renegotiated(self, caller: Caller) -> bool:
        """True when the caller's page made new connections since the fault began."""
        return caller.connections_made() > self.connections[caller]

    def wait(self, frames: int = 15, timeout: float = 30.0) -> float:
        """Seconds from the fault's end until every caller decoded `frames` new frames."""
        deadline = self.started + timeout
        waiting = set(self.callers)
        while waiting:
            for caller in list(waiting):
                if caller.frames_since_mark() >= frames:
                    waiting.discard(caller)
            if waiting and time.monotonic() > deadline:
                states = {c.name: c.page.evaluate(CONNECTIONS) for c in waiting}
                raise AssertionError(f"no video again within {timeout:g} s: {states}")
            time.sleep(0.1)
        return time.monotonic() - self.started


def in_a_call(ada: Caller, grace: Caller, name: str = "Fault room") -> str:
    """Ada makes a room, Grace joins, and each decodes the other's video. Their windows are
    tall enough that both tiles stay on screen whatever notice shows above them (a tile off
    screen receives no video, which a measurement of video coming back must not mistake for
    a call that did not heal)."""
    for person in (ada, grace):
        person.page.set_viewport_size({"width": 1280, "height": 1000})
    room_url = ada.create_room(name)
    grace.open(room_url)
    grace.wait_connected()
    grace.wait_video_from(ada)
    ada.wait_video_from(grace)
    ada.page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    grace.page.evaluate("window.__sameDocument = true")
    return room_url


def same_document(*callers: Caller) -> bool:
    return all(c.page.evaluate("window.__sameDocument === true") for c in callers)


class Guest(Person):
    """A participant with no browser page in the call: signed up in Chromium, then in the room
    over a plain WebSocket (the room socket, with the session cookie, as the page would). It
    sends no media, so the others see a tile with its initial. Cheap enough to fill a room."""

    def __init__(self, chromium, product, username: str, display_name: str) -> None:
        super().__init__(chromium, product, username, display_name)
        self.product = product
        self.socket = None
        self._sockets = contextlib.ExitStack()
        self.snapshot: dict[str, Any] | None = None

    def enter(self, room_url: str) -> dict[str, Any]:
        """Open the room socket of the room at `room_url`; the snapshot."""
        import json

        from websockets.sync.client import connect

        slug = room_url.rstrip("/").rsplit("/", 1)[-1]
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in self.context.cookies())
        self.socket = self._sockets.enter_context(
            connect(
                self.product.url.replace("http://", "ws://") + f"/ws/rooms/{slug}/",
                additional_headers={"Cookie": cookies, "Origin": self.product.url},
                open_timeout=WAIT_MS / 1000,
            )
        )
        while True:
            message = json.loads(self.socket.recv(timeout=WAIT_MS / 1000))
            if message["type"] == "snapshot":
                self.snapshot = message
                break
        # Read (and drop) what the room says from now on, so the socket never backs up.
        threading.Thread(target=self._drain, args=(self.socket,), daemon=True).start()
        return message

    @staticmethod
    def _drain(socket) -> None:
        with contextlib.suppress(Exception):
            for _ in socket:
                pass

    def leave(self) -> None:
        self._sockets.close()
        self.socket = None

    def close(self) -> None:
        self.leave()
        super().close()
