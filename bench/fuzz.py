"""Hostile input against the running product, counted: the measurement issue 10 started from.

    python -m bench.fuzz [--messages 10000] [--sockets 5] [--requests 10000] [--json F]

Two parts, each against real processes on loopback (tests/live.py), seeded and bounded:

1. The room socket: daphne with the embedded media server; `--sockets` logged-in participants
   send `--messages` fuzzed messages between them (tests/fuzzing.py), while a bystander in the
   same room pings every 0.2 s. A fuzz socket that the server closes is counted (by close code)
   and opened again. Then every fuzz socket closes, the bystander leaves, and the product is
   asked what is left: participants still 'connected' (ghosts) and objects on the media server.
2. The Kurento socket: `python -m mediaserver` (session grace 1 s); `--requests` fuzzed
   requests (tests/mediaserver/fuzzing.py) over one socket, reopened (and counted) if closed.
   Counts answers by outcome; after the socket closes and the grace passes, a fresh client
   asks for the server's pipelines and sessions (abandoned ones must have been collected).

Each part reports its server process's memory (VmRSS) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.signaling_load import SETUP
from signaling.kurento import KurentoClient, ServerManager
from tests.fuzzing import Fuzzer
from tests.live import MediaServerProcess, ProductServer
from tests.mediaserver.fuzzing import fuzz_request, fuzz_seeds, fuzz_values, raw_garbage
from tests.mediaserver.peers import Peer

SEED = 20261129
GHOSTS = """
from rooms.models import Participant
print("GHOSTS", Participant.objects.filter(state="connected").count())
"""


def sendable(frame: str | bytes) -> str | bytes:
    """A text frame must be valid UTF-8 on the wire: one that is not (a lone surrogate) goes as
    the bytes a careless client would send, in a binary frame."""
    if isinstance(frame, str):
        try:
            frame.encode()
        except UnicodeEncodeError:
            return frame.encode("utf-8", "surrogatepass")
    return frame


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def media_objects(url: str) -> tuple[int, int, int]:
    """Pipelines, their elements, and sessions on the media server."""
    client = KurentoClient(url, request_timeout=10, connect_timeout=5)
    try:
        manager = ServerManager(client)
        pipelines = await manager.get_pipelines()
        elements = 0
        for pipeline in pipelines:
            elements += len(await client.invoke(pipeline, "getChildren") or [])
        sessions = await client.invoke(manager.id, "getSessions") or []
        return len(pipelines), elements, len(sessions)
    finally:
        await client.close()


async def room_socket(product: ProductServer, setup: dict[str, Any], args) -> dict[str, Any]:
    slug, sessions = setup["rooms"][0], setup["sessions"]
    url = f"ws://127.0.0.1:{product.port}/ws/rooms/{slug}/"
    origin = f"http://127.0.0.1:{product.port}"
    peer = Peer(send=True, receive=False)
    offer = await peer.offer()
    await peer.close()

    async def open_socket(session: str):
        ws = await connect(
            url, origin=origin, additional_headers={"Cookie": f"sessionid={session}"}
        )
        snapshot = json.loads(await ws.recv())
        return ws, snapshot["you"]

    bystander, bystander_id = await open_socket(sessions[-1])
    pings: list[float] = []
    replies: Counter[str] = Counter()
    closes: Counter[int] = Counter()

    async def ping_forever() -> None:
        serial = 0
        while True:
            serial += 1
            sent = time.monotonic()
            await bystander.send(json.dumps({"type": "ping", "id": serial}))
            while True:
                message = json.loads(await bystander.recv())
                if message.get("id") == serial:
                    break
            pings.append(time.monotonic() - sent)
            await asyncio.sleep(0.2)

    async def fuzz(index: int, count: int) -> None:
        ws, you = await open_socket(sessions[index])
        fuzzer = Fuzzer(SEED + index, [you, bystander_id, you + 1000], offer)

        last_heard = [time.monotonic()]

        async def drain(ws) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for text in ws:
                    last_heard[0] = time.monotonic()
                    message = json.loads(text)
                    replies[message.get("code") or message["type"]] += 1

        reader = asyncio.create_task(drain(ws))
        for sent in range(count):
            frame = sendable(fuzzer.message())
            try:
                await ws.send(frame)
            except ConnectionClosed:
                closes[ws.close_code or 1006] += 1
                await reader
                ws, you = await open_socket(sessions[index])
                reader = asyncio.create_task(drain(ws))
            if sent % 20 == 19:
                await asyncio.sleep(0.02)  # a fast client, not a flood (floods are tested apart)
        # Everything sent is handled before the socket closes (a closed socket's backlog is
        # dropped): wait until the server has been quiet for 2 s, at most a minute.
        deadline = time.monotonic() + 60
        while time.monotonic() - last_heard[0] < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await ws.close()
        await reader
        if ws.close_code not in (1000, None):
            closes[ws.close_code] += 1

    rss_before = rss_mib(product.process.pid)
    pinger = asyncio.create_task(ping_forever())
    per_socket = args.messages // args.sockets
    await asyncio.gather(*(fuzz(i, per_socket) for i in range(args.sockets)))
    rss_after = rss_mib(product.process.pid)
    pinger.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pinger
    await asyncio.sleep(2)  # the fuzzers' disconnects are handled
    ghosts = int(product.manage("shell", "-c", GHOSTS).split("GHOSTS", 1)[1]) - 1
    await bystander.close()
    await asyncio.sleep(2)
    pipelines, elements, _ = await media_objects(product.media_url)
    return {
        "messages": per_socket * args.sockets,
        "sockets": args.sockets,
        "closed_by_server": dict(closes),
        "ghost_participants": ghosts,
        "media_objects_left": {"pipelines": pipelines, "elements": elements},
        "replies": dict(replies.most_common()),
        "bystander_ping_ms": {
            "count": len(pings),
            "median": round(sorted(pings)[len(pings) // 2] * 1000, 1) if pings else None,
            "max": round(max(pings) * 1000, 1) if pings else None,
        },
        "daphne_rss_mib": {"before": round(rss_before), "after": round(rss_after)},
    }


async def kurento_socket(server: MediaServerProcess, args) -> dict[str, Any]:
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    closes: Counter[int] = Counter()
    assert server.process is not None
    rss_before = rss_mib(server.process.pid)

    async def open_socket():
        ws = await connect(server.url, max_size=None)
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": "p",
                    "method": "create",
                    "params": {"type": "MediaPipeline"},
                }
            )
        )
        pipeline = json.loads(await ws.recv())["result"]["value"]
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": "e",
                    "method": "create",
                    "params": {
                        "type": "WebRtcEndpoint",
                        "constructorParams": {"mediaPipeline": pipeline},
                    },
                }
            )
        )
        endpoint = json.loads(await ws.recv())["result"]["value"]
        return ws, fuzz_seeds(pipeline, endpoint), [pipeline, endpoint]

    async def drain(ws) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                message = json.loads(text)
                if "error" in message:
                    outcomes[f"error {message['error'].get('code')}"] += 1
                elif "result" in message:
                    outcomes["result"] += 1

    ws, seeds, ids = await open_socket()
    reader = asyncio.create_task(drain(ws))
    for sent in range(args.requests):
        if rng.random() < 0.05:
            frame: str | bytes = raw_garbage(rng, sent)
        else:
            request = fuzz_request(rng, seeds, ids)
            roll = rng.random()
            if roll < 0.05:
                request["id"] = fuzz_values(rng, ids)  # an id that may be no id
            elif roll < 0.95:
                request["id"] = sent  # else a notification: no answer expected
            frame = json.dumps(request, allow_nan=True)
        try:
            await ws.send(sendable(frame))
        except ConnectionClosed:
            closes[ws.close_code or 1006] += 1
            await reader
            ws, seeds, ids = await open_socket()
            reader = asyncio.create_task(drain(ws))
        if sent % 40 == 39:
            await asyncio.sleep(0.1)  # 400 a second: under the server's rate limit (500/s)
    await asyncio.sleep(1)
    await ws.close()
    await reader
    rss_after = rss_mib(server.process.pid)
    await asyncio.sleep(8)  # session grace (1 s) and the collector's period
    pipelines, elements, sessions = await media_objects(server.url)
    return {
        "requests": args.requests,
        "closed_by_server": dict(closes),
        "answers": dict(outcomes.most_common()),
        "left_after_close": {
            "pipelines": pipelines,
            "elements": elements,
            "sessions_besides_the_asking_one": max(0, sessions - 1),
        },
        "mediaserver_rss_mib": {"before": round(rss_before), "after": round(rss_after)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sockets", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        # The fuzzers are fast, not floods: the rate limit is raised so that what they send is
        # handled, not dropped at the door (the flood limits are tested on their own).
        env = {"SIGNALING_RATE_PER_SECOND": "1000", "SIGNALING_RATE_BURST": "2000"}
        product = ProductServer(Path(tmp), extra_env=env)
        try:
            product.manage("migrate", "--noinput")
            out = product.manage("shell", "-c", SETUP.format(users=args.sockets + 1, rooms=1))
            setup = json.loads(out.split("SETUP ", 1)[1])
            product.start_media_server()
            product.serve()
            results["room_socket"] = asyncio.run(room_socket(product, setup, args))
        finally:
            product.stop()
        print(json.dumps({"room_socket": results["room_socket"]}, indent=2), flush=True)
        server = MediaServerProcess(Path(tmp), {}, "--session-grace", "1").start()
        try:
            results["kurento_socket"] = asyncio.run(kurento_socket(server, args))
        finally:
            server.stop()
        print(json.dumps({"kurento_socket": results["kurento_socket"]}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
