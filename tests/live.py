"""The product as an operator runs it, for end-to-end tests: migrate, collectstatic, daphne, and
the embedded media server.

`ProductServer` runs `manage.py migrate` and `collectstatic`, then starts the media server
(`python -m mediaserver`, unless KMS_URL is given) and daphne, in
subprocesses with production-like settings (DEBUG off, the real conference.settings) on a fresh
SQLite file and a free port, and stops them again. `worker()` adds another daphne process on
another port, sharing the first one's environment and media server. Tests talk to it only over
HTTP and WebSocket, as browsers do.
"""

from __future__ import annotations

import copy
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProductServer:
    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"daphne-{self.port}.log"
        keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}
        self.env = {
            **{k: v for k, v in os.environ.items() if k in keep},
            "DJANGO_SETTINGS_MODULE": "conference.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{workdir / 'product.sqlite3'}",
            "STATIC_ROOT": str(workdir / "static"),
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "PRESENCE_HEARTBEAT_SECONDS": "2",
            "PRESENCE_STALE_SECONDS": "8",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.media_process: subprocess.Popen[bytes] | None = None
        self.media_url = self.env.get("KMS_URL", "")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def start(self) -> ProductServer:
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")
        if not self.media_url:
            self.start_media_server()
        return self.serve()

    def start_media_server(self) -> None:
        port = free_port()
        log = self.log_path.with_name(f"mediaserver-{port}.log").open("ab")
        self.media_process = subprocess.Popen(
            [sys.executable, "-m", "mediaserver", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_listening(port, self.media_process, "the media server")
        self.media_url = self.env["KMS_URL"] = f"ws://127.0.0.1:{port}/kurento"

    def worker(self) -> ProductServer:
        """Another daphne worker of this product, not started yet (call `serve`): the same
        environment (database, channel layer, secret key, media server) on a port of its own.

        Its `stop` stops only its own daphne. Several workers need a database and a channel
        layer that processes share (PostgreSQL and channels-redis: `extra_env`)."""
        assert self.media_url, "start() this server first: the workers share its media server"
        other = copy.copy(self)
        other.port = free_port()
        other.url = f"http://127.0.0.1:{other.port}"
        other.log_path = self.log_path.with_name(f"daphne-{other.port}.log")
        other.env = dict(self.env)
        other.process = other.media_process = None
        return other

    def serve(self) -> ProductServer:
        """Start daphne on this server's port (again, after `crash`)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)),
                "conference.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not listen within 30 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def crash(self) -> None:
        """SIGKILL daphne: no disconnect handler runs, as when a worker dies."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=5)

    def stop(self) -> None:
        for process in (self.process, self.media_process):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")
