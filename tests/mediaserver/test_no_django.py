"""The embedded media server runs in its own process without Django (ARCHITECTURE.md)."""

from __future__ import annotations

import subprocess
import sys


def test_the_media_server_imports_no_django():
    code = (
        "import sys, mediaserver.server, mediaserver.__main__; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'channels'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
