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
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from rooms.models import Participant
from signaling.models import MediaEndpoint, RoomPipeline
from tests.fuzzing import Fuzzer
from tests.mediaserver.peers import Peer

from .conftest import media_objects

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = 3000
SEED = 20261129


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
