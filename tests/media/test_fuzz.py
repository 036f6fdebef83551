"""Hostile input on the room socket, seeded and bounded: thousands of malformed, out-of-range,
oversized and misdirected messages from one participant, with media requests reaching the real
(in-process) media server, while another participant stays in the room.

Nothing may break: no message goes unanswered by a crash, the socket is never closed with 1011,
nothing is logged as an error, the bystander is unaffected, and once the fuzzer leaves nothing
of it remains (no ghost participant, no endpoint, no pipeline). Runs on SQLite, and again on
PostgreSQL and Redis in `make test`'s topology pass.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from rooms.models import Participant
from signaling.models import MediaEndpoint, RoomPipeline
from tests.mediaserver.peers import Peer

from .conftest import media_objects

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = 3000
SEED = 20261129
BIG = 2**63


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fuzzer:
    """Builds hostile messages from valid ones, reproducibly."""

    def __init__(self, seed: int, ids: list[int], offer: str) -> None:
        self.random = random.Random(seed)
        self.ids = ids
        self.offer = offer

    def value(self) -> Any:
        return self.random.choice(
            [
                None,
                True,
                -1,
                0,
                BIG,
                -BIG,
                2**200,
                1.5,
                float("1e308"),
                "",
                "x" * self.random.choice([1, 70, 5000, 70_000]),
                "\u202e\ud7ff\u0000",
                [],
                [1, [2, [3]]],
                {},
                {"candidate": 1},
                self.random.choice(self.ids),
                "publish",
            ]
        )

    def valid(self) -> dict[str, Any]:
        publisher = self.random.choice(self.ids)
        candidate = {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        return self.random.choice(
            [
                {"type": "ping"},
                {"type": "sync"},
                {"type": "publish", "sdp": self.offer},
                {"type": "unpublish"},
                {"type": "subscribe", "publisher": publisher, "sdp": self.offer},
                {"type": "unsubscribe", "publisher": publisher},
                {"type": "media_state", "audio": True, "video": False},
                {"type": "ice", "target": "publish", "candidate": candidate},
                {"type": "ice", "target": publisher, "candidate": candidate},
            ]
        )

    def message(self) -> str | bytes:
        kind = self.random.random()
        if kind < 0.05:
            return self.random.choice(
                ["", "null", "[]", "{", '{"type":', "[" * 5000 + "]" * 5000, "\ud800", "1e999"]
            )
        if kind < 0.08:
            return self.random.randbytes(self.random.randint(1, 64))
        message = self.valid()
        for _ in range(self.random.randint(0, 3)):
            action = self.random.random()
            if action < 0.4 and len(message) > 1:
                key = self.random.choice([k for k in message if k != "type"] or ["type"])
                message[key] = self.value()
            elif action < 0.55:
                message[self.random.choice(["id", "extra", "target", "sdp"])] = self.value()
            elif action < 0.7 and len(message) > 1:
                message.pop(self.random.choice(list(message)))
            elif action < 0.8 and "sdp" in message:
                message["sdp"] = "v=0\r\n" + self.random.choice(
                    ["garbage", "a=fingerprint:sha-256 00\r\n" * 50, self.offer[:200]]
                )
            elif action < 0.9 and isinstance(message.get("candidate"), dict):
                message["candidate"]["candidate"] = self.value()
            else:
                message["id"] = self.random.choice([1, "r", BIG, 2**53, -(2**53)])
        return json.dumps(message, allow_nan=True)


@override_settings(SIGNALING_RATE_BURST=100_000, SIGNALING_RATE_PER_SECOND=100_000)
@pytest.mark.topology
async def test_thousands_of_hostile_messages_break_nothing(
    kms, room_client, make_user, make_room, caplog
):
    caplog.set_level(logging.ERROR)
    ada, grace = (
        await sync_to_async(make_user)("fuzzada"),
        await sync_to_async(make_user)("fuzzgrace"),
    )
    room = await sync_to_async(make_room)(ada, "Fuzzed")
    bystander = await room_client(grace, room)
    grace_id = (await bystander.receive())["you"]
    fuzzer_socket = await room_client(ada, room)
    ada_id = (await fuzzer_socket.receive_until("snapshot"))["you"]
    peer = Peer(send=True, receive=False)
    try:
        offer = await peer.offer()
    finally:
        await peer.close()
    fuzzer = Fuzzer(SEED, [ada_id, grace_id, ada_id + 1000], offer)
    rss_before = _rss_mib()

    errors: dict[str, int] = {}
    for batch in range(MESSAGES // 50):
        for _ in range(50):
            frame = fuzzer.message()
            key = "bytes" if isinstance(frame, bytes) else "text"
            await fuzzer_socket.communicator.send_input({"type": "websocket.receive", key: frame})
        # Read what came back, until the server is quiet again.
        while not await fuzzer_socket.nothing_more(0.05 if batch % 10 else 0.3):
            output = await fuzzer_socket.communicator.receive_output(timeout=5)
            assert output["type"] == "websocket.send", f"the socket was closed: {output}"
            reply = json.loads(output["text"])
            if reply["type"] == "error":
                errors[reply["code"]] = errors.get(reply["code"], 0) + 1
    print(f"error replies by code: {dict(sorted(errors.items()))}")
    assert errors.get("invalid", 0) > MESSAGES // 4  # the fuzzer reached the validation
    assert "internal" not in errors

    # Still answering, and the bystander never noticed.
    await fuzzer_socket.send({"type": "ping", "id": "still"})
    assert (await fuzzer_socket.receive_until("pong", timeout=10))["id"] == "still"
    await bystander.send({"type": "ping", "id": "fine"})
    assert (await bystander.receive_until("pong"))["id"] == "fine"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ][:5]
    assert _rss_mib() - rss_before < 200, "memory grew without bound"

    # Once the fuzzer leaves, nothing of it remains.
    await fuzzer_socket.send({"type": "leave"})
    assert await fuzzer_socket.expect_close() == 4000
    connected = await sync_to_async(list)(
        Participant.objects.filter(state=Participant.State.CONNECTED).values_list("pk", flat=True)
    )
    assert connected == [grace_id]
    assert await sync_to_async(MediaEndpoint.objects.count)() == 0
    await bystander.send({"type": "leave"})
    await bystander.expect_close()
    assert media_objects(kms) == []
    assert await sync_to_async(RoomPipeline.objects.count)() == 0
