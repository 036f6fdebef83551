"""Presence signaling under load: many scripted participants on the room WebSocket of a real
daphne.

    python -m bench.signaling_load [--participants 200] [--rooms 20] [--json F]
                                   [--database sqlite|postgres] [--redis]

The product runs as in tests/live.py (migrate, daphne on a free loopback port; no media server
is needed: nobody publishes). Users, rooms and logged-in sessions are made directly in the
product's database by `manage.py shell` (no password hashing, no pages), and each scripted
participant is one `websockets` client carrying its session cookie. Presence refreshes at the
product's defaults (heartbeat 15 s, stale after 60 s), not tests/live.py's fast test values.

Three phases, all in one client process:

1. ramp: N participants join, spread evenly over M rooms, at `--rate` joins a second;
   each stays connected;
2. probes: with all N connected, `--probes` extra participants join one at a time (round robin
   over the rooms), each leaving again with `leave` before the next;
3. burst: every connection leaves, then all N join at the same moment (as after a restart).

Per join it records the WebSocket handshake (connect called -> socket open), the join
round-trip (socket open -> `snapshot`), and the presence fan-out: for every other participant
of the room, socket open of the joiner -> `participant_joined` received. All clocks are this
process's monotonic clock. The run stops by itself (`--timeout`, default 300 s) and stops daphne
on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.live import ProductServer

from .latency import line, load_average, summary

POSTGRES_ADMIN = ["-h", "127.0.0.1", "-U", "postgres"]
POSTGRES_DB = "bench_signaling"

# Run by `manage.py shell -c`: users, rooms and sessions, printed as one JSON line.
SETUP = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from accounts.models import User
from rooms import services

users = []
for i in range({users}):
    user = User(username=f"load{{i}}", display_name=f"Load {{i}}")
    user.set_unusable_password()
    users.append(user)
users = User.objects.bulk_create(users)
rooms = [services.room_create(owner=users[i], name=f"Load room {{i}}", max_participants=1000)
         for i in range({rooms})]
sessions = []
for user in users:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    sessions.append(session.session_key)
print("SETUP " + json.dumps({{"rooms": [r.slug for r in rooms], "sessions": sessions}}))
"""


@dataclass
class Member:
    """One scripted participant: its socket and what it heard, with arrival times."""

    room: str
    session: str
    ws: ClientConnection | None = None
    you: int | None = None
    started: float = 0.0
    opened: float = 0.0
    snapshot: float = 0.0
    joined_seen: dict[int, float] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    got_snapshot: asyncio.Event = field(default_factory=asyncio.Event)

    async def join(self, url: str, origin: str) -> None:
        self.joined_seen.clear()
        self.got_snapshot.clear()
        self.snapshot = 0.0
        self.started = time.monotonic()
        self.ws = await connect(
            f"{url}/ws/rooms/{self.room}/",
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={self.session}"},
            open_timeout=60,
        )
        self.opened = time.monotonic()
        self.reader = asyncio.create_task(self.read(self.ws))
        await asyncio.wait_for(self.got_snapshot.wait(), 60)
        if not self.snapshot:
            raise RuntimeError(f"closed without a snapshot: {self.ws.close_code}")

    async def read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:
                now = time.monotonic()
                message = json.loads(frame)
                kind = message.get("type")
                if kind == "snapshot":
                    self.you, self.snapshot = message["you"], now
                    self.got_snapshot.set()
                elif kind == "participant_joined":
                    self.joined_seen.setdefault(message["participant"]["id"], now)
                elif kind == "refused":
                    print(f"  refused: {message}", flush=True)
        self.got_snapshot.set()  # closed: stop waiting

    async def leave(self) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(Exception):
            await self.ws.send(json.dumps({"type": "leave"}))
            await asyncio.wait_for(self.ws.wait_closed(), 10)
        await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        self.ws = self.reader = None


@dataclass
class Phase:
    name: str
    handshake: list[float] = field(default_factory=list)
    join: list[float] = field(default_factory=list)
    fanout: list[float] = field(default_factory=list)
    failures: int = 0

    def record(self, joiner: Member, others: list[Member]) -> None:
        self.handshake.append(1000 * (joiner.opened - joiner.started))
        self.join.append(1000 * (joiner.snapshot - joiner.opened))
        for other in others:
            seen = other.joined_seen.get(joiner.you or -1)
            if seen is not None:
                self.fanout.append(1000 * (seen - joiner.opened))

    def report(self) -> list[str]:
        return [
            f"{self.name}: {len(self.join)} joins, {self.failures} failed",
            line("  handshake (connect -> open)", self.handshake, 32),
            line("  join (open -> snapshot)", self.join, 32),
            line("  fan-out (open -> others told)", self.fanout, 32),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "handshake_ms": summary(self.handshake),
            "join_ms": summary(self.join),
            "fanout_ms": summary(self.fanout),
        }


async def run(args: argparse.Namespace, product: ProductServer, setup: dict[str, Any]) -> dict:
    url = product.url.replace("http://", "ws://")
    rooms: list[str] = setup["rooms"]
    sessions: list[str] = setup["sessions"]
    members = [Member(rooms[i % len(rooms)], sessions[i]) for i in range(args.participants)]
    by_room: dict[str, list[Member]] = defaultdict(list)
    for member in members:
        by_room[member.room].append(member)
    phases: dict[str, Phase] = {}

    async def join_all(name: str, group: list[Member], interval: float) -> None:
        phase = phases[name] = Phase(name)

        async def one(member: Member, delay: float) -> None:
            await asyncio.sleep(delay)
            try:
                await member.join(url, product.url)
            except Exception as error:
                phase.failures += 1
                print(f"  join failed: {error!r}", flush=True)

        await asyncio.gather(*(one(m, i * interval) for i, m in enumerate(group)))
        await asyncio.sleep(2)  # late participant_joined events still count
        for member in group:
            if member.snapshot:
                phase.record(member, [o for o in by_room[member.room] if o is not member])

    # 1. Ramp.
    await join_all("ramp", members, 1.0 / args.rate)
    print(*phases["ramp"].report(), sep="\n", flush=True)

    # 2. Probes at N connected.
    await asyncio.sleep(2)
    probe_phase = phases["probes"] = Phase(f"probes (with {args.participants} connected)")
    for i in range(args.probes):
        room = rooms[i % len(rooms)]
        probe = Member(room, sessions[args.participants + i % len(rooms)])
        try:
            await probe.join(url, product.url)
            await asyncio.sleep(0.2)
            probe_phase.record(probe, [o for o in by_room[room] if o.ws])
        except Exception as error:
            probe_phase.failures += 1
            print(f"  probe failed: {error!r}", flush=True)
        await probe.leave()
        await asyncio.sleep(args.probe_interval)
    print(*probe_phase.report(), sep="\n", flush=True)

    # 3. Burst: everyone leaves, then all join at once.
    await asyncio.gather(*(m.leave() for m in members))
    await asyncio.sleep(2)
    await join_all("burst", members, 0.0)
    print(*phases["burst"].report(), sep="\n", flush=True)
    await asyncio.gather(*(m.leave() for m in members))
    if any(phase.failures for phase in phases.values()):
        problems = [x for x in product.log().splitlines() if '"WS' not in x]  # no access lines
        print("daphne log, last other lines:", *problems[-15:], sep="\n  ")
    return {name: phase.as_dict() for name, phase in phases.items()}


def recreate_postgres_database() -> str:
    for command in (["dropdb", "--if-exists"], ["createdb"]):
        subprocess.run([*command, *POSTGRES_ADMIN, POSTGRES_DB], check=True, timeout=60)
    return f"postgres://postgres@127.0.0.1:5432/{POSTGRES_DB}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="ramp joins a second (20)")
    parser.add_argument("--probes", type=int, default=50, help="probe joins at N (50)")
    parser.add_argument("--probe-interval", type=float, default=0.2, help="seconds (0.2)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--redis", action="store_true", help="Redis channel layer on :6379")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the run")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="product setting"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    env = {
        "PRESENCE_HEARTBEAT_SECONDS": "15",
        "PRESENCE_STALE_SECONDS": "60",
        "KMS_URL": "ws://127.0.0.1:9/kurento",  # never used: nobody publishes
    }
    if args.database == "postgres":
        env["DATABASE_URL"] = recreate_postgres_database()
    if args.redis:
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        env["CHANNEL_LAYER_PREFIX"] = f"bench-signaling-{secrets.token_hex(4)}"
    env.update(item.split("=", 1) for item in args.env)
    setup_name = f"{args.database} + {'redis' if args.redis else 'in-memory'} channel layer"
    setup_name += "".join(f", {item}" for item in args.env)
    print(f"{setup_name}; {args.participants} participants in {args.rooms} rooms")
    print(f"before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-signaling-") as tmp:
        product = ProductServer(Path(tmp), extra_env=env)
        try:
            product.manage("migrate", "--noinput")
            users = args.participants + args.rooms  # the probes' users come last
            out = product.manage("shell", "-c", SETUP.format(users=users, rooms=args.rooms))
            setup = json.loads(out.split("SETUP ", 1)[1])
            product.serve()
            print(f"daphne at {product.url}", flush=True)
            started = time.monotonic()
            results = asyncio.run(asyncio.wait_for(run(args, product, setup), args.timeout))
            elapsed = time.monotonic() - started
        finally:
            product.stop()
    print(f"after: {load_average()}; {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "setup": setup_name,
                    "participants": args.participants,
                    "rooms": args.rooms,
                    "rate": args.rate,
                    "phases": results,
                    "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
