"""Releasing what participants held, however they left: the endpoints of everyone no longer
connected (and the receiving endpoints others held for them, and the recorders of their
streams), each room's pipeline once it is empty (its recording stopped first), and the
pipelines of deleted rooms or rooms moved off a lost media server (orphans)."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import Q

from rooms.models import Participant, Room
from signaling.media import clients, recording
from signaling.models import MediaEndpoint, RoomPipeline

logger = logging.getLogger(__name__)

CONNECTED = Participant.State.CONNECTED


def _stale_rows_sync(room_id: int) -> list[MediaEndpoint]:
    """Endpoints in the room whose owner or publisher is no longer connected."""
    gone = ~Q(owner__state=CONNECTED) | (
        Q(publisher__isnull=False) & ~Q(publisher__state=CONNECTED)
    )
    return list(
        MediaEndpoint.objects.select_related("pipeline").filter(gone, pipeline__room_id=room_id)
    )


def _take_pipeline_if_empty_sync(room_id: int) -> RoomPipeline | None:
    """Detach the room's pipeline when nobody is connected; the caller releases it."""
    with transaction.atomic():
        Room.objects.select_for_update().filter(pk=room_id).first()
        record = RoomPipeline.objects.filter(room_id=room_id).first()
        if record is None:
            return None
        if Participant.objects.filter(room_id=room_id, state=CONNECTED).exists():
            return None
        record.delete()
    return record


def _restore_as_orphan_sync(record: RoomPipeline) -> None:
    record.pk = None
    record.room_id = None  # an orphan: sweep_orphans retries it
    record.save()


async def sweep_departed(room_id: int) -> int:
    """Release the endpoints of the room's departed participants, and those others held for
    them (their recorders' files are finished first). Returns the endpoints released."""
    released = await recording.finish_departed(room_id)
    for row in await database_sync_to_async(_stale_rows_sync)(room_id):
        if await clients.release_quietly(row.pipeline.server_url, row.endpoint_id):
            await database_sync_to_async(MediaEndpoint.objects.filter(pk=row.pk).delete)()
            released += 1
    return released


async def sweep_room(room_id: int) -> int:
    """Release what departed participants held in the room, and the pipeline once it is empty.

    Safe to call any time, from any worker, as often as needed. Returns the objects released.
    """
    released = await sweep_departed(room_id)
    await recording.stop_if_empty(room_id)  # before the pipeline, with its recorders, goes
    record = await database_sync_to_async(_take_pipeline_if_empty_sync)(room_id)
    if record is not None:
        if await clients.release_quietly(record.server_url, record.pipeline_id):
            released += 1
            logger.info("room %s is empty: pipeline %s released", room_id, record.pipeline_id)
        else:  # keep the record so that a later sweep retries
            await database_sync_to_async(_restore_as_orphan_sync)(record)
    return released


def _orphans_sync() -> list[RoomPipeline]:
    return list(RoomPipeline.objects.filter(room__isnull=True))


async def sweep_orphans() -> int:
    """Release pipelines whose room was deleted or moved away (or whose release failed)."""
    released = 0
    for record in await database_sync_to_async(_orphans_sync)():
        if await clients.release_quietly(record.server_url, record.pipeline_id):
            await database_sync_to_async(RoomPipeline.objects.filter(pk=record.pk).delete)()
            released += 1
    return released
