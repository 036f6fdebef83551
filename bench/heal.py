"""How soon a call heals after a fault: video decoded again by both callers.

    python -m bench.heal [--runs 5] [--scenarios restart,failover,ice,daphne] [--json F]

The product as an operator runs it (tests/live.py: daphne and embedded media server processes)
and two headless Chromium callers in one room (tests/browser.py), on loopback. Each scenario
keeps one call going and causes its fault `--runs` times:

- restart: SIGKILL of the media server, started again at once on its port; timed from the
  moment it listens again.
- failover: two media servers in KMS_URLS (KMS_FAILOVER_SECONDS=2); SIGKILL of the one holding
  the room, which does not come back before the room has moved; timed from the kill. The killed
  server is started again afterwards, to be the next run's spare.
- ice: every UDP packet to the media server's port range dropped for 10 s (iptables on
  loopback, root only); timed from the moment packets pass again.
- daphne: SIGKILL of daphne, started again at once; timed from the moment it listens again.

"Healed" is the first moment both pages have decoded 15 new video frames on connections that
are up (tests/browser.py: Heal). Prints each run and the median and worst per scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, Caller, Heal, in_a_call
from tests.live import MediaServerProcess, ProductServer

MEDIA_PORTS = (61200, 61399)
DROP_SECONDS = 10.0


def _drop(on: bool) -> None:
    rule = [
        "INPUT",
        "-i",
        "lo",
        "-p",
        "udp",
        "--dport",
        f"{MEDIA_PORTS[0]}:{MEDIA_PORTS[1]}",
        "-j",
        "DROP",
    ]
    subprocess.run(["iptables", "-I" if on else "-D", *rule], check=True)


def _scenario(browser, workdir: Path, name: str, runs: int) -> list[float]:
    env: dict[str, str] = {}
    media_args: tuple[str, ...] = ()
    spare: list[MediaServerProcess] = []
    if name == "failover":
        spare = [MediaServerProcess(workdir, {}).start() for _ in range(2)]
        env = {
            "KMS_URL": spare[0].url,
            "KMS_URLS": ",".join(s.url for s in spare),
            "KMS_FAILOVER_SECONDS": "2",
        }
    if name == "ice":
        media_args = ("--port-range", f"{MEDIA_PORTS[0]}-{MEDIA_PORTS[1]}")
    product = ProductServer(workdir, env, media_args=media_args).start()
    people = [
        Caller(browser, product, f"{name}ada", "Ada Lovelace"),
        Caller(browser, product, f"{name}grace", "Grace Hopper"),
    ]
    times: list[float] = []
    try:
        in_a_call(*people, name=f"Heal {name}")
        for run in range(runs):
            heal = Heal(*people)
            if name == "restart":
                assert product.media is not None
                product.media.kill()
                product.media.start()
            elif name == "daphne":
                product.crash()
                product.serve()
            elif name == "ice":
                _drop(True)
                try:
                    time.sleep(DROP_SECONDS)
                finally:
                    _drop(False)
            elif name == "failover":
                holding = next(s for s in spare if _holds_pipeline(s.url))
                holding.kill()
            heal.fault_over()
            healed = heal.wait(timeout=60)
            times.append(healed)
            print(f"{name} run {run + 1}: video again after {healed:.2f} s", flush=True)
            if name == "failover":
                holding.start()  # the next run's spare
            time.sleep(2)
    finally:
        for person in people:
            person.close()
        product.stop()
        for server in spare:
            server.stop()
    return times


def _holds_pipeline(url: str) -> bool:
    from tests.browser import media_server_pipelines

    try:
        return bool(media_server_pipelines(url))
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", default="restart,failover,ice,daphne")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if "ice" in scenarios and (os.geteuid() != 0 or not shutil.which("iptables")):
        print("ice: skipped (needs iptables as root)")
        scenarios.remove("ice")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for name in scenarios:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results[name] = _scenario(browser, workdir, name, args.runs)
        browser.close()
    print()
    print(f"{'scenario':<10} {'runs':>4} {'median s':>9} {'worst s':>8}")
    for name, times in results.items():
        print(f"{name:<10} {len(times):>4} {statistics.median(times):>9.2f} {max(times):>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
