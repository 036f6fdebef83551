"""The suite runs twice in `make test`: on the defaults, then on PostgreSQL and channels-redis.

This checks that each run really uses the topology it claims, so a misconfigured second run
cannot pass by quietly testing SQLite again.
"""

from __future__ import annotations

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
