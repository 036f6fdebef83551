"""Headless Chromium for browser tests: Debian's package driven by Playwright.

Loopback only: background networking is off (this machine's network is closed), and the flags
a WebRTC test needs (fake devices, loopback ICE without mDNS) are on from the start.
"""

from __future__ import annotations

import shutil

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
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None
