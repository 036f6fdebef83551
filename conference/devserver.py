"""`make run`'s last step: the embedded media server and daphne together, stopped together.

    python -m conference.devserver --host 127.0.0.1 --port 8000 --media-port 8888

Without KMS_URL or KMS_URLS in the environment it starts `python -m mediaserver` on 127.0.0.1,
waits for its readiness line, and points the product at it; with either set it uses those.
Ctrl-C (SIGINT) or SIGTERM stops both; if either one exits, the other is stopped too.

The settings come from the environment, as for any run: `make run` sets there what a local,
plain-http run without DEBUG needs (see the Makefile and docs/development.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
READY_PREFIX = "Media server ready at "


def _start_media_server(port: int) -> tuple[subprocess.Popen[str], str]:
    # Where recorders write is where the product reads (RECORDINGS_DIR, as in the settings).
    recordings = os.environ.get("RECORDINGS_DIR") or str(BASE_DIR / "recordings")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mediaserver",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--recordings-dir",
            recordings,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        if line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX) :].strip()
            # Keep echoing what it prints, without blocking anyone.
            threading.Thread(target=_echo, args=(process.stdout,), daemon=True).start()
            return process, url
    process.wait()
    raise SystemExit(
        f"The embedded media server did not start (exit {process.returncode}); "
        f"is port {port} taken? Choose another with MEDIA_PORT=…"
    )


def _echo(stream) -> None:
    for line in stream:
        sys.stdout.write(line)


def _stop(process: subprocess.Popen[str] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _debug_on(env: dict[str, str]) -> bool:
    """Whether the settings will read DEBUG as on (django-environ's true values)."""
    return env.get("DEBUG", "").strip().lower() in {"true", "on", "ok", "y", "yes", "1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--media-port", type=int, default=8888)
    args = parser.parse_args(argv)

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    media: subprocess.Popen[str] | None = None
    env = dict(os.environ)
    if env.get("KMS_URL") or env.get("KMS_URLS"):
        print(f"Using the media server(s) at {env.get('KMS_URLS') or env['KMS_URL']}")
    else:
        media, env["KMS_URL"] = _start_media_server(args.media_port)
    web = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", "--bind", args.host, "--port", str(args.port)),
            "conference.asgi:application",
        ],
        env=env,
    )
    print(f"\nConference is running at http://{args.host}:{args.port}/  (Ctrl-C stops it)")
    if _debug_on(env):
        print("DEBUG is on: errors show Django's debug pages. For development only.")
    print()
    try:
        while not stopping:
            if web.poll() is not None or (media is not None and media.poll() is not None):
                break
            time.sleep(0.2)
    finally:
        _stop(web)
        _stop(media)
    print("Stopped.")
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
