"""`/healthz`: whether this web worker can serve rooms, for load balancers and monitoring.

It checks, in parallel and each within `CHECK_TIMEOUT` seconds:

- the database: `SELECT 1`;
- the channel layer: a message sent to a fresh channel of this process and received back (with
  channels-redis this goes through Redis);
- each media server: a Kurento Protocol `ping` through the product's own client, on a
  connection of its own (a ping creates no session and no media objects).

The answer is JSON, never cached: `status` is `ok`, `degraded` (a media server is unreachable:
rooms, presence and joining still work, only calls wait for it, so the worker stays in service:
HTTP 200) or `fail` (the database or the channel layer failed: the worker cannot serve rooms,
HTTP 503). docs/operations.md describes it for operators.

Load balancers probe each worker directly, by its address and over plain HTTP, so the check is
answered by `HealthCheckMiddleware`, first in MIDDLEWARE: before ALLOWED_HOSTS is enforced and
before the HTTPS redirect. It answers only GET and HEAD on exactly `/healthz`; it builds no URLs
from the Host header, so skipping that check opens nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from conference.early import EarlyAnswerMiddleware
from signaling.kurento import KurentoClient

PATH = "/healthz"
# Seconds each check may take; the checks run together, so the answer comes within about this.
CHECK_TIMEOUT = 2.0
_ERROR_CHARS = 300


def media_server_urls() -> list[str]:
    """The media servers this worker places rooms on."""
    return list(settings.KMS_URLS)


async def _timed(probe: Awaitable[Any]) -> dict[str, Any]:
    """Run one probe within CHECK_TIMEOUT: `ok`, `ms`, and `error` when it failed."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        error = (f"{type(exc).__name__}: {exc}")[:_ERROR_CHARS]
    else:
        error = None
    result: dict[str, Any] = {
        "ok": error is None,
        "ms": round((time.monotonic() - started) * 1000, 1),
    }
    if error is not None:
        result["error"] = error
    return result


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    if row is None or row[0] != 1:
        raise RuntimeError(f"SELECT 1 returned {row!r}")


async def check_database() -> dict[str, Any]:
    # The request's own database thread, so that Django closes (or pools) the connection after.
    return {"vendor": connection.vendor, **await _timed(sync_to_async(_select_one)())}


async def _channel_round_trip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    channel = await layer.new_channel()
    nonce = secrets.token_hex(8)
    await layer.send(channel, {"type": "health.probe", "nonce": nonce})
    message = await layer.receive(channel)
    if message.get("nonce") != nonce:
        raise RuntimeError("received another message than the one sent")


async def check_channel_layer() -> dict[str, Any]:
    backend = type(get_channel_layer()).__name__
    return {"backend": backend, **await _timed(_channel_round_trip())}


async def _ping(url: str) -> None:
    client = KurentoClient(url, request_timeout=CHECK_TIMEOUT, connect_timeout=CHECK_TIMEOUT)
    try:
        await client.request("ping", {"interval": int(CHECK_TIMEOUT * 1000)})
    finally:
        await client.close()


async def check_media_server(url: str) -> dict[str, Any]:
    return {"url": url, **await _timed(_ping(url))}


async def health() -> tuple[int, dict[str, Any]]:
    """Run every check; the HTTP status and the JSON body of the answer."""
    urls = media_server_urls()
    database, channel_layer, *media_servers = await asyncio.gather(
        check_database(),
        check_channel_layer(),
        *(check_media_server(url) for url in urls),
    )
    if not (database["ok"] and channel_layer["ok"]):
        status, code = "fail", 503
    elif not all(server["ok"] for server in media_servers):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body = {
        "status": status,
        "checks": {
            "database": database,
            "channel_layer": channel_layer,
            "media_servers": media_servers,
        },
    }
    return code, body


async def healthz(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    else:
        code, body = await health()
        response = JsonResponse(body, status=code)
    add_never_cache_headers(response)
    return response


class HealthCheckMiddleware(EarlyAnswerMiddleware):
    """Answers `/healthz` ahead of the rest of the middleware (see the module docstring)."""

    path = PATH

    async def answer(self, request: HttpRequest) -> HttpResponse:
        return await healthz(request)
