"""TURN against real coturn (Debian's `turnserver`) on 127.0.0.1 with `use-auth-secret`: the
product's per-session credentials allocate, forged and expired ones are refused, and a relay-only
Chromium call completes through it with frames decoded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aioice.turn import create_turn_endpoint
from django.test import override_settings

from signaling import turn
from tests.conftest import require
from tests.live import free_port

REALM = "conference.test"

# The local candidate type of each connected peer connection's selected pair.
SELECTED_CANDIDATE_TYPES = """async () => {
  const types = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        pair = stats.get(r.selectedCandidatePairId);
      }
    });
    const local = pair && stats.get(pair.localCandidateId);
    types.push(local ? local.candidateType : null);
  }
  return types;
}"""


class Coturn:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.secret = secrets.token_hex(16)
        self.log = workdir / "turnserver.log"
        low = random.randrange(40000, 60000, 100)
        self.process = subprocess.Popen(
            [
                "turnserver",
                "-n",  # no configuration file: everything is on this command line
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={self.port}",
                "--use-auth-secret",
                f"--static-auth-secret={self.secret}",
                f"--realm={REALM}",
                "--allow-loopback-peers",  # the test's media server is on 127.0.0.1
                "--no-multicast-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                f"--min-port={low}",
                f"--max-port={low + 99}",
                f"--log-file={self.log}",
                "--simple-log",
                "--verbose",  # logs each session's user, which the call test looks for
                f"--pidfile={workdir / 'turnserver.pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log.read_text(errors='replace')}")
            with override_settings(TURN_SECRET=self.secret):
                credentials = turn.credentials_for(0)
            try:
                run(allocate(self.port, credentials.username, credentials.password))
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("turnserver did not answer within 15 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run(coroutine):
    """Run a coroutine on a loop of its own: Playwright's sync API may own this thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


async def allocate(port: int, username: str, password: str) -> tuple[str, int]:
    """Allocate a relayed address on the TURN server; raises when it refuses."""
    async with asyncio.timeout(5):
        transport, _ = await create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", port), username, password
        )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    require(shutil.which("turnserver") is not None, "coturn (Debian package coturn)")
    server = Coturn(tmp_path_factory.mktemp("coturn"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_issued_credentials_allocate_and_forged_or_expired_ones_are_refused(coturn):
    with override_settings(TURN_SECRET=coturn.secret, TURN_CREDENTIAL_TTL=600):
        good = turn.credentials_for(12)
        expired = turn.credentials_for(12, now=time.time() - 3600)
    with override_settings(TURN_SECRET="not-the-secret", TURN_CREDENTIAL_TTL=600):
        forged = turn.credentials_for(12)
    relayed = run(allocate(coturn.port, good.username, good.password))
    assert relayed[0] == "127.0.0.1"
    for refused in (forged, expired):
        with pytest.raises(Exception):  # noqa: B017  (aioice raises its STUN transaction error)
            run(allocate(coturn.port, refused.username, refused.password))
    # Someone else's username with this password is refused too.
    with pytest.raises(Exception):  # noqa: B017
        run(allocate(coturn.port, good.username.replace(":12", ":13"), good.password))


@pytest.mark.browser
def test_a_relay_only_call_goes_through_coturn(chromium, coturn, tmp_path):
    from tests.live import ProductServer
    from tests.test_browser_call import Caller

    product = ProductServer(
        tmp_path,
        {
            "TURN_URLS": coturn.url,
            "TURN_SECRET": coturn.secret,
            "TURN_CREDENTIAL_TTL": "600",
            "ICE_TRANSPORT_POLICY": "relay",
        },
    ).start()
    made: list[Caller] = []
    try:
        ada = Caller(chromium, product, "relayada", "Ada Lovelace")
        grace = Caller(chromium, product, "relaygrace", "Grace Hopper")
        made += [ada, grace]
        room_url = ada.create_room("Behind a firewall")
        grace.open(room_url)
        grace.wait_connected()
        grace.wait_video_from(ada)
        ada.wait_video_from(grace)
        for person in made:
            types = person.page.evaluate(SELECTED_CANDIDATE_TYPES)
            assert len(types) >= 2 and set(types) == {"relay"}, (person.name, types)
        assert not any(person.errors for person in made), [p.errors for p in made]
        # coturn saw the participants' own usernames (expiry:participant id).
        log = coturn.log.read_text(errors="replace")
        assert f":{grace.participant_id}" in log and f":{ada.participant_id}" in log
    finally:
        for person in made:
            person.close()
        product.stop()
