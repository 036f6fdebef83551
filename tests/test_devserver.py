"""`make run`'s launcher: the embedded media server and daphne start together and stop together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

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
