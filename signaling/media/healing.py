"""Healing rooms after the media server let them down.

Every worker's Kurento client reports its connection's state (signaling.media.clients):
- the media server forgot our session (it restarted): each room whose pipeline it no longer has
  is rebuilt at once, and its pages publish and subscribe afresh;
- the media server stayed unreachable for KMS_FAILOVER_SECONDS: with another media server
  configured, its rooms move there (rebuilt the same way; the old pipeline is released once its
  server is back); with none, the rooms are told their media is interrupted, and told again
  when the server is back with their media intact.

Workers hear the same news and act on the same rows: whatever they do is idempotent (a room is
rebuilt by one worker only), so any number of them can heal together.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from conference import metrics
from rooms import events
from signaling import protocol
from signaling.kurento import (
    ConnectionState,
    KurentoError,
    MediaServerUnavailable,
    ServerManager,
)
from signaling.media import clients, pipelines
from signaling.models import RoomPipeline

logger = logging.getLogger(__name__)

# Media servers this process told rooms about as interrupted (to tell them when it is back).
_interrupted: set[str] = set()


async def on_state(url: str, state: ConnectionState) -> None:
    match state:
        case ConnectionState.SESSION_LOST:
            metrics.MEDIA_SERVER_RECONNECTS.labels(server=url).inc()
            metrics.MEDIA_SERVER_SESSIONS_LOST.labels(server=url).inc()
            _interrupted.discard(url)
            await rebuild_lost_rooms(url)
        case ConnectionState.RESUMED:
            metrics.MEDIA_SERVER_RECONNECTS.labels(server=url).inc()
            if url in _interrupted:
                _interrupted.discard(url)
                await _tell_rooms(url, protocol.MediaRestored())
        case ConnectionState.DOWN:
            await media_server_down(url)


async def rebuild_lost_rooms(url: str) -> int:
    """Rebuild the rooms whose pipeline the media server at `url` no longer has."""
    # The records are read before the server is asked: a pipeline made after that question
    # (a healed room, on another worker) must not be taken for a lost one.
    records = await database_sync_to_async(pipelines.pipelines_on_sync)(url)
    client = clients.media_client(url)
    try:
        alive = set(await ServerManager(client).get_pipelines())
    except (KurentoError, MediaServerUnavailable) as error:
        logger.warning("cannot list the pipelines on %s to heal its rooms: %s", url, error)
        return 0
    # Events of the objects that are still there (a media server of several workers lost one)
    # keep coming to the new session; those of the objects that are gone never will.
    client.keep_subscriptions_of(alive)
    rebuilt = 0
    for record in records:
        if record.pipeline_id not in alive:
            rebuilt += await pipelines.rebuild_room(record, reason="session_lost")
    return rebuilt


async def media_server_down(url: str) -> int:
    """The media server at `url` stays away: move its rooms, or say they are interrupted."""
    records = await database_sync_to_async(pipelines.pipelines_on_sync)(url)
    others = [other for other in settings.KMS_URLS if other != url]
    if not others:
        _interrupted.add(url)
        await _tell_rooms(url, protocol.MediaInterrupted(), records)
        return 0
    moved = 0
    for record in records:
        moved += await pipelines.rebuild_room(record, reason="server_down", keep_for_release=True)
    return moved


async def _tell_rooms(
    url: str, message: protocol.ServerMessage, records: list[RoomPipeline] | None = None
) -> None:
    if records is None:
        records = await database_sync_to_async(pipelines.pipelines_on_sync)(url)
    for record in records:
        if record.room_id is not None:
            await events.apublish_room_event(record.room_id, message.payload())


clients.watch(on_state)
