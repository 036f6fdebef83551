"""The browser client's words (static/js): Django's JavaScript catalog at /jsi18n/, served in the
request's language from locale/<lang>/LC_MESSAGES/djangojs.po; every string the page shows goes
through static/js/i18n.js (a static check), and the Korean catalog translates every one of them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import polib
import pytest
from django.core.management import call_command
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "static" / "js"
KOREAN = ROOT / "locale" / "ko" / "LC_MESSAGES" / "djangojs.po"
# The catalog's own wrappers, and the other side's module (it shows no words).
NOT_CHECKED = {"i18n.js", "timezone.js"}


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    """The .mo files are built, not kept in git: build them as deploys do."""
    call_command("compile_translations", verbosity=0)


# --- The catalog over HTTP -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_running_loop():
    """After a browser test in the same session, Playwright's loop is marked as running in this
    thread, and Django's test client (async_to_sync) refuses to run: clear the mark meanwhile."""
    loop = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)


def catalog(language: str) -> tuple[str, object]:
    response = Client().get("/jsi18n/", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    return response.content.decode(), response


def test_the_korean_catalog_has_the_clients_strings():
    text, response = catalog("ko-KR,ko;q=0.9")
    for korean in (
        "연결됨",
        "회의실에서 나갔습니다.",
        "카메라와 마이크가 차단되어 있습니다",
        "음소거됨",
    ):
        assert json.dumps(korean)[1:-1] in text, korean  # as the catalog's JSON writes it
    # Korean has one plural form: the catalog's plural rule says so, for ngettext.
    assert "const v = 0;" in text
    # Cacheable by browsers, and kept apart per language and cookie (the chosen language).
    assert "max-age=3600" in response["Cache-Control"]
    vary = {part.strip() for part in response["Vary"].split(",")}
    assert {"Accept-Language", "Cookie"} <= vary


def test_the_english_catalog_is_the_msgids_themselves():
    text, _ = catalog("en")
    for korean in ("연결됨", "회의실"):
        assert korean not in text and json.dumps(korean)[1:-1] not in text


@pytest.mark.django_db
def test_the_page_loads_the_catalog_before_its_modules(client, make_user):
    client.force_login(make_user("reader"))
    html = client.get("/rooms/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    catalog_at = html.index('<script src="/jsi18n/?l=ko"></script>')
    assert catalog_at < html.index('type="module"')


# --- The Korean catalog is complete and current ------------------------------------------------

CALL = re.compile(
    r"""\b(?P<kind>n?gettext|pgettext)\(\s*(?P<first>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"""(?:\s*,\s*(?P<second>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"))?"""
)


def js_messages() -> set[tuple[str | None, str]]:
    """(context, msgid) of every gettext, ngettext and pgettext call in static/js."""
    found = set()
    for path in sorted(JS.glob("*.js")):
        if path.name in NOT_CHECKED:
            continue
        for call in CALL.finditer(path.read_text(encoding="utf-8")):
            first = call["first"][1:-1].replace("\\'", "'")
            if call["kind"] == "pgettext":
                found.add((first, call["second"][1:-1].replace("\\'", "'")))
            else:
                found.add((None, first))
    return found


def test_every_string_of_the_client_is_in_the_korean_catalog_and_translated():
    po = polib.pofile(str(KOREAN))
    assert po.metadata["Plural-Forms"].startswith("nplurals=1; plural=0;")
    entries = {(e.msgctxt, e.msgid): e for e in po if not e.obsolete}
    missing = js_messages() - set(entries)
    assert not missing, f"run makemessages -l ko -d djangojs and translate: {sorted(missing)}"
    for entry in entries.values():
        assert "fuzzy" not in entry.flags, entry.msgid
        assert entry.translated(), entry.msgid
        # The same named placeholders: a translation cannot drop or invent a value.
        placeholders = set(re.findall(r"%\((\w+)\)s", entry.msgid))
        translations = entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]
        for translation in translations:
            assert set(re.findall(r"%\((\w+)\)s", translation)) == placeholders, entry.msgid


# --- Nothing user-visible is hard-coded in English in static/js --------------------------------

LITERAL = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`""")
# Where a string is shown to the person: assigned to the page's text, a title or a label, or
# handed to what shows a notice, a status line, a tile's state or an announcement.
SINK = re.compile(
    r"""(\.(textContent|innerText|title|placeholder|alt)\s*=[^;]*"""
    r"""|setAttribute\(\s*['"](aria-label|title|placeholder|alt|aria-description)['"]\s*,[^;]*"""
    r"""|\b(notice|showNotice|announce|setStatusQuietly|alert|confirm|Option)\([^;]*"""
    r"""|\b(setStatus|setState)\(\s*'[^']*'\s*,[^;]*"""
    r"""|\bel\(\s*'[^']*'\s*,\s*[^,]+,[^;]*)$"""
)
# Calls whose strings are fine as they are: translated ones (t: a module's table of them, by
# key), and messages for developers.
EXEMPT_CALL = re.compile(r"\b(n?gettext|pgettext|t|console\.\w+|Error)\(")
# Literals that only look like words: CSS selectors and class lists, markup, keys of a table.
SELECTOR_LIKE = re.compile(r"^[.#\[:]|--|__|=|^[a-z]+([A-Z][a-z]*)+$")
ALLOWED = {
    "noopener noreferrer nofollow",  # a link's rel
    "No reply from the server",  # a WebSocket close reason, never shown (room-socket.js)
}


def _exempt_spans(source: str) -> list[tuple[int, int]]:
    """The argument lists of translated calls and of developer messages."""
    spans = []
    for call in EXEMPT_CALL.finditer(source):
        depth, index = 0, call.end() - 1
        while index < len(source):
            literal = LITERAL.match(source, index)
            if literal:
                index = literal.end()
                continue
            depth += {"(": 1, ")": -1}.get(source[index], 0)
            if depth == 0:
                break
            index += 1
        spans.append((call.start(), index))
    return spans


def _without_comments(source: str) -> str:
    """Comments blanked (same length, so offsets hold): whole-line ones and trailing `// …`."""
    lines = []
    for line in source.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("//", "*", "/*")):
            line = " " * len(line)
        else:
            at = line.find(" // ")
            if at >= 0 and line[:at].count("'") % 2 == 0 and line[:at].count("`") % 2 == 0:
                line = line[:at] + " " * (len(line) - at)
        lines.append(line)
    return "\n".join(lines)


def untranslated(source: str) -> list[str]:
    """String literals in `source` that look shown to the person but skip the catalog."""
    source = _without_comments(source)
    exempt = _exempt_spans(source)
    found = []
    for literal in LITERAL.finditer(source):
        if any(start <= literal.start() < end for start, end in exempt):
            continue
        text = re.sub(r"\$\{[^}]*\}", "", literal.group()[1:-1])
        if text in ALLOWED or not re.search(r"[^\W\d_]", text):
            continue  # no letters: figures, punctuation, an emoji
        line_start = source.rfind("\n", 0, literal.start()) + 1
        before = source[line_start : literal.start()]
        if re.search(r"[!=]==?\s*$", before):
            continue  # compared with, not shown: `phase === 'ended' ? text : ''`
        shown = SINK.search(before)
        sentence = re.search(r"[^\W\d_]{2,}[,.:;!?…]? [^\W\d_(]", text)
        if (shown or sentence) and not SELECTOR_LIKE.search(text):
            found.append(literal.group())
    return found


@pytest.mark.parametrize(
    "source",
    [
        "node.textContent = 'Hello there';",
        "node.textContent = 'Hello';",
        "node.title = ready ? 'Ready' : `Waiting`;",
        "button.setAttribute('aria-label', `Pin ${name}`);",
        "this.notice('Your hand did not change.');",
        "setStatus('left', 'You left the room.');",
        "item.append(el('span', 'badge badge--muted', 'muted'));",
        "const TEXT = { stopped: 'Test stopped.' };",
        "line.textContent = '회의실';",
    ],
)
def test_the_static_check_catches_hard_coded_words(source):
    assert untranslated(source), source


@pytest.mark.parametrize(
    "source",
    [
        "node.textContent = gettext('Hello there');",
        "node.title = interpolate(gettext('Pin %(name)s'), { name });",
        "console.warn(`Could not switch the ${kind} device`, error);",
        "throw new Error(`HTTP ${response.status}`);",
        "const tile = stage.querySelector('.tile:not(.tile--screen)');",
        "el('span', 'badge badge--muted', gettext('muted'));",
        "mark.textContent = `✋ ${place}`;",
        "setStatus('connected', gettext('Connected'));",
        "// node.textContent = 'Only a comment';",
        "text = ngettext('%(count)s other', '%(count)s others', count);",
        "label = pgettext('ordinal, one', '%(n)sst');",
    ],
)
def test_the_static_check_lets_translated_and_code_strings_pass(source):
    assert untranslated(source) == [], source


@pytest.mark.parametrize(
    "path", sorted(p.name for p in JS.glob("*.js") if p.name not in NOT_CHECKED)
)
def test_no_user_visible_string_in_static_js_skips_the_catalog(path):
    assert untranslated((JS / path).read_text(encoding="utf-8")) == []
