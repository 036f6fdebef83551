"""The Kurento clients of this process: one per media server URL and event loop.

Each client reconnects by itself and reports its connection's state changes; whoever must act
on them (signaling.media.healing) registers with `watch`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from django.conf import settings

from signaling.kurento import (
    ConnectionState,
    KurentoClient,
    KurentoError,
    MediaServerUnavailable,
    ObjectNotFound,
    ServerManager,
)

logger = logging.getLogger(__name__)

StateListener = Callable[[str, ConnectionState], Awaitable[None]]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, KurentoClient]] = (
    weakref.WeakKeyDictionary()
)
_listeners: list[StateListener] = []


def watch(listener: StateListener) -> None:
    """Call `listener(url, state)` on every connection state change of every client."""
    _listeners.append(listener)


def media_client(url: str) -> KurentoClient:
    """This event loop's client of the media server at `url` (it connects on first use)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        client = KurentoClient(
            url,
            request_timeout=settings.KMS_REQUEST_TIMEOUT,
            connect_timeout=settings.KMS_CONNECT_TIMEOUT,
            down_after=settings.KMS_FAILOVER_SECONDS,
        )
        for listener in _listeners:
            client.on_state(lambda state, listener=listener: listener(url, state))
        per_loop[url] = client
    return client


async def close_clients() -> None:
    """Close this event loop's clients (tests; process shutdown)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


async def server_for_new_room(*, avoid: str | None = None) -> str:
    """The least-loaded reachable media server of KMS_URLS (fewest pipelines; the first on a
    tie), other than `avoid` when another is reachable. Raises MediaServerUnavailable when
    none is reachable."""
    urls = list(settings.KMS_URLS)
    if len(urls) == 1:
        return urls[0]

    async def load(url: str) -> int | None:
        try:
            async with asyncio.timeout(settings.KMS_CONNECT_TIMEOUT):
                return len(await ServerManager(media_client(url)).get_pipelines())
        except (KurentoError, MediaServerUnavailable, TimeoutError) as error:
            logger.warning("media server %s skipped for a new room: %s", url, error)
            return None

    loads = await asyncio.gather(*(load(url) for url in urls))
    reachable = [
        (url == avoid, count, index)
        for index, (url, count) in enumerate(zip(urls, loads, strict=True))
        if count is not None
    ]
    if not reachable:
        raise MediaServerUnavailable("No media server of KMS_URLS is reachable.")
    return urls[min(reachable)[2]]


async def release_quietly(url: str, object_id: str) -> bool:
    """Release an object; True when it is gone (released now, or already gone)."""
    try:
        await media_client(url).release(object_id)
    except ObjectNotFound:
        return True
    except (KurentoError, MediaServerUnavailable) as error:
        logger.warning("could not release %s on %s: %s", object_id, url, error)
        return False
    return True
