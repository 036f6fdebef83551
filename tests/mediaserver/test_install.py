"""The native modules are optional: on a machine without a C compiler the package still builds
and installs, and the media server runs on its Python send and receive paths (issue 16)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = (".git", ".venv", "node_modules", "build", "*.egg-info", "*.so", "__pycache__", "media")


def test_a_machine_without_a_compiler_gets_the_python_paths(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIPPED))
    environment = {**os.environ, "CC": "false", "LDSHARED": "false"}  # every compile fails
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            wheels,
            source,
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mediaserver/fanout.py" in names and "mediaserver/receive.py" in names
    assert not [name for name in names if name.endswith(".so")], names

    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", target, wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    code = (
        "import mediaserver, mediaserver.fanout as f, mediaserver.receive as r\n"
        f"assert mediaserver.__file__.startswith({str(target)!r}), mediaserver.__file__\n"
        "assert not f.native_available() and not r.native_available()\n"
        "print(f.describe()); print(r.describe())\n"
    )
    # The dependencies from this environment, but not its editable install of the project
    # (a .pth file that `-S` leaves unread), whose finder would import the built modules.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_NATIVE")}
    environment["PYTHONPATH"] = os.pathsep.join((str(target), sysconfig.get_paths()["purelib"]))
    run = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Python fan-out send path (mediaserver._fanout is not built)" in run.stdout
    assert "Python receive path (mediaserver._receive is not built)" in run.stdout
