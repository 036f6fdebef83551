"""`make run`'s launcher: the embedded media server and daphne start together and stop together;
and `make run` itself serves the product without DEBUG, with the product's own error pages."""

from __future__ import annotations

import http.cookiejar
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import require
from tests.live import ROOT, free_port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _launch(*args: str, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("KMS_URL", "KMS_URLS")}
    environment |= {"DEBUG": "true", "DATABASE_URL": "sqlite:///:memory:", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "conference.devserver", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_ctrl_c_stops_the_media_server_and_daphne():
    web, media = free_port(), free_port()
    process = _launch("--port", str(web), "--media-port", str(media))
    try:
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Conference is running" in line:
                break
        assert any(f"Media server ready at ws://127.0.0.1:{media}/kurento" in x for x in lines)
        deadline = time.monotonic() + 30
        while not (_listening(web) and _listening(media)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listening(web) and _listening(media)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert not _listening(web) and not _listening(media)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_busy_media_port_is_reported():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _launch("--port", str(free_port()), "--media-port", str(port))
        output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert f"is port {port} taken" in output


# What the test run puts into the environment, and what a person's shell would not have: `make
# run` must work from its own defaults (a nested make would also inherit MAKEFLAGS).
_NOT_FROM_A_SHELL = {
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "WHITENOISE_USE_FINDERS",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
    "STATIC_ROOT",
    "DATABASE_URL",
    "REDIS_URL",
    "CHANNEL_LAYER_PREFIX",
    "CONFERENCE_TOPOLOGY",
    "KMS_URL",
    "KMS_URLS",
    "LOG_LEVEL",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
}


class _Lines:
    """A process's output, read by a thread, so that waiting for a line has a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"exited before {text!r}:\n{self.text}")
            self.seen.append(line)

    @property
    def text(self) -> str:
        return "".join(self.seen)


def _get(opener: urllib.request.OpenerDirector, url: str, data: dict | None = None):
    """(status, body, final url) of a request; error statuses are answers, not exceptions."""
    body = None if data is None else urllib.parse.urlencode(data).encode()
    try:
        with opener.open(url, data=body, timeout=15) as response:
            return response.status, response.read().decode(), response.url
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(), url


def test_make_run_serves_the_products_error_pages_without_debug(tmp_path: Path):
    """`make run` as a person types it (no DEBUG, no SECRET_KEY in the environment), on its own
    database, static folder and key file: it makes a secret key once and keeps it private, prints
    the URL and the admin's password, serves hashed static files, lets the admin log in over
    plain http, and answers a missing room with the product's 404 page, not Django's."""
    make = shutil.which("make")
    require(make is not None, "make")
    web, media = free_port(), free_port()
    key_file = tmp_path / "secret_key"
    environment = {k: v for k, v in os.environ.items() if k not in _NOT_FROM_A_SHELL}
    environment |= {
        # Where a checkout's own run keeps its state, the test uses its temporary folder.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    process = subprocess.Popen(
        [
            *(str(make), "--no-print-directory", "-o", ".venv/.installed", "run"),
            *(f"PORT={web}", f"MEDIA_PORT={media}", f"SECRET_KEY_FILE={key_file}"),
            # This interpreter's environment is the product's (.venv under `make test`).
            f"BIN={Path(sys.executable).parent}",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it: Ctrl-C below
    )
    try:
        output = _Lines(process)
        output.until("Conference is running", timeout=180)
        assert f"Conference is running at http://127.0.0.1:{web}/" in output.text
        assert "DEBUG is on" not in output.text
        login = re.search(
            rf"Log in at http://127\.0\.0\.1:{web}/accounts/login/ as 'admin' "
            r"with password: (\S+)",
            output.text,
        )
        assert login, output.text
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert len(key_file.read_text().strip()) >= 50
        deadline = time.monotonic() + 30
        while not _listening(web) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listening(web), output.text

        site = f"http://127.0.0.1:{web}"
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # loopback only, whatever the environment says
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )
        status, page, _ = _get(opener, f"{site}/")
        assert status == 200
        stylesheet = re.search(r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', page)
        assert stylesheet, "the page links the hashed stylesheet that collectstatic made"
        status, css, _ = _get(opener, site + stylesheet.group(1))
        assert status == 200 and ".error-page" in css

        status, page, _ = _get(opener, f"{site}/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert status == 200 and token
        # The cookie jar sends Secure cookies over https only: logging in over plain http works
        # only because `make run` turns secure-only cookies off.
        status, page, where = _get(
            opener,
            f"{site}/accounts/login/",
            {"csrfmiddlewaretoken": token.group(1), "username": "admin", "password": login[1]},
        )
        assert (status, where) == (200, f"{site}/rooms/"), page

        status, page, _ = _get(opener, f"{site}/rooms/no-such-room-xyz/")
        assert status == 404
        assert 'data-error="404"' in page and "Page not found" in page
        assert '<a class="button button--primary" href="/rooms/">Back to rooms</a>' in page
        for technical in ("Using the URLconf", "DEBUG = True", "Traceback"):
            assert technical not in page
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert not _listening(web) and not _listening(media)
