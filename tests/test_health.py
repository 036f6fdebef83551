"""/healthz (conference/health.py): what a load balancer sees when each part works or fails.

The database, channel layer and media server are real where the test can have them real: the
topology-marked test runs through the ASGI application against the embedded media server in this
process, and again on PostgreSQL and Redis in the production-topology pass. Failures are real
too (a closed port for Redis and the media server) except the database's, which is made to fail
at the connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from unittest import mock

import pytest
from channels.layers import channel_layers
from channels.testing import HttpCommunicator
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from conference import health
from mediaserver.config import Config
from mediaserver.server import MediaServer

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def media_server() -> AsyncIterator[MediaServer]:
    server = MediaServer(Config(port=0))
    await server.start()
    yield server
    await server.stop()


async def get_healthz(host: bytes = b"testserver", method: str = "GET") -> tuple[int, dict, dict]:
    """GET /healthz through the ASGI application daphne serves."""
    from conference.asgi import application

    communicator = HttpCommunicator(application, method, "/healthz", headers=[(b"host", host)])
    response = await communicator.get_response(timeout=10)
    headers = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    body = json.loads(response["body"]) if response["body"] else {}
    return response["status"], headers, body


@pytest.mark.topology
async def test_all_parts_reachable_is_ok(media_server, settings):
    settings.KMS_URLS = [media_server.url]
    status, headers, body = await get_healthz()
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert "no-store" in headers["cache-control"]
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"]["ok"] and checks["database"]["ms"] < 2000
    assert checks["channel_layer"]["ok"] and checks["channel_layer"]["ms"] < 2000
    assert checks["media_servers"] == [
        {"url": media_server.url, "ok": True, "ms": checks["media_servers"][0]["ms"]}
    ]
    # The answer reports the parts this run really uses (SQLite or PostgreSQL, memory or Redis).
    from django.db import connection

    assert checks["database"]["vendor"] == connection.vendor
    assert checks["channel_layer"]["backend"] == type(channel_layers["default"]).__name__
    # A ping opens no session: the probe leaves nothing behind on the media server.
    assert media_server.sessions.ids() == []


async def test_a_media_server_down_is_degraded_but_still_in_service(media_server, settings):
    down = f"ws://127.0.0.1:{closed_port()}/kurento"
    settings.KMS_URLS = [down, media_server.url]
    status, _, body = await get_healthz()
    assert status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] and body["checks"]["channel_layer"]["ok"]
    failed, working = body["checks"]["media_servers"]
    assert failed["url"] == down and failed["ok"] is False
    assert "Cannot reach the media server" in failed["error"] and failed["ms"] < 2500
    assert working["url"] == media_server.url and working["ok"] is True


async def test_database_down_fails(settings):
    settings.KMS_URLS = [f"ws://127.0.0.1:{closed_port()}/kurento"]
    refused = OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", side_effect=refused):
        status, _, body = await get_healthz()
    assert status == 503
    assert body["status"] == "fail"
    database = body["checks"]["database"]
    assert database["ok"] is False and "Connection refused" in database["error"]
    assert body["checks"]["channel_layer"]["ok"] is True


async def test_channel_layer_down_fails(settings):
    settings.KMS_URLS = [f"ws://127.0.0.1:{closed_port()}/kurento"]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    channel_layers.backends.clear()
    status, _, body = await get_healthz()
    assert status == 503
    assert body["status"] == "fail"
    layer = body["checks"]["channel_layer"]
    assert layer["backend"] == "RedisChannelLayer"
    assert layer["ok"] is False and layer["error"]
    assert body["checks"]["database"]["ok"] is True


async def test_a_check_that_hangs_is_cut_off(settings, monkeypatch):
    """Each check is bounded: a channel layer that never delivers fails after CHECK_TIMEOUT."""
    settings.KMS_URLS = [f"ws://127.0.0.1:{closed_port()}/kurento"]
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.3)
    layer = channel_layers["default"]

    async def lost(channel: str, message: dict) -> None:
        return None

    monkeypatch.setattr(layer, "send", lost)
    status, _, body = await get_healthz()
    assert status == 503
    assert body["checks"]["channel_layer"]["error"] == "no answer within 0.3 s"
    assert body["checks"]["channel_layer"]["ms"] < 1000


def test_load_balancers_reach_it_by_address_over_plain_http(client, settings):
    """A probe by IP address, over HTTP, on a production configuration: no 400 for the Host,
    no redirect to HTTPS; other pages keep both rules. Only GET and HEAD are answered."""
    settings.KMS_URLS = [f"ws://127.0.0.1:{closed_port()}/kurento"]
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["meet.example.org"]
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert client.head("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.post("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 405
    assert client.get("/", HTTP_HOST="10.0.0.7:8000").status_code == 400
    assert client.get("/", HTTP_HOST="meet.example.org").status_code == 301
