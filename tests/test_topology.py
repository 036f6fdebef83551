"""The suite runs twice in `make test`: on the defaults, then on PostgreSQL and channels-redis.

This checks that each run really uses the topology it claims, so a misconfigured second run
cannot pass by quietly testing SQLite again.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection

pytestmark = [pytest.mark.topology, pytest.mark.django_db]

EXPECTED = os.environ.get("CONFERENCE_TOPOLOGY", "default")


def test_database_and_channel_layer_are_the_expected_ones():
    layer = get_channel_layer()
    if EXPECTED == "production":
        assert connection.vendor == "postgresql"
        assert type(layer).__name__ == "RedisChannelLayer"
    else:
        assert connection.vendor == "sqlite"
        assert type(layer).__name__ == "InMemoryChannelLayer"


def test_channel_layer_carries_group_messages():
    layer = get_channel_layer()

    async def roundtrip() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("topology-check", channel)
        await layer.group_send("topology-check", {"type": "probe", "n": 1})
        message = await layer.receive(channel)
        await layer.group_discard("topology-check", channel)
        return message

    assert async_to_sync(roundtrip)() == {"type": "probe", "n": 1}


def test_an_idle_worker_still_receives_from_redis():
    """A worker that gets no message for longer than channels-redis's blocking pop (5 s) still
    receives the next one. With redis-py 8's default 5 s read timeout the pop's read timed out
    instead, and took down every WebSocket of a quiet worker (conference/settings.py)."""
    layer = get_channel_layer()
    # The in-memory layer has no such wait; the same idle receive must work there too.
    idle = getattr(layer, "brpop_timeout", 5) + 1.5

    async def idle_then_receive() -> dict:
        channel = await layer.new_channel()
        receiving = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(idle)
        assert not receiving.done(), receiving.exception()
        await layer.send(channel, {"type": "probe"})
        return await asyncio.wait_for(receiving, 5)

    assert async_to_sync(idle_then_receive)() == {"type": "probe"}
