"""A private network for a benchmarked server and its clients: two network namespaces joined by a
veth pair, made and removed by the benchmark (root only).

Janus (libnice) skips loopback interfaces when it gathers ICE candidates, and this machine's own
addresses are out of bounds, so the server runs in one namespace (`server`, 10.231.0.1/24) and its
clients in another (`client`, 10.231.0.2/24). Both veth ends are created directly inside the
namespaces, so nothing is added to the machine's own network: no interface, no address, no route.
Processes enter a namespace with `ip netns exec NAME` (which execs in place: the PID the benchmark
sees is the server's or client's own).

`up()` removes what a crashed run with the same names left behind (unless processes still live in
it: then another run owns it and `up()` refuses), and registers `down()` with atexit; `down()` stops
whatever still runs in the namespaces and deletes them (the veth pair goes with them). Both may be
called any number of times.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

SERVER_ADDRESS = "10.231.0.1"
CLIENT_ADDRESS = "10.231.0.2"
PREFIX = 24
SERVER_LINK = "veth-srv"  # interface names exist only inside their namespace
CLIENT_LINK = "veth-cli"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is missing"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


def namespaces() -> set[str]:
    """The names of the machine's named network namespaces."""
    listing = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def pids(namespace: str) -> list[int]:
    """The processes running in a named network namespace."""
    result = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


@dataclass
class NetnsPair:
    """Two namespaces, `{base}-srv` and `{base}-cli`, joined by a veth pair."""

    base: str = "bench-janus"
    server_address: str = SERVER_ADDRESS
    client_address: str = CLIENT_ADDRESS
    _registered: bool = field(default=False, repr=False)

    @property
    def server(self) -> str:
        return f"{self.base}-srv"

    @property
    def client(self) -> str:
        return f"{self.base}-cli"

    @property
    def names(self) -> tuple[str, str]:
        return self.server, self.client

    def exec_prefix(self, namespace: str) -> list[str]:
        """The command prefix that runs a program inside one of the two namespaces."""
        assert namespace in self.names
        return ["ip", "netns", "exec", namespace]

    def up(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        for name in self.names:
            if name in namespaces():
                busy = pids(name)
                if busy:
                    raise RuntimeError(
                        f"network namespace {name} already exists with processes {busy} in it "
                        "(another benchmark run?); not touching it"
                    )
                _ip("netns", "delete", name, check=False)  # a crashed run's leftover
        if not self._registered:
            atexit.register(self.down)
            self._registered = True
        try:
            for name in self.names:
                _ip("netns", "add", name)
                _ip("-n", name, "link", "set", "lo", "up")
            _ip(
                "link", "add", SERVER_LINK, "netns", self.server,
                "type", "veth", "peer", "name", CLIENT_LINK, "netns", self.client,
            )  # fmt: skip
            for name, link, address in (
                (self.server, SERVER_LINK, self.server_address),
                (self.client, CLIENT_LINK, self.client_address),
            ):
                _ip("-n", name, "address", "add", f"{address}/{PREFIX}", "dev", link)
                _ip("-n", name, "link", "set", link, "up")
        except subprocess.CalledProcessError as exc:
            self.down()
            raise RuntimeError(f"could not set up {self.names}: {exc.stderr.strip()}") from exc

    def down(self) -> None:
        """Stop what still runs in the namespaces (the benchmark's own children), delete them."""
        existing = namespaces()
        mine = [name for name in self.names if name in existing]
        for name in mine:
            for pid in pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pids(name) for name in mine) and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in mine:
            _ip("netns", "delete", name, check=False)

    def leftovers(self) -> list[str]:
        """What of this pair still exists on the machine (empty after `down()`)."""
        found = [name for name in self.names if name in namespaces()]
        links = _ip("-o", "link", "show", check=False).stdout
        found += [link for link in (SERVER_LINK, CLIENT_LINK) if f" {link}@" in links]
        return found


@contextlib.contextmanager
def netns_pair(base: str = "bench-janus") -> Iterator[NetnsPair]:
    pair = NetnsPair(base)
    pair.up()
    try:
        yield pair
    finally:
        pair.down()
