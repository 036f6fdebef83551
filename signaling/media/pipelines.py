"""Each room's MediaPipeline: made on the room's first media request, forgotten when the media
server lost it, moved when its media server stays away.

No lock is held across a media server round trip: a worker that finds no pipeline creates one,
then records it; the room's unique pipeline row makes the loser of a race release its own and
use the winner's. One pipeline per room, across any number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction

from conference import metrics
from rooms import events
from rooms.models import Room
from signaling import protocol
from signaling.kurento import MediaPipeline, ObjectNotFound, create_pipeline
from signaling.media import clients
from signaling.media.errors import MediaError
from signaling.models import MediaEndpoint, RoomPipeline

logger = logging.getLogger(__name__)

E = TypeVar("E")  # the media element a caller creates


def _pipeline_of_sync(room_id: int) -> RoomPipeline | None:
    return RoomPipeline.objects.filter(room_id=room_id).first()


def _record_sync(room_id: int, url: str, pipeline_id: str) -> tuple[RoomPipeline | None, bool]:
    """Record a new pipeline for the room: (the room's pipeline, whether it is the new one).
    (None, False) when the room no longer exists."""
    try:
        with transaction.atomic():
            if not Room.objects.filter(pk=room_id).exists():
                return None, False
            record = RoomPipeline.objects.create(
                room_id=room_id, server_url=url, pipeline_id=pipeline_id
            )
            return record, True
    except IntegrityError:  # another worker recorded the room's pipeline first
        return RoomPipeline.objects.filter(room_id=room_id).first(), False


async def room_pipeline(room_id: int, known: RoomPipeline | None = None) -> RoomPipeline:
    """The room's pipeline record, creating the pipeline if the room has none."""
    record = known or await database_sync_to_async(_pipeline_of_sync)(room_id)
    while record is None:
        url = await clients.server_for_new_room()
        pipeline = await create_pipeline(clients.media_client(url))
        record, created = await database_sync_to_async(_record_sync)(room_id, url, pipeline.id)
        if created:
            logger.info("room %s: pipeline %s created on %s", room_id, pipeline.id, url)
            break
        await clients.release_quietly(url, pipeline.id)
        if record is None:
            raise MediaError("not_found", "This room no longer exists.")
    return record


async def create_in_room(
    room_id: int,
    known: RoomPipeline | None,
    create: Callable[[MediaPipeline], Awaitable[E]],
) -> tuple[RoomPipeline, E]:
    """Create a media element in the room's pipeline with `create`; a pipeline the media
    server lost is rebuilt once (the room is told, see rebuild_room) and the element made in
    the new one."""
    record = known
    for attempt in (1, 2):
        record = await room_pipeline(room_id, record)
        pipeline = MediaPipeline(clients.media_client(record.server_url), record.pipeline_id)
        try:
            return record, await create(pipeline)
        except ObjectNotFound:
            if attempt == 2:
                raise
            await rebuild_room(record, reason="pipeline_gone")
            record = None
    raise AssertionError("unreachable")


def _forget_sync(record_id: int, pipeline_id: str) -> bool:
    """The media server lost this pipeline: drop its record and its endpoints' (cascade)."""
    deleted, _ = RoomPipeline.objects.filter(pk=record_id, pipeline_id=pipeline_id).delete()
    return deleted > 0


def _orphan_sync(record_id: int, pipeline_id: str) -> bool:
    """Detach the pipeline from its room, to be released once its server is back (an orphan,
    see signaling.media.sweeping.sweep_orphans); its endpoints are forgotten now."""
    with transaction.atomic():
        moved = RoomPipeline.objects.filter(
            pk=record_id, pipeline_id=pipeline_id, room__isnull=False
        ).update(room=None)
        if moved:
            MediaEndpoint.objects.filter(pipeline_id=record_id).delete()
    return moved > 0


async def rebuild_room(
    record: RoomPipeline, *, reason: str, keep_for_release: bool = False
) -> bool:
    """The room's media is gone (`reason`: session_lost, server_down, pipeline_gone): forget
    it and tell the room, whose pages then publish and subscribe afresh (a new pipeline is made
    on the first request, on a reachable server). Only the first caller, on any worker, does
    so: returns whether this one did.

    `keep_for_release`: the media server may still hold the pipeline (it is unreachable, not
    restarted), so it is kept as an orphan and released when the server is back.
    """
    room_id = record.room_id
    forget = _orphan_sync if keep_for_release else _forget_sync
    if room_id is None or not await database_sync_to_async(forget)(record.pk, record.pipeline_id):
        return False
    logger.warning(
        "room %s: media rebuilt (%s); pipeline %s on %s given up",
        room_id,
        reason,
        record.pipeline_id,
        record.server_url,
    )
    metrics.ROOM_MEDIA_REBUILDS.labels(reason=reason).inc()
    await events.apublish_room_event(room_id, protocol.MediaReset(reason=reason).payload())
    return True


def pipelines_on_sync(url: str) -> list[RoomPipeline]:
    """The pipelines of rooms that live on the media server at `url`."""
    return list(RoomPipeline.objects.filter(server_url=url, room__isnull=False))
