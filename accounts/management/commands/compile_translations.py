"""Compile every catalog under LOCALE_PATHS (locale/<lang>/LC_MESSAGES/*.po) into the .mo beside
it, in pure Python (polib), so a machine without GNU gettext can run the product. A .mo whose
content would not change is left alone."""

from pathlib import Path

import polib
from django.conf import settings
from django.core.management.base import BaseCommand


def compile_catalogs(locale_dirs: list[Path]) -> list[Path]:
    """Write the .mo of each .po under `locale_dirs`; return those written (not the unchanged)."""
    written = []
    for locale_dir in locale_dirs:
        for po_path in sorted(Path(locale_dir).glob("*/LC_MESSAGES/*.po")):
            mo_path = po_path.with_suffix(".mo")
            compiled = polib.pofile(str(po_path)).to_binary()
            if mo_path.exists() and mo_path.read_bytes() == compiled:
                continue
            mo_path.write_bytes(compiled)
            written.append(mo_path)
    return written


class Command(BaseCommand):
    help = "Compile the translation catalogs (.po) under LOCALE_PATHS into .mo files."

    def handle(self, *args, **options) -> None:
        written = compile_catalogs([Path(path) for path in settings.LOCALE_PATHS])
        for path in written:
            self.stdout.write(f"compiled {path}")
        if options["verbosity"] >= 1 and not written:
            self.stdout.write("translations up to date")
