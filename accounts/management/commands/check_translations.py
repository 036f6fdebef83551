"""Fail when a string marked for translation is missing from a catalog, or is untranslated or
fuzzy there: `makemessages` runs over a copy of the locale directory (the committed catalogs stay
untouched), for the server's domain (django) and the browser's (djangojs), and every entry it
leaves without a finished translation is listed. Needs GNU gettext (xgettext, msgmerge): without
it the check is skipped with a notice, and fails under CI=true."""

import os
import shutil
import tempfile
from pathlib import Path

import polib
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

DOMAINS = ("django", "djangojs")
# Top-level folders of the project with no strings people read (or copies of them).
NOT_SCANNED = {
    "locale",
    "tests",
    "bench",
    "deploy",
    "docs",
    "staticfiles",
    "build",
    "node_modules",
    "test-artifacts",
}


def _scan_tree(source: Path, target: Path) -> None:
    """A tree of symlinks to what makemessages should read: `source`'s top-level entries but
    the hidden ones (.venv, .git), the NOT_SCANNED folders and build metadata."""
    target.mkdir()
    for entry in sorted(source.iterdir()):
        if entry.name.startswith(".") or entry.name in NOT_SCANNED:
            continue
        if entry.name.endswith(".egg-info"):
            continue
        (target / entry.name).symlink_to(entry.resolve())


def missing_translations(*, source_dir: Path, locale_dir: Path, language: str) -> list[str]:
    """The entries of each domain's catalog for `language` that lack a finished translation
    once makemessages has added every string now marked in `source_dir`; as `domain: msgid`."""
    missing = []
    with tempfile.TemporaryDirectory(prefix="check-translations-") as temporary:
        work = Path(temporary)
        scanned = work / "source"
        _scan_tree(source_dir, scanned)
        locale_copy = work / "locale"
        if locale_dir.is_dir():
            shutil.copytree(locale_dir, locale_copy)
        else:
            locale_copy.mkdir()
        previous = Path.cwd()
        os.chdir(scanned)
        try:
            with override_settings(LOCALE_PATHS=[str(locale_copy)]):
                for domain in DOMAINS:
                    call_command(
                        "makemessages",
                        locale=[language],
                        domain=domain,
                        symlinks=True,
                        verbosity=0,
                    )
        finally:
            os.chdir(previous)
        for domain in DOMAINS:
            po_path = locale_copy / language / "LC_MESSAGES" / f"{domain}.po"
            if not po_path.exists():
                continue  # nothing marked in this domain
            for entry in polib.pofile(str(po_path)):
                if entry.obsolete or (entry.translated() and "fuzzy" not in entry.flags):
                    continue
                context = f"[{entry.msgctxt}] " if entry.msgctxt else ""
                missing.append(f"{domain}: {context}{entry.msgid}")
    return missing


class Command(BaseCommand):
    help = "Fail when a string marked for translation has no finished translation in a catalog."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--source-dir", default=str(settings.BASE_DIR))
        parser.add_argument("--locale-dir", default=str(settings.LOCALE_PATHS[0]))
        languages = [code for code, _name in settings.LANGUAGES if code != "en"]
        parser.add_argument("--language", action="append", dest="languages")
        parser.set_defaults(languages=None, all_languages=languages)

    def handle(self, *args, **options) -> None:
        if shutil.which("xgettext") is None or shutil.which("msgmerge") is None:
            message = "GNU gettext (xgettext, msgmerge) is missing: translations not checked."
            if os.environ.get("CI"):
                raise CommandError(message)
            self.stdout.write(f"NOTICE: {message} Install the Debian package gettext.")
            return
        failures = []
        for language in options["languages"] or options["all_languages"]:
            for item in missing_translations(
                source_dir=Path(options["source_dir"]),
                locale_dir=Path(options["locale_dir"]),
                language=language,
            ):
                failures.append(f"  {language} {item}")
        if failures:
            raise CommandError(
                "Strings marked for translation without a finished translation "
                "(run makemessages, translate, then compile_translations):\n" + "\n".join(failures)
            )
        self.stdout.write("translations complete")
