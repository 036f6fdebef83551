"""Release media that departed participants left behind, from cron or a systemd timer.

Live workers sweep their own rooms whenever someone leaves or is reaped; this command also
covers rooms where nobody is left to notice (every worker of a room died) and pipelines of
deleted rooms or rooms moved off a lost media server. It reaps stale participants first.
"""

import asyncio

from django.core.management.base import BaseCommand

from rooms.services import participants_reap_stale
from signaling import media
from signaling.models import RoomPipeline


class Command(BaseCommand):
    help = "Reap stale participants, then release their media objects and empty rooms' pipelines."

    def handle(self, *args, **options):
        reaped = participants_reap_stale()
        room_ids = list(
            RoomPipeline.objects.filter(room__isnull=False).values_list("room_id", flat=True)
        )
        released = asyncio.run(_sweep(room_ids))
        self.stdout.write(
            f"Reaped {reaped} stale participant(s); released {released} media object(s)."
        )


async def _sweep(room_ids: list[int]) -> int:
    try:
        released = 0
        for room_id in room_ids:
            released += await media.sweep_room(room_id)
        return released + await media.sweep_orphans()
    finally:
        await media.close_clients()
