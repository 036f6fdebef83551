"""Where a steady-state subscriber's server CPU goes: the media server with one publisher and N
native benchmark subscribers (bench.mediaserver_forwarding's machinery), sampled by py-spy.

    python -m bench.subscriber_cost [--py-spy PATH] [--subscribers 0,300] [--seconds 20]

For each N the server is sampled over a steady-state window (`py-spy record --nonblocking
--format raw`: on-CPU samples, the server never paused, so kernel time spent inside a system
call counts for the Python code that made it); each sample goes to the first bucket (in
`BUCKETS` order) one of its frames matches. Each step's samples are scaled to the server's /proc
CPU time over the same window; a bucket's figure per subscriber is its difference between the
first and last N divided by the subscribers added, in µs of CPU per subscriber per second.

py-spy is not a dependency of the project: install it anywhere (`pip install py-spy`) and pass
its path. Run as root (py-spy reads the server's memory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from .media import encode_media
from .mediaserver_forwarding import FULL, Ramp, pin, say, tree_cpu_split

# (bucket, substrings of a frame, any of which puts a sample in the bucket); first match wins,
# frames looked at from the outermost in (so a sender report's SRTCP protect counts as RTCP out).
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RTCP out: sender reports", ("_run_rtcp (aiortc/rtcrtpsender.py", "_send_reports (media")),
    ("RTCP out: receiver reports", ("_run_rtcp (aiortc/rtcrtpreceiver.py",)),
    (
        "RTCP in",
        (
            "_handle_rtcp_data (aiortc/rtcdtlstransport.py",
            "_on_rtcp (mediaserver/receive.py",  # the native receive path's hand-off
            "_deliver_rtcp (mediaserver/receive.py",
        ),
    ),
    ("hub and send path", ("MediaHub.push (mediaserver/forwarding.py",)),
    (
        "RTP in (publisher)",
        (
            "_handle_rtp_data (aiortc/rtcdtlstransport.py",
            "on_frame (mediaserver/receive.py",
            "_on_events (mediaserver/receive.py",
        ),
    ),
    ("ICE: peers' checks answered", ("request_received (aioice/",)),
    ("ICE: own consent checks", ("query_consent (aioice/", "check_periodic (aioice/")),
    ("ICE: other STUN", ("Transaction.", "CandidatePair.")),
    # what is left in aioice is its hand-off of non-STUN datagrams (RTCP in, the publisher's
    # RTP) to the DTLS transport
    ("datagram hand-off (aioice to DTLS)", ("aioice/",)),
    ("DTLS/SRTP receive loop", ("_recv_next (aiortc/rtcdtlstransport.py",)),
    ("media flow watch", ("check_flow (mediaserver/", "_watch_media_flow (mediaserver/")),
)
LOOP = "event loop itself (uvloop, no Python frame)"  # the innermost frame is asyncio.run's
OTHER = "other"


def classify(stack: str) -> str:
    frames = stack.split(";")
    for name, needles in BUCKETS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    if "asyncio/runners.py" in frames[-1]:
        return LOOP
    return OTHER


def read_samples(path: Path) -> Counter[str]:
    """py-spy's raw output: one `frame;frame;... count` line per distinct stack."""
    buckets: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            buckets[classify(stack)] += int(count)
    return buckets


async def profile(
    ramp: Ramp, py_spy: str, seconds: float, rate: int, out: Path
) -> tuple[Counter[str], float, float]:
    """Sample the server for `seconds`; the samples by bucket and /proc user and kernel CPU
    (in % of a core) over the same window."""
    assert ramp.server is not None
    pid = ramp.server.pid
    (user0, kernel0), wall0 = tree_cpu_split(pid), time.monotonic()
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", str(rate), "--nonblocking", "--format", "raw", "--output", str(out)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await process.wait()
    (user1, kernel1), wall = tree_cpu_split(pid), time.monotonic() - wall0
    return read_samples(out), 100 * (user1 - user0) / wall, 100 * (kernel1 - kernel0) / wall


async def main_async(args: argparse.Namespace, log_dir: Path) -> None:
    media = encode_media(video_kbps=FULL.video_kbps)
    media_path = log_dir / "media.pickle"
    media.save(media_path)
    plan = replace(FULL, subscriber_processes=3)
    pin(os.getpid(), server=False)
    ramp = Ramp("forwarding", plan, log_dir, media_path)
    rows: list[tuple[int, Counter[str], float, float]] = []
    try:
        await ramp.start()
        for total in args.subscribers:
            await ramp.grow(total)
            await asyncio.sleep(args.settle)
            out = log_dir / f"py-spy-{total}.txt"
            samples, user, kernel = await profile(ramp, args.py_spy, args.seconds, args.rate, out)
            rows.append((total, samples, user, kernel))
            say(f"N={total}: user {user:.1f} %, kernel {kernel:.1f} % of a core")
            if args.keep:
                shutil.copy(out, args.keep / out.name)
    finally:
        await ramp.stop()
    report(rows, args.rate, args.seconds)


def report(rows: list[tuple[int, Counter[str], float, float]], rate: int, seconds: float) -> None:
    """Each step's samples are scaled to its /proc CPU time (py-spy's on-CPU detection is not
    exact: its sample count overstates the CPU, about uniformly), then the difference between
    the first and last step is divided by the subscribers added."""
    names = [name for name, _ in BUCKETS] + [LOOP, OTHER]
    (n0, first, user0, kernel0), (n1, last, user1, kernel1) = rows[0], rows[-1]
    per = n1 - n0
    scale0 = (user0 + kernel0) * 1e4 / max(1, sum(first.values()))  # µs/s per sample
    scale1 = (user1 + kernel1) * 1e4 / max(1, sum(last.values()))
    say(f"\nserver CPU in µs per second by bucket (py-spy samples scaled to /proc), N={n0}, {n1}:")
    head = f"{'N=' + str(n0):>9} {'N=' + str(n1):>9} {'per subscriber':>15} {'share':>6}"
    say(f"{'bucket':44} {head}")
    total = (user1 + kernel1 - user0 - kernel0) * 1e4 / per
    for name in names:
        a, b = first[name] * scale0, last[name] * scale1
        each = (b - a) / per
        say(f"{name:44} {a:9.0f} {b:9.0f} {each:15.1f} {100 * each / total:5.1f}%")
    say(
        f"{'all (/proc)':44} {(user0 + kernel0) * 1e4:9.0f} {(user1 + kernel1) * 1e4:9.0f} "
        f"{total:15.1f}"
    )
    say(
        f"/proc per subscriber: user {(user1 - user0) / per * 1e4:.0f} µs/s, kernel "
        f"{(kernel1 - kernel0) / per * 1e4:.0f} µs/s; py-spy samples: {sum(first.values())}, "
        f"{sum(last.values())} in {seconds:.0f} s at {rate} Hz"
    )


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber_cost")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--subscribers", type=_counts, default=(0, 300), help="e.g. 0,300")
    parser.add_argument("--seconds", type=float, default=20.0, help="sampled window per step")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before sampling")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw output into this folder")
    args = parser.parse_args(argv)
    if len(args.subscribers) < 2:
        parser.error("--subscribers needs at least two counts")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-subscriber-cost-"))
    try:
        asyncio.run(main_async(args, log_dir))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
