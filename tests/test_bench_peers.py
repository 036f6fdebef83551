"""The forwarding benchmark's side-by-side machinery (bench/peers/): the private network Janus runs
in, and Janus forwarding one publisher to one subscriber with the benchmark's own clients.

Not part of `make test` (the benchmark is not, and these need root and Debian's janus): marked
`bench`, which pyproject's addopts deselect; run them with

    .venv/bin/python -m pytest -m bench tests/test_bench_peers.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.media import encode_media
from bench.mediaserver_forwarding import QUICK, Ramp
from bench.peers import janus, netns
from bench.proc import CORES, Child

pytestmark = pytest.mark.bench

RECEIVE_ONE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(10)
print(s.getsockname()[1], flush=True)
data, peer = s.recvfrom(100)
print(data.decode(), peer[0], flush=True)
"""
SEND_ONE = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture
def root() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)


def machine_addresses() -> str:
    return subprocess.run(["ip", "-o", "address"], capture_output=True, text=True).stdout


def test_private_network_is_made_used_and_removed(root: None) -> None:
    before = machine_addresses()
    pair = netns.NetnsPair(f"bench-test-{os.getpid()}")
    pair.up()
    try:
        assert set(pair.names) <= netns.namespaces()
        assert machine_addresses() == before  # nothing added to the machine's own network
        receiver = subprocess.Popen(
            [
                *pair.exec_prefix(pair.server),
                sys.executable,
                "-c",
                RECEIVE_ONE,
                pair.server_address,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert receiver.stdout is not None
        port = receiver.stdout.readline().strip()
        subprocess.run(
            [
                *pair.exec_prefix(pair.client),
                sys.executable,
                "-c",
                SEND_ONE,
                pair.server_address,
                port,
            ],
            check=True,
            timeout=10,
        )
        assert receiver.stdout.readline().split() == ["hello", pair.client_address]
        receiver.wait(10)
        # A crashed run's leftover (namespaces without processes) is replaced by the next run.
        again = netns.NetnsPair(pair.base)
        again.up()
        assert set(again.names) <= netns.namespaces()
    finally:
        pair.down()
    assert pair.leftovers() == []
    assert machine_addresses() == before


def test_a_busy_namespace_is_not_taken_over(root: None) -> None:
    pair = netns.NetnsPair(f"bench-test-{os.getpid()}")
    pair.up()
    sleeper = subprocess.Popen([*pair.exec_prefix(pair.server), "sleep", "30"])
    try:
        with pytest.raises(RuntimeError, match="already exists with processes"):
            netns.NetnsPair(pair.base).up()
    finally:
        pair.down()  # stops the sleeper too
        sleeper.wait(10)
    assert pair.leftovers() == []


async def test_janus_forwards_a_publisher_to_a_subscriber(root: None, tmp_path: Path) -> None:
    reason = janus.unavailable()
    if reason:
        pytest.skip(reason)
    media_path = tmp_path / "media.pickle"
    encode_media(seconds=2.0).save(media_path)
    plan = replace(QUICK, subscriber_processes=1, window=3.0, pin=True)
    ramp = Ramp("janus", plan, tmp_path, media_path)
    try:
        await ramp.start()
        await ramp.grow(1)
        step = await ramp.measure()
        assert ramp.server is not None
        # Janus's every thread, including those made for the handles, stays on the server's core.
        threads = os.listdir(f"/proc/{ramp.server.pid}/task")
        assert len(threads) > 3
        assert {frozenset(os.sched_getaffinity(int(t))) for t in threads} == {
            frozenset([CORES - 1])
        }
    finally:
        await ramp.stop()
        await Child.stop_all()
    assert ramp.network is not None and ramp.network.leftovers() == []
    assert step.failed_subscribers == 0
    assert step.fps_min is not None and step.fps_min > 20, step
    assert step.audio_fps_min is not None and step.audio_fps_min > 30, step
    assert step.loss_max is not None and step.loss_max < 1.0, step
    assert step.server_cpu > 0 and step.server_rss_mib > 0
