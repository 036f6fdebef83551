"""Compose the recordings a worker stopped but did not finish composing (it died meanwhile)."""

from django.core.management.base import BaseCommand

from rooms import composer


class Command(BaseCommand):
    help = (
        "Compose every recording left 'being prepared' by a web worker that stopped. "
        "Run it when no worker is composing (e.g. after a deploy)."
    )

    def handle(self, *args: object, **options: object) -> None:
        count = composer.compose_pending()
        self.stdout.write(f"{count} recording(s) composed.")
