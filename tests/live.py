"""The product as an operator runs it, for end-to-end tests: migrate, collectstatic, daphne, and
the embedded media server.

`ProductServer` runs `manage.py compile_translations`, `migrate` and `collectstatic`, then
starts the media server (`python -m mediaserver`, unless KMS_URL is given) and daphne, in
subprocesses with production-like settings (DEBUG off, the real conference.settings) on a fresh
SQLite file and a free port, and stops them again. `worker()` adds another daphne process on
another port, sharing the first one's environment and media server. Tests talk to it only over
HTTP and WebSocket, as browsers do. `MediaServerProcess` is one embedded media server process
that a test may kill (SIGKILL) and start again on the same port.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import signal
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


class MediaServerProcess:
    """`python -m mediaserver` on a port of its own, which survives kill() and start()."""

    def __init__(self, log_dir: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/kurento"
        self.log_path = log_dir / f"mediaserver-{self.port}.log"
        self.env = env
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MediaServerProcess:
        """Start the server and return once it listens. Its worker processes: the `--workers`
        among the arguments, else MEDIASERVER_TEST_WORKERS of the test run's environment, else
        2: a front and two workers, as `make run` starts it on a two-core machine (and the
        same whatever the machine running the tests has)."""
        command = [sys.executable, "-m", "mediaserver", "--host", "127.0.0.1"]
        if "--workers" not in self.args:
            command += ["--workers", os.environ.get("MEDIASERVER_TEST_WORKERS", "2")]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_listening(self.port, self.process, "the media server")
        return self

    def kill(self) -> None:
        """SIGKILL: the process dies with every media object it held, and says nothing."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=5)

    def stop(self) -> None:
        _stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_of(self, pipeline_id: str) -> int:
        """The pid of the worker process holding the pipeline (`--workers` above 1), from the
        line the front logs when it places a pipeline."""
        pattern = rf"pipeline {re.escape(pipeline_id)} on worker \d+ \(pid (\d+)\)"
        match = re.search(pattern, self.log())
        if match is None:
            raise LookupError(f"no worker holds {pipeline_id} (is --workers above 1?)")
        return int(match.group(1))

    def kill_worker(self, pipeline_id: str) -> int:
        """SIGKILL the worker holding the pipeline (the front lives on); returns its pid."""
        pid = self.worker_of(pipeline_id)
        os.kill(pid, signal.SIGKILL)
        return pid


class ProductServer:
    def __init__(
        self,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        media_args: tuple[str, ...] = (),
    ) -> None:
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
            "RECORDINGS_DIR": str(workdir / "recordings"),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.media: MediaServerProcess | None = None
        self.media_url = self.env.get("KMS_URL", "")
        self.media_args = media_args  # flags for the media server start() starts

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
        self.manage("compile_translations", "--verbosity", "0")
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")
        if not self.media_url:
            self.start_media_server(*self.media_args)
        return self.serve()

    def start_media_server(self, *args: str) -> None:
        recordings = ("--recordings-dir", self.env["RECORDINGS_DIR"])
        self.media = MediaServerProcess(self.log_path.parent, self.env, *recordings, *args).start()
        self.media_url = self.env["KMS_URL"] = self.media.url

    @property
    def media_process(self) -> subprocess.Popen[bytes] | None:
        return None if self.media is None else self.media.process

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
        other.process = other.media = None
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

    def terminate(self) -> None:
        """SIGTERM daphne, as a service manager stops it, and wait until it exited."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=15)

    def stop(self) -> None:
        _stop(self.process)
        if self.media is not None:
            self.media.stop()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
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
