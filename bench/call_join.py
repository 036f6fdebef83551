"""Join latency of a call: from clicking Join to the first decoded video frame.

    python -m bench.call_join [--joins 20] [--json F]

The product as an operator runs it (tests/live.py: migrate, collectstatic, the embedded media
server, daphne) and headless Chromium with fake camera and microphone (tests/browser.py), all on
loopback. A host signs up, creates a room and publishes. A guest then joins `--joins` times:
each time a fresh tab opens the room page, waits for its pre-join screen (camera preview shown,
Join enabled), clicks Join, waits until the host's tile has decoded a video frame, and leaves
with the Leave button. The page load is reported too, but the total runs from the click.

Times are the page's own (performance.now(), whose zero is the navigation start). A script
added to the guest's pages before any of the product's (add_init_script) wraps WebSocket and
RTCPeerConnection to timestamp the stages; the product is unchanged. The first frame is the
first poll (every 4 ms) that sees the tile's getVideoPlaybackQuality().totalVideoFrames > 0;
requestVideoFrameCallback's presentation time is recorded as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, Person
from tests.live import ProductServer

from .latency import line, load_average, summary

# Timestamps of one join, on the page's clock (ms since the navigation started).
INSTRUMENT = """
(() => {
  const now = () => performance.now();
  const b = (window.__bench = {
    clicked: null, wsCreated: null, wsOpen: null, snapshot: null,
    subscribeSent: null, subscribed: null,
    publishSent: null, published: null, remoteCandidate: null, pcs: [],
    firstFrame: null, firstFramePresented: null, firstFrameReceived: null,
  });
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      b.wsCreated ??= now();
      this.addEventListener('open', () => { b.wsOpen ??= now(); });
      this.addEventListener('message', (event) => {
        const t = now();
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        if (['snapshot', 'subscribed', 'published'].includes(message.type)) b[message.type] ??= t;
        const remote = message.type === 'ice_candidate' && message.target !== 'publish';
        if (remote) b.remoteCandidate ??= t;
      });
    }
    send(data) {
      try {
        const type = JSON.parse(data).type;
        if (type === 'subscribe') b.subscribeSent ??= now();
        if (type === 'publish') b.publishSent ??= now();
      } catch {}
      return super.send(data);
    }
  };
  const NativePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePeerConnection {
    constructor(...args) {
      super(...args);
      const r = { created: now(), iceConnected: null, connected: null, videoTrack: null };
      b.pcs.push(r);
      this.addEventListener('iceconnectionstatechange', () => {
        if (['connected', 'completed'].includes(this.iceConnectionState)) r.iceConnected ??= now();
      });
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') r.connected ??= now();
      });
      this.addEventListener('track', (e) => {
        if (e.track.kind === 'video') r.videoTrack ??= now();
      });
    }
  };
  const watched = new WeakSet();
  const poll = setInterval(() => {
    for (const video of document.querySelectorAll('.tile:not(.tile--local) video')) {
      if (!watched.has(video) && video.requestVideoFrameCallback) {
        watched.add(video);
        video.requestVideoFrameCallback((_, meta) => {
          b.firstFramePresented ??= meta.presentationTime;
          b.firstFrameReceived ??= meta.receiveTime ?? null;
        });
      }
      if (video.getVideoPlaybackQuality().totalVideoFrames > 0) {
        b.firstFrame = now();
        clearInterval(poll);
      }
    }
  }, 4);
})();
"""

COLLECT = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const remote = window.__bench.pcs.find((pc) => pc.videoTrack !== null) || {};
  return {...window.__bench, pcs: undefined, remote,
          responseStart: nav.responseStart, responseEnd: nav.responseEnd,
          domInteractive: nav.domInteractive,
          resources: performance.getEntriesByType('resource').map((r) => ({
            name: r.name.split('/').pop(), start: r.startTime, end: r.responseEnd,
            bytes: r.transferSize}))};
}"""

# (label, from, to): the stages of a join, each a difference of two of the page's timestamps.
STAGES = [
    ("page load (nav -> Join clicked, not in the total)", "start", "clicked"),
    ("  nav -> response start", "start", "responseStart"),
    ("  response start -> end", "responseStart", "responseEnd"),
    ("  response end -> DOM interactive", "responseEnd", "domInteractive"),
    ("click Join -> socket created", "clicked", "wsCreated"),
    ("socket handshake", "wsCreated", "wsOpen"),
    ("join (socket open -> snapshot)", "wsOpen", "snapshot"),
    ("snapshot -> subscribe sent", "snapshot", "subscribeSent"),
    ("subscribe -> subscribed (answer)", "subscribeSent", "subscribed"),
    ("  subscribe -> 1st server candidate", "subscribeSent", "remoteCandidate"),
    ("answer -> ICE connected", "subscribed", "iceConnected"),
    ("ICE -> DTLS connected", "iceConnected", "connected"),
    ("connected -> first frame", "connected", "firstFrame"),
]
TOTAL = "click Join -> first decoded frame"
JOIN_TIMEOUT_MS = 30_000
Times = dict[str, Any]  # a join's timestamps (ms on the page's clock) and resource timings


def flatten(raw: dict[str, Any]) -> Times:
    remote = raw.pop("remote")
    times: dict[str, Any] = {
        k: v for k, v in raw.items() if isinstance(v, int | float) or v is None
    }
    times["resources"] = raw["resources"]
    times["start"] = 0.0
    for key in ("iceConnected", "connected", "videoTrack"):
        times[key] = remote.get(key)
    return times


def stage_values(times: Times) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for label, start, end in STAGES:
        a, b = times.get(start), times.get(end)
        values[label] = None if a is None or b is None else b - a
    first, clicked = times.get("firstFrame"), times.get("clicked")
    values[TOTAL] = None if first is None or clicked is None else first - clicked
    return values


def join_once(guest: Person, room_url: str, host: Page, errors: list[str]) -> Times:
    page = guest.context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(room_url, wait_until="commit")
        # The pre-join screen: the camera preview plays and Join is enabled; then click.
        page.wait_for_function(
            "document.querySelector('.tile--local video')?.videoWidth > 0",
            timeout=JOIN_TIMEOUT_MS,
            polling=50,
        )
        page.wait_for_selector("#join-button:not([disabled])", timeout=JOIN_TIMEOUT_MS)
        page.evaluate(
            "() => { window.__bench.clicked = performance.now();"
            " document.getElementById('join-button').click(); }"
        )
        page.wait_for_function(
            "window.__bench && window.__bench.firstFrame !== null",
            timeout=JOIN_TIMEOUT_MS,
            polling=50,
        )
        times = flatten(page.evaluate(COLLECT))
        page.click("#leave-button")
        page.wait_for_url(re.compile(r"/rooms/$"), timeout=10_000)
    finally:
        page.close()
    # The host sees the guest gone (its endpoints are released on the server by then or soon).
    host.wait_for_selector("#participant-count[data-count='1']", state="attached", timeout=10_000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=20, help="measured joins (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured joins first (1)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between joins (1)")
    parser.add_argument("--json", type=Path, help="write every join's timestamps here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    print(f"before: {load_average()}", flush=True)
    joins: list[Times] = []
    with tempfile.TemporaryDirectory(prefix="bench-call-join-") as tmp:
        product = ProductServer(Path(tmp))
        try:
            product.start()
            print(f"product at {product.url}, media server at {product.media_url}", flush=True)
            with sync_playwright() as playwright:
                chromium = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                host = Person(chromium, product, "benchhost", "Host")
                room_url = host.create_room("Join benchmark")
                host.page.wait_for_selector(".tile--local[data-state=live]", timeout=30_000)
                guest = Person(chromium, product, "benchguest", "Guest")
                guest.context.add_init_script(INSTRUMENT)
                guest.page.close()
                for i in range(args.warmup + args.joins):
                    times = join_once(guest, room_url, host.page, guest.errors)
                    stages = stage_values(times)
                    measured = i >= args.warmup
                    if measured:
                        joins.append(times)
                    label = f"join {i - args.warmup + 1:2d}" if measured else "warm-up"
                    print(
                        f"{label}: {stages[TOTAL]:6.0f} ms  ("
                        + ", ".join(
                            f"{v:.0f}" if v is not None else "-"
                            for k, v in stages.items()
                            if k != TOTAL and not k.startswith(" ")
                        )
                        + ")",
                        flush=True,
                    )
                    time.sleep(args.pause)
                errors = host.errors + guest.errors
                chromium.close()
        finally:
            product.stop()

    print(f"\nafter: {load_average()}")
    main_stages = [label for label, _, _ in STAGES if not label.startswith(" ")]
    print(f"stages per join above: {', '.join(main_stages)}\n")
    per_stage = {
        label: [v for j in joins if (v := stage_values(j)[label]) is not None]
        for label in [*(s[0] for s in STAGES), TOTAL]
    }
    for label, values in per_stage.items():
        print(line(label, values, width=36))
    presented = [
        t["firstFramePresented"] - t["clicked"]
        for t in joins
        if t.get("firstFramePresented") is not None and t.get("clicked") is not None
    ]
    print(line("  (frame presented, rVFC)", presented, width=36))
    totals = per_stage[TOTAL]
    p50 = summary(totals)["p50"]
    print(f"\ntarget p50 <= 500 ms: {'met' if p50 <= 500 else 'NOT met'} (p50 {p50:.0f} ms)")
    if errors:
        print(f"JavaScript errors in the pages: {errors}")
    if args.json:
        result = {
            "joins": joins,
            "summary": {label: summary(values) for label, values in per_stage.items()},
            "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
