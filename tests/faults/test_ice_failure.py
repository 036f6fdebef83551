"""The network between a browser and the media server drops every packet for a while (as when
Wi-Fi hands over or a laptop sleeps): the pages notice, negotiate new connections, and video
flows again within seconds of the network coming back, without a reload.

Packets are dropped with iptables on the loopback interface, for the media server's own UDP
port range only (set apart from the kernel's ephemeral ports), and the rule is always removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.browser import Heal, in_a_call, media_server_objects, same_document, wait_until
from tests.conftest import require

pytestmark = pytest.mark.browser

MEDIA_PORTS = (61000, 61199)
DROP_SECONDS = 10.0
# "Without a reload, within seconds": a functional bound, not a performance target (those are
# bench.heal's, in docs/benchmarks.md: median 1.5 s). An attempt that started during the outage
# waits out its stall timer (3 s) before the next one, so on a loaded machine the tail reaches
# about 7 s (one full-suite run measured 7.2 s; alone it is 1.3-2.8 s).
HEAL_SECONDS = 10.0


@pytest.fixture
def packet_drop() -> Iterator:
    iptables = shutil.which("iptables")
    require(iptables is not None and os.geteuid() == 0, "iptables, run as root")
    ports = f"{MEDIA_PORTS[0]}:{MEDIA_PORTS[1]}"
    rule = ["INPUT", "-i", "lo", "-p", "udp", "--dport", ports, "-j", "DROP"]
    inserted = False

    def drop(on: bool) -> None:
        nonlocal inserted
        if on and not inserted:
            subprocess.run([iptables, "-I", *rule], check=True)
            inserted = True
        elif not on and inserted:
            subprocess.run([iptables, "-D", *rule], check=True)
            inserted = False

    yield drop
    drop(False)


def test_video_flows_again_soon_after_the_network_comes_back(
    callers_on, product_factory, packet_drop
):
    product = product_factory(media_args=("--port-range", f"{MEDIA_PORTS[0]}-{MEDIA_PORTS[1]}"))
    ada = callers_on(product, "iceada", "Ada Lovelace")
    grace = callers_on(product, "icegrace", "Grace Hopper")
    in_a_call(ada, grace)

    heal = Heal(ada, grace)
    packet_drop(True)
    # The pages see their connections interrupted.
    for person in (ada, grace):
        person.page.wait_for_selector(
            ".tile[data-connection=disconnected], .tile[data-connection=failed]", timeout=15_000
        )
    time.sleep(max(0.0, DROP_SECONDS - (time.monotonic() - heal.started)))
    packet_drop(False)
    heal.fault_over()
    healed = heal.wait(timeout=30)
    print(f"packets dropped for {DROP_SECONDS:g} s: video again {healed:.2f} s after")
    # What the pages did, shown with a failure (captured output), to tell why.
    print("\n".join(ada.timeline(heal.started) + grace.timeline(heal.started)))
    assert healed <= HEAL_SECONDS, f"video came back only {healed:.1f} s after the network"
    assert same_document(ada, grace), "a page reloaded"
    # Longer than ICE heals by itself: the pages negotiated new connections.
    assert heal.renegotiated(ada) and heal.renegotiated(grace)

    for person in (ada, grace):
        person.page.click("#leave-button")
    wait_until("the pipeline released", lambda: media_server_objects(product.media_url) == {})
