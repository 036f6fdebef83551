"""Record connections whose daphne worker died as dropped, and tell their rooms.

Live workers do this for their own rooms on every heartbeat; this command also covers rooms
where nobody is left to notice. Run it from cron or a systemd timer (see docs/operations.md).
"""

from django.core.management.base import BaseCommand

from rooms.services import participants_reap_stale


class Command(BaseCommand):
    help = "Mark participants not seen for PRESENCE_STALE_SECONDS as dropped."

    def handle(self, *args, **options):
        reaped = participants_reap_stale()
        self.stdout.write(f"Reaped {reaped} stale participant(s).")
