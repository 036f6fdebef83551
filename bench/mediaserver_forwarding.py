"""Benchmark of the media server's forwarding plane (issue 3): server CPU per forwarded stream, how
many subscribed audio+video streams one core sustains, memory per endpoint, and the naive design.

    python -m bench.mediaserver_forwarding [--quick] [--json PATH] [--no-pin] [--steps 0,50,100]
                                           [--janus | --no-janus] [--janus-steps 0,50,100]

Everything runs on this machine over loopback (ICE gathers 127.0.0.1 only):

* the media server (`python -m mediaserver`) in a subprocess, whose CPU time (utime+stime from
  /proc/PID/stat over a steady-state window) and RSS (/proc/PID/status) are what is measured;
* one publisher process replaying pre-encoded 640x480@30 VP8 and 20 ms Opus (bench/media.py), so
  publishing costs no encoding;
* several subscriber processes whose receivers count frames without decoding, and read loss from
  RTP sequence numbers (bench/client.py); by default, once a subscriber's media flows, its socket
  is read, decrypted and counted in C (bench/native_receiver.py), so that the clients, which share
  this machine, stay cheaper than the server they measure.

`--workers N` runs the server as `python -m mediaserver --workers N` with N pipelines (one per
worker, each with publishers of its own), pins it to the last N cores, and counts the CPU and RSS
of the front and its workers together.

By default the server is pinned to the last core and every other process of the benchmark to the
remaining ones, so the server's figures are those of one core of its own (`--no-pin` lets the
scheduler place everything).

The forwarding ramp adds subscribers step by step (one publisher, N subscribers: N subscribed
audio+video streams) and stops at the first step where a subscriber gets < 28 video fps or >= 1 %
packet loss or the server uses > 95 % of its core, or where the machine is saturated (one 10 s
window per step). The same run then measures the naive design (bench/naive_sfu.py: decode once,
MediaRelay, one encoder per subscriber) the same way at small N, and prints the ratio of the two
designs' CPU per stream.

Janus side by side (bench/peers/): when Debian's `janus` is installed and the benchmark runs as root
(`--janus` requires it, `--no-janus` skips it), the same run measures Janus 1.1's VideoRoom with the
same publisher and subscribers, the same pinning and the same criteria, and prints its CPU and
memory per stream and the ratios of the three designs. Janus skips loopback when it gathers ICE
candidates and nothing may touch this machine's own addresses, so Janus and its clients run in two
network namespaces the benchmark makes, joined by a veth pair (10.231.0.1 and 10.231.0.2, visible
nowhere else) and removes at the end; Janus's configuration is written to the run's temporary
folder. Janus runs one shared event loop on its core (`--janus-event-loops 0` gives Janus's stock
thread per handle, which cost it 1.7 to 1.9 times the CPU per stream in our runs).

The clients share the machine with the server and need about as much CPU as it does, so on a small
machine they can saturate as soon as the server. "Streams per core" is N divided by the server's
measured CPU (in cores); the slope of server CPU over N gives the marginal cost of a stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from signaling.kurento import KurentoClient

from .media import HEIGHT, WIDTH, encode_media
from .peers import janus
from .peers import netns as private_network
from .proc import (
    CORES,
    Child,
    Server,
    Worker,
    cpu_seconds,
    cpu_split,
    event_loop,
    machine_busy,
    machine_ticks,
    rss_bytes,
    set_affinity,
)

MIN_FPS = 28.0
MAX_LOSS_PERCENT = 1.0
MAX_SERVER_CPU = 95.0  # % of one core
MACHINE_SATURATED = 0.95 * CORES * 100  # % of one core, summed over the machine's cores
TARGET_PER_CORE = 1000  # issue 16 (issue 3 asked for 200)
KURENTO_PER_CORE = (70, 84)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    forwarding_steps: tuple[int, ...]
    naive_steps: tuple[int, ...]
    janus_steps: tuple[int, ...]
    janus: bool | None  # measure Janus too: None = when it is installed and we are root
    janus_event_loops: int  # 0: Janus's stock default, a thread per handle; N: N shared loops
    window: float  # seconds of steady state measured per step
    settle: float  # seconds between the last subscriber receiving media and the window
    idle_endpoints: int  # un-negotiated WebRtcEndpoints created for the memory figure
    negotiated_endpoints: int  # negotiated, idle (no media) endpoints for the memory figure
    subscriber_processes: int
    receiver: str  # subscribers' receivers: "native", "counting", "forwarding" (bench/client.py)
    publishers: int
    pin: bool  # server alone on the last core, everything else of the benchmark on the others
    video_kbps: int
    hard_timeout: float  # seconds for the whole run
    keep_going: bool = False  # measure every planned step, even past a failing or saturated one
    # `python -m mediaserver --workers N`; above 1, N pipelines (rooms), each with its own
    # publishers, so that they spread over the workers; CPU and RSS are the front's and its
    # workers' together, and pinning gives the server the last N cores.
    workers: int = 1


FULL = Plan(
    forwarding_steps=(0, 50, 100, 200, 300, 400, 500, 600, 700, 800),
    naive_steps=(0, 1, 2, 3, 4, 6, 8),
    janus_steps=(0, 50, 100, 150, 200, 250, 300, 350, 400),
    janus=None,
    janus_event_loops=1,  # one loop for the one core Janus gets, as ours runs one event loop
    window=10.0,
    settle=3.0,
    idle_endpoints=100,
    negotiated_endpoints=50,
    subscriber_processes=3,
    receiver="native",
    publishers=1,
    pin=True,
    video_kbps=800,
    hard_timeout=1080.0,
)
QUICK = replace(
    FULL,
    forwarding_steps=(0, 3, 6),
    naive_steps=(0, 1),
    janus_steps=(0, 3, 6),
    window=2.0,
    settle=1.0,
    idle_endpoints=20,
    negotiated_endpoints=4,
    subscriber_processes=2,
    hard_timeout=150.0,
)


@dataclass
class Step:
    design: str
    subscribers: int
    server_cpu: float  # % of one core
    machine_cpu: float  # % of one core, all processes on the machine
    clients_cpu: float  # % of one core, the publisher and subscriber processes
    steal_cpu: float  # % of one core the hypervisor took from this (virtual) machine
    server_rss_mib: float
    fps_min: float | None = None
    fps_median: float | None = None
    audio_fps_min: float | None = None
    loss_max: float | None = None  # % of RTP packets, worst subscriber and kind
    published_fps: float = 0.0  # video frames the (slowest) publisher sent per second
    upstream_loss_max: float = 0.0  # % of the publishers' packets the server reported lost
    keyframe_requests: int = 0  # PLIs reaching the publishers during the window
    failed_subscribers: int = 0
    server_kernel_cpu: float | None = None  # % of one core the server spent in the kernel
    passed: bool = True
    saturated: bool = False
    note: str = ""

    @property
    def other_cpu(self) -> float:
        """CPU used on the machine by anything but the server and the benchmark's clients."""
        return max(0.0, self.machine_cpu - self.steal_cpu - self.server_cpu - self.clients_cpu)

    @property
    def cpu_per_stream(self) -> float | None:
        return self.server_cpu / self.subscribers if self.subscribers else None

    @property
    def streams_per_core(self) -> float | None:
        if not self.subscribers or self.server_cpu <= 0:
            return None
        return self.subscribers / (self.server_cpu / 100)


@dataclass
class Results:
    plan: dict[str, Any]
    machine: dict[str, Any]
    media: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    forwarding: list[Step] = field(default_factory=list)
    naive: list[Step] = field(default_factory=list)
    janus: list[Step] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    event_loops: dict[str, str] = field(default_factory=dict)  # design -> the server's loop


def say(text: str = "") -> None:
    print(text, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def background_load(seconds: float = 2.0) -> float:
    before = machine_ticks()
    await asyncio.sleep(seconds)
    return machine_busy(before, machine_ticks())


# -- memory per endpoint ----------------------------------------------------------------------


async def measure_memory(plan: Plan, log_dir: Path) -> dict[str, Any]:
    """A fresh server: RSS growth per un-negotiated endpoint, then per negotiated idle one."""
    server = await Server.launch("memory-server", mediaserver_args(), log_dir)
    worker: Worker | None = None
    try:
        rpc = KurentoClient(server.url, request_timeout=30)
        pipeline = await rpc.create("MediaPipeline")
        await asyncio.sleep(1.0)
        base = rss_bytes(server.pid)
        for _ in range(plan.idle_endpoints):
            await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await asyncio.sleep(1.0)
        after_idle = rss_bytes(server.pid)
        worker = await Worker.launch("memory-client", ["subscriber", server.url], log_dir)
        reply = await worker.call(
            "subscribe", pipeline=pipeline, sources=[None] * plan.negotiated_endpoints
        )
        await asyncio.sleep(2.0)
        after_negotiated = rss_bytes(server.pid)
        await rpc.close()
        return {
            "server_rss_start_mib": base / MIB,
            "unnegotiated_endpoints": plan.idle_endpoints,
            "kib_per_unnegotiated_endpoint": (after_idle - base) / 1024 / plan.idle_endpoints,
            "negotiated_endpoints": reply["created"],
            "kib_per_negotiated_idle_endpoint": (after_negotiated - after_idle)
            / 1024
            / max(1, reply["created"]),
        }
    finally:
        if worker is not None:
            await worker.stop()
        await server.stop()


def mediaserver_args(workers: int = 1) -> list[str]:
    return ["-m", "mediaserver", "--port", "0", "--log-level", "WARNING", "--workers", str(workers)]


def process_tree(pid: int) -> list[int]:
    """The process and its children (a `--workers` front and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def tree_cpu_seconds(pid: int) -> float:
    return sum(tree_cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of the process and its children."""
    user = kernel = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            u, k = cpu_split(member)
            user, kernel = user + u, kernel + k
    return user, kernel


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += rss_bytes(member)
    return total


# -- a ramp of subscribers --------------------------------------------------------------------


class Ramp:
    """A server, a publisher process and subscriber processes; subscribers are added in steps."""

    def __init__(self, design: str, plan: Plan, log_dir: Path, media_path: Path) -> None:
        self.design = design
        self.plan = plan
        self.log_dir = log_dir
        self.media_path = media_path
        self.server: Child | None = None
        self.publisher: Worker | None = None
        self.workers: list[Worker] = []
        self.sources: list[tuple[str, str]] = []  # (pipeline, publishing endpoint)
        self.pipeline = ""
        self.subscribers = 0
        self.failed = 0
        self.event_loop = ""
        self.network: private_network.NetnsPair | None = None  # Janus's private network
        # Pipelines (rooms): one per media server worker, so each worker forwards.
        self.rooms = plan.workers if design == "forwarding" else 1

    async def _start_janus(self) -> str:
        """Janus in a network namespace of its own, its clients' namespace beside it; its URL."""
        self.network = private_network.NetnsPair("bench-janus")
        self.network.up()
        config = janus.write_config(
            self.log_dir / "janus", self.network.server_address, self.plan.janus_event_loops
        )
        command = janus.command(config)
        self.server = await Child.start(
            "janus-server",
            command[1:],
            self.log_dir,
            program=command[:1],
            prefix=self.network.exec_prefix(self.network.server),
            cpus={CORES - 1} if self.plan.pin else None,
            stdout_to_log=True,
        )
        if not await janus.wait_listening(self.server.pid):
            raise RuntimeError(f"janus did not start:\n{self.server.log_tail()}")
        loops = self.plan.janus_event_loops
        threads = f"event_loops = {loops}" if loops else "a thread per handle"
        self.event_loop = f"Janus {janus.version()} (C, libnice; {threads})"
        return f"ws://{self.network.server_address}:{janus.WS_PORT}/"

    async def start(self) -> None:
        prefix: list[str] | None = None
        client_options: list[str] = []
        if self.design == "janus":
            url = await self._start_janus()
            assert self.network is not None
            prefix = self.network.exec_prefix(self.network.client)
            client_options = ["--protocol", "janus", "--ice-address", self.network.client_address]
        else:
            if self.design == "forwarding":
                args = mediaserver_args(self.plan.workers)
            else:
                args = ["-m", "bench.naive_sfu", "--port", "0"]
            server = await Server.launch(f"{self.design}-server", args, self.log_dir)
            self.server = server
            if self.plan.pin:
                for member in process_tree(server.pid):
                    pin(member, server=True, cores=self.rooms)
            self.event_loop = event_loop(process_tree(server.pid)[-1])
            url = server.url
        self.publisher = await Worker.launch(
            f"{self.design}-publisher",
            [*client_options, "publisher", url, str(self.media_path)],
            self.log_dir,
            prefix,
        )
        if self.plan.pin:
            pin(self.publisher.pid, server=False)
        for _ in range(self.rooms):
            pipeline = (await self.publisher.call("create_pipeline"))["pipeline"]
            for _ in range(self.plan.publishers):
                reply = await self.publisher.call("publish", pipeline=pipeline)
                self.sources.append((pipeline, reply["endpoint"]))
        self.pipeline = self.sources[0][0]
        args = [*client_options, "subscriber", url, self.plan.receiver]
        self.workers = [
            await Worker.launch(f"{self.design}-subscribers-{i}", args, self.log_dir, prefix)
            for i in range(self.plan.subscriber_processes)
        ]
        for worker in self.workers:
            if self.plan.pin:
                pin(worker.pid, server=False)
        await asyncio.sleep(self.plan.settle)

    async def stop(self) -> None:
        try:
            for child in [*self.workers, self.publisher]:
                if child is not None:
                    await child.stop()
            if self.server is not None:
                await self.server.stop()
        finally:
            if self.network is not None:
                self.network.down()

    async def grow(self, total: int) -> None:
        """Add subscribers up to `total`, spread over the worker processes and the publishers."""
        batches: dict[tuple[int, str], list[str | None]] = {}
        for index in range(self.subscribers, total):
            pipeline, source = self.sources[index % len(self.sources)]
            batches.setdefault((index % len(self.workers), pipeline), []).append(source)
        replies = await asyncio.gather(
            *(
                self.workers[worker].call("subscribe", pipeline=pipeline, sources=batch)
                for (worker, pipeline), batch in batches.items()
            )
        )
        for reply in replies:
            self.failed += len(reply["errors"])
            for error in reply["errors"][:3]:
                say(f"    subscriber failed: {error}")
        self.subscribers = total
        await asyncio.gather(*(worker.call("wait_media", seconds=30.0) for worker in self.workers))

    async def measure(self) -> Step:
        assert self.server is not None and self.publisher is not None
        clients = [self.publisher, *self.workers]
        await asyncio.sleep(self.plan.settle)
        first = await asyncio.gather(*(worker.call("snapshot") for worker in clients))
        (user0, kernel0), machine0 = tree_cpu_split(self.server.pid), machine_ticks()
        clients0 = sum(cpu_seconds(c.pid) for c in clients)
        wall0 = time.monotonic()
        await asyncio.sleep(self.plan.window)
        wall = time.monotonic() - wall0
        (user1, kernel1), machine1 = tree_cpu_split(self.server.pid), machine_ticks()
        clients1 = sum(cpu_seconds(c.pid) for c in clients)
        last = await asyncio.gather(*(worker.call("snapshot") for worker in clients))
        step = Step(
            design=self.design,
            subscribers=self.subscribers,
            server_cpu=100.0 * (user1 + kernel1 - user0 - kernel0) / wall,
            server_kernel_cpu=100.0 * (kernel1 - kernel0) / wall,
            machine_cpu=machine_busy(machine0, machine1),
            steal_cpu=machine_busy(machine0, machine1, index=2),
            clients_cpu=100.0 * (clients1 - clients0) / wall,
            server_rss_mib=tree_rss_bytes(self.server.pid) / MIB,
            failed_subscribers=self.failed,
        )
        published_fps: list[float] = []
        upstream_losses: list[float] = []
        elapsed = last[0]["t"] - first[0]["t"]
        for old, new in zip(first[0]["pubs"], last[0]["pubs"], strict=True):
            published_fps.append((new[0] - old[0]) / elapsed)
            step.keyframe_requests += new[1] - old[1]
            for offset in (2, 4):  # video, audio: (sent, reported lost)
                sent, lost = new[offset] - old[offset], new[offset + 1] - old[offset + 1]
                upstream_losses.append(100.0 * max(0, lost) / sent if sent else 100.0)
        step.published_fps = min(published_fps)
        step.upstream_loss_max = max(upstream_losses)
        video_fps: list[float] = []
        audio_fps: list[float] = []
        losses: list[float] = []
        for before, after in zip(first[1:], last[1:], strict=True):
            elapsed = after["t"] - before["t"]
            for old, new in zip(before["subs"], after["subs"], strict=False):
                video_fps.append((new[0] - old[0]) / elapsed)
                audio_fps.append((new[1] - old[1]) / elapsed)
                for offset in (2, 4):  # video, audio: (expected, received)
                    expected = new[offset] - old[offset]
                    received = new[offset + 1] - old[offset + 1]
                    lost = max(0, expected - received)
                    losses.append(100.0 * lost / expected if expected else 100.0)
        if self.subscribers:  # (a subscriber that failed to connect is in the lists at 0 fps)
            step.fps_min = min(video_fps)
            step.fps_median = statistics.median(video_fps)
            step.audio_fps_min = min(audio_fps) if audio_fps else 0.0
            step.loss_max = max(losses) if losses else 100.0
            problems = []
            if step.fps_min < MIN_FPS:
                problems.append(f"fps {step.fps_min:.1f} < {MIN_FPS:.0f}")
            if step.loss_max >= MAX_LOSS_PERCENT:
                problems.append(f"loss {step.loss_max:.2f} % >= {MAX_LOSS_PERCENT:.0f} %")
            if self.failed:
                problems.append(f"{self.failed} subscribers failed to connect")
            if step.server_cpu > MAX_SERVER_CPU:
                problems.append(f"server CPU {step.server_cpu:.0f} % > {MAX_SERVER_CPU:.0f} %")
            step.passed = not problems
            step.note = "; ".join(problems)
        step.saturated = step.machine_cpu >= MACHINE_SATURATED
        if step.saturated:
            step.note = "; ".join(filter(None, [step.note, "machine saturated"]))
        return step


SERVER_CORES = [1]  # how many cores the server is pinned to: one per worker (--workers)


def pin(pid: int, *, server: bool, cores: int | None = None) -> None:
    """The server gets the last core(s) to itself (`cores` of them, one per worker); clients
    (and this process) share the others."""
    cores = SERVER_CORES[0] if cores is None else cores
    last = set(range(max(0, CORES - cores), CORES))
    others = sorted((os.sched_getaffinity(0) | last) - last)
    set_affinity(pid, last if server else set(others) or {0})


async def run_ramp(
    design: str, plan: Plan, steps: tuple[int, ...], log_dir: Path, media: Path, results: Results
) -> None:
    ramp = Ramp(design, plan, log_dir, media)
    out: list[Step] = getattr(results, design)
    try:
        await ramp.start()
        results.event_loops[design] = ramp.event_loop
        say(f"  (server event loop: {ramp.event_loop})")
        say(step_header())
        for total in steps:
            started = time.monotonic()
            await ramp.grow(total)
            step = await ramp.measure()
            out.append(step)
            say(step_row(step) + f"  ({time.monotonic() - started:.0f} s)")
            if (not step.passed or step.saturated) and not plan.keep_going:
                break
    finally:
        await ramp.stop()


# -- reporting --------------------------------------------------------------------------------


COLUMNS = (  # title, unit, width
    ("N", "", 4),
    ("server", "%core", 6),
    ("kernel", "%core", 6),
    ("per N", "%core", 6),
    ("N/core", "", 6),
    ("fps", "min", 5),
    ("fps", "median", 6),
    ("audio", "fps min", 7),
    ("loss", "% max", 5),
    ("pub", "fps", 5),
    ("up loss", "% max", 7),
    ("PLI", "", 4),
    ("clients", "%core", 7),
    ("machine", "%core", 7),
    ("other", "%core", 6),
    ("steal", "%core", 6),
    ("RSS", "MiB", 6),
)


def step_header() -> str:
    titles = " ".join(f"{title:>{width}}" for title, _, width in COLUMNS)
    units = " ".join(f"{unit:>{width}}" for _, unit, width in COLUMNS)
    return f"  {titles}  result\n  {units}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def step_row(step: Step) -> str:
    values = (
        str(step.subscribers),
        f"{step.server_cpu:.1f}",
        _fmt(step.server_kernel_cpu, ".1f"),
        _fmt(step.cpu_per_stream, ".3f"),
        _fmt(step.streams_per_core, ".0f"),
        _fmt(step.fps_min, ".1f"),
        _fmt(step.fps_median, ".1f"),
        _fmt(step.audio_fps_min, ".1f"),
        _fmt(step.loss_max, ".2f"),
        f"{step.published_fps:.1f}",
        f"{step.upstream_loss_max:.2f}",
        str(step.keyframe_requests),
        f"{step.clients_cpu:.1f}",
        f"{step.machine_cpu:.1f}",
        f"{step.other_cpu:.1f}",
        f"{step.steal_cpu:.1f}",
        f"{step.server_rss_mib:.1f}",
    )
    cells = " ".join(f"{v:>{w}}" for v, (_, _, w) in zip(values, COLUMNS, strict=True))
    verdict = "pass" if step.passed else "FAIL"
    return f"  {cells}  {verdict}{' (' + step.note + ')' if step.note else ''}"


def slope(steps: list[Step], *, kernel: bool = False) -> float | None:
    """Least-squares server CPU (% of a core) per added subscriber, over the given steps (of it
    the kernel's part, with `kernel`)."""
    if kernel:
        steps = [s for s in steps if s.server_kernel_cpu is not None]
    if len({s.subscribers for s in steps}) < 2:
        return None
    xs = [float(s.subscribers) for s in steps]
    ys = [(s.server_kernel_cpu or 0.0) if kernel else s.server_cpu for s in steps]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def say_slope(design: str, summary: dict[str, Any]) -> None:
    """A design's CPU per stream by the slope, and how much of it the kernel's."""
    per_stream = summary.get(f"{design}_cpu_per_stream_slope")
    if not per_stream:
        return
    say(
        f"  {design}: {per_stream:.3f} % of a core per subscribed A+V stream (slope) -> "
        f"{summary[f'{design}_streams_per_core_from_slope']:.0f} streams per core"
    )
    kernel = summary.get(f"{design}_kernel_cpu_per_stream_slope")
    if kernel is not None:
        say(
            f"    of which the kernel {kernel:.3f} % (its UDP sends; on loopback they also "
            f"deliver to the receivers' sockets), user space {per_stream - kernel:.3f} %"
        )


def summarize(results: Results) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    passing = [s for s in results.forwarding if s.passed]
    best = max((s for s in passing if s.subscribers), key=lambda s: s.subscribers, default=None)
    forwarding_slope = slope(passing)
    summary["forwarding_cpu_per_stream_slope"] = forwarding_slope
    summary["forwarding_kernel_cpu_per_stream_slope"] = slope(passing, kernel=True)
    if forwarding_slope:
        summary["forwarding_streams_per_core_from_slope"] = 100.0 / forwarding_slope
    if best is not None:
        summary["largest_passing_n"] = best.subscribers
        summary["forwarding_cpu_at_largest_n"] = best.server_cpu
        summary["forwarding_cpu_per_stream_at_largest_n"] = best.cpu_per_stream
        summary["forwarding_streams_per_core_at_largest_n"] = best.streams_per_core
        summary["machine_cpu_at_largest_n"] = best.machine_cpu
        summary["clients_cpu_at_largest_n"] = best.clients_cpu
        baseline = next((s for s in results.forwarding if s.subscribers == 0), None)
        if baseline is not None:
            grown = best.server_rss_mib - baseline.server_rss_mib
            summary["kib_per_connected_subscriber"] = grown * 1024 / best.subscribers
            summary["memory_subscribers"] = best.subscribers
    stopped = results.forwarding[-1] if results.forwarding else None
    if stopped is not None and (not stopped.passed or stopped.saturated):
        summary["ramp_stopped_at"] = {"n": stopped.subscribers, "why": stopped.note}
    naive_measured = [s for s in results.naive if s.passed and not s.saturated]
    naive_slope = slope(naive_measured)
    if naive_slope is None:
        measured = [s for s in results.naive if s.subscribers]
        largest = max(measured, key=lambda s: s.subscribers, default=None)
        naive_slope = largest.cpu_per_stream if largest is not None else None
        summary["naive_cpu_per_stream_method"] = "CPU / N at the largest step (fixed cost included)"
    else:
        summary["naive_cpu_per_stream_method"] = "slope over passing steps"
    summary["naive_cpu_per_stream"] = naive_slope
    if naive_slope and forwarding_slope:
        summary["naive_over_forwarding_ratio"] = naive_slope / forwarding_slope
    if results.janus:
        summary.update(janus_summary(results.janus, forwarding_slope, naive_slope))
    return summary


def janus_summary(
    steps: list[Step], forwarding_slope: float | None, naive_slope: float | None
) -> dict[str, Any]:
    """Janus's figures, computed as ours are: the slope over its passing steps, the largest
    passing N, its RSS growth per connected subscriber; and the ratios to the other designs."""
    summary: dict[str, Any] = {}
    passing = [s for s in steps if s.passed]
    janus_slope = slope(passing)
    summary["janus_cpu_per_stream_slope"] = janus_slope
    summary["janus_kernel_cpu_per_stream_slope"] = slope(passing, kernel=True)
    if janus_slope:
        summary["janus_streams_per_core_from_slope"] = 100.0 / janus_slope
    best = max((s for s in passing if s.subscribers), key=lambda s: s.subscribers, default=None)
    if best is not None:
        summary["janus_largest_passing_n"] = best.subscribers
        summary["janus_cpu_at_largest_n"] = best.server_cpu
        summary["janus_streams_per_core_at_largest_n"] = best.streams_per_core
        baseline = next((s for s in steps if s.subscribers == 0), None)
        if baseline is not None:
            grown = best.server_rss_mib - baseline.server_rss_mib
            summary["janus_kib_per_connected_subscriber"] = grown * 1024 / best.subscribers
    stopped = steps[-1]
    if not stopped.passed or stopped.saturated:
        summary["janus_ramp_stopped_at"] = {"n": stopped.subscribers, "why": stopped.note}
    if janus_slope and forwarding_slope:
        summary["forwarding_over_janus_ratio"] = forwarding_slope / janus_slope
    if janus_slope and naive_slope:
        summary["naive_over_janus_ratio"] = naive_slope / janus_slope
    return summary


def print_report(results: Results) -> None:
    machine, media, memory, summary = (
        results.machine,
        results.media,
        results.memory,
        results.summary,
    )
    say()
    say("=" * 100)
    say("Media server forwarding benchmark (issue 3)")
    say(f"machine: {machine['cores']} cores, {machine['cpu_model']}; Python {machine['python']}")
    say(
        f"background load before the run: {machine['background_cpu']:.0f} % of one core "
        f"(load average {machine['loadavg']})"
    )
    if media:
        say(
            f"media: VP8 {WIDTH}x{HEIGHT}@30 {media['video_kbps']:.0f} kbps (keyframe every "
            f"{media['keyframe_every_s']:.0f} s, {media['keyframe_kib']:.0f} KiB), Opus 20 ms "
            f"{media['audio_kbps']:.0f} kbps; {results.plan['publishers']} publisher(s), "
            f"{results.plan['subscriber_processes']} subscriber processes"
        )
    plan = results.plan
    placement = (
        f"server pinned to core {CORES - 1}, clients on the other core(s)"
        if plan["pin"]
        else "no pinning"
    )
    say(f"{placement}; subscriber receivers: {plan['receiver']}; window {plan['window']:.0f} s")
    say("N = subscribed audio+video streams; %core = % of one core; 'clients' is the publisher and")
    say(f"subscriber processes, 'machine' everything on the {CORES} cores; 'up loss' is the loss")
    say("the server reports for the publisher's packets; PLI counts keyframe requests reaching it;")
    say("'other' is CPU used by anything else (other users' processes, the kernel's softirqs);")
    say("'steal' is time the hypervisor gave this virtual machine's cores to someone else.")
    designs = [("forwarding", "forwarding (mediaserver)", results.forwarding)]
    if results.janus:
        designs.append(("janus", "janus (VideoRoom, in a network namespace)", results.janus))
    designs.append(("naive", "naive (decode + MediaRelay + encoder per subscriber)", results.naive))
    for design, title, steps in designs:
        say()
        loop = results.event_loops.get(design, "?")
        say(f"{title}, server {loop if design == 'janus' else 'event loop ' + loop}:")
        say(step_header())
        for step in steps:
            say(step_row(step))
    say()
    if memory:
        say(
            f"memory: {memory['kib_per_unnegotiated_endpoint']:.0f} KiB per un-negotiated "
            f"WebRtcEndpoint ({memory['unnegotiated_endpoints']}), "
            f"{memory['kib_per_negotiated_idle_endpoint']:.0f} KiB per negotiated idle endpoint "
            f"({memory['negotiated_endpoints']})"
        )
    if "kib_per_connected_subscriber" in summary:
        say(
            f"        {summary['kib_per_connected_subscriber']:.0f} KiB per connected subscriber "
            f"with media (server RSS growth over {summary['memory_subscribers']} subscribers)"
        )
    say()
    say("summary:")
    say_slope("forwarding", summary)
    if "largest_passing_n" in summary:
        say(
            f"  largest N passing (>= {MIN_FPS:.0f} fps, < {MAX_LOSS_PERCENT:.0f} % loss): "
            f"{summary['largest_passing_n']} at {summary['forwarding_cpu_at_largest_n']:.1f} % "
            f"server CPU -> {summary['forwarding_streams_per_core_at_largest_n']:.0f} subscribed "
            f"streams per core (machine {summary['machine_cpu_at_largest_n']:.0f} % of "
            f"{CORES * 100} %, clients {summary['clients_cpu_at_largest_n']:.0f} %)"
        )
    if "ramp_stopped_at" in summary:
        stop = summary["ramp_stopped_at"]
        say(f"  ramp stopped at N={stop['n']}: {stop['why']}")
    elif results.forwarding and not results.errors:
        say("  ramp ended at the last planned step without failing")
    naive = summary.get("naive_cpu_per_stream")
    if naive:
        say(
            f"  naive: {naive:.2f} % of a core per subscribed stream "
            f"({summary['naive_cpu_per_stream_method']})"
        )
    if "naive_over_forwarding_ratio" in summary:
        say(f"  naive / forwarding CPU per stream: {summary['naive_over_forwarding_ratio']:.1f}x")
    print_janus_summary(results)
    per_core = summary.get("forwarding_streams_per_core_at_largest_n")
    if per_core:
        verdict = "met" if per_core >= TARGET_PER_CORE else "not met"
        from_slope = summary.get("forwarding_streams_per_core_from_slope")
        slope_text = f", {from_slope:.0f} from the slope" if from_slope else ""
        say(
            f"  target >= {TARGET_PER_CORE} streams per core: {verdict} ({per_core:.0f} at the "
            f"largest passing step{slope_text}); Kurento's published load tests: "
            f"{KURENTO_PER_CORE[0]}-{KURENTO_PER_CORE[1]} per core"
        )
    if tuple(results.plan["forwarding_steps"]) == QUICK.forwarding_steps:
        say("  (--quick: too few subscribers for these per-core figures to mean much)")
    for error in results.errors:
        say(f"  ERROR: {error}")
    say("=" * 100)


def print_janus_summary(results: Results) -> None:
    summary = results.summary
    status = results.machine.get("janus_status")
    if status:
        say(f"  janus: {status}")
    if not results.janus:
        return
    say_slope("janus", summary)
    if "janus_largest_passing_n" in summary:
        memory = summary.get("janus_kib_per_connected_subscriber")
        memory_text = f"; {memory:.0f} KiB RSS per connected subscriber" if memory else ""
        say(
            f"  janus largest N passing: {summary['janus_largest_passing_n']} at "
            f"{summary['janus_cpu_at_largest_n']:.1f} % server CPU -> "
            f"{summary['janus_streams_per_core_at_largest_n']:.0f} per core{memory_text}"
        )
    if "janus_ramp_stopped_at" in summary:
        stop = summary["janus_ramp_stopped_at"]
        say(f"  janus ramp stopped at N={stop['n']}: {stop['why']}")
    if "forwarding_over_janus_ratio" in summary:
        say(
            f"  forwarding (ours) / janus CPU per stream: "
            f"{summary['forwarding_over_janus_ratio']:.2f}x"
        )
    if "naive_over_janus_ratio" in summary:
        say(f"  naive / janus CPU per stream: {summary['naive_over_janus_ratio']:.1f}x")


def janus_status(plan: Plan) -> str | None:
    """Why Janus is not measured in this run, or None if it is."""
    if plan.janus is False:
        return "not measured (--no-janus)"
    reason = janus.unavailable() or private_network.unavailable()
    if reason:
        return f"not measured: {reason}"
    return None


# -- the run ----------------------------------------------------------------------------------


async def run(plan: Plan, results: Results, log_dir: Path) -> None:
    results.machine["background_cpu"] = await background_load()
    if results.machine["background_cpu"] > 15:
        say(
            f"warning: the machine is already {results.machine['background_cpu']:.0f} % busy "
            "(of one core) before the benchmark starts; its figures will suffer"
        )
    say(f"encoding the publishers' media ({plan.video_kbps} kbps VP8 target)...")
    media = encode_media(video_kbps=plan.video_kbps)
    media_path = log_dir / "media.pickle"
    media.save(media_path)
    results.media = {
        "video_kbps": media.video_kbps,
        "audio_kbps": media.audio_kbps,
        "video_frames": len(media.video),
        "keyframe_every_s": (media.keyframes[1] - media.keyframes[0]) / media.fps
        if len(media.keyframes) > 1
        else len(media.video) / media.fps,
        "keyframe_kib": statistics.fmean(len(media.video[k]) for k in media.keyframes) / 1024,
    }

    say("memory per endpoint (fresh server)...")
    results.memory = await measure_memory(plan, log_dir)

    if plan.pin:
        pin(os.getpid(), server=False)
    say("forwarding ramp (python -m mediaserver):")
    await run_ramp("forwarding", plan, plan.forwarding_steps, log_dir, media_path, results)

    status = janus_status(plan)
    if status is None:
        results.machine["janus"] = janus.version()
        say(f"janus ramp (Janus {results.machine['janus']} VideoRoom, network namespaces):")
        await run_ramp("janus", plan, plan.janus_steps, log_dir, media_path, results)
    else:
        results.machine["janus_status"] = status
        say(f"janus: {status}")

    say("naive ramp (bench/naive_sfu.py):")
    await run_ramp("naive", plan, plan.naive_steps, log_dir, media_path, results)


async def main_async(plan: Plan, results: Results, log_dir: Path) -> bool:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ok = True
    try:
        async with asyncio.timeout(plan.hard_timeout):
            await run(plan, results, log_dir)
    except TimeoutError:
        results.errors.append(f"hard timeout of {plan.hard_timeout:.0f} s reached; partial results")
        ok = False
    except asyncio.CancelledError:
        results.errors.append("interrupted; partial results")
        ok = False
    except Exception as exc:
        results.errors.append(f"{type(exc).__name__}: {exc}")
        ok = False
    finally:
        await Child.stop_all()
    return ok


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mediaserver_forwarding", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke checks")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the child processes' logs")
    parser.add_argument("--steps", type=_counts, help="forwarding ramp, e.g. 0,50,100")
    parser.add_argument("--naive-steps", type=_counts, help="naive ramp, e.g. 0,1,2,4")
    parser.add_argument("--janus-steps", type=_counts, help="Janus ramp, e.g. 0,50,100")
    parser.add_argument(
        "--janus",
        action=argparse.BooleanOptionalAction,
        help="measure Janus (Debian's janus package, VideoRoom) side by side; by default when it "
        f"is installed and the benchmark runs as root ({janus.INSTALL_HINT})",
    )
    parser.add_argument("--window", type=float, help="seconds measured per step")
    parser.add_argument("--timeout", type=float, help="hard limit for the whole run, in seconds")
    parser.add_argument("--subscriber-processes", type=int, help="client processes for subscribers")
    parser.add_argument("--publishers", type=int, help="publishers (subscribers spread over them)")
    parser.add_argument("--video-kbps", type=int, help="VP8 target bitrate of the publishers")
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        help="Janus's event_loops setting: 1 (the default here: one loop for its one core, as our "
        "server runs one event loop) shares N loops between all handles; 0 is Janus's stock "
        "default, a thread per handle",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        default=None,
        help="measure every planned step even after one fails or saturates the machine (smoke "
        "checks on a busy machine; the slopes still use passing steps only)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        help="pin the server to the last core and everything else to the other cores (default)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="media server worker processes (`--workers N`; default 1, one process); above 1 "
        "the subscribers are spread over N pipelines with publishers of their own",
    )
    parser.add_argument(
        "--receiver",
        choices=["native", "counting", "forwarding"],
        help="subscribers' receivers: decrypted and counted in C once media flows (cheapest, "
        "default), marker-bit counting in aiortc, or the media server's ForwardingReceiver "
        "(jitter buffer, NACK, REMB)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {
        "forwarding_steps": args.steps,
        "naive_steps": args.naive_steps,
        "janus_steps": args.janus_steps,
        "janus": args.janus,
        "janus_event_loops": args.janus_event_loops,
        "window": args.window,
        "subscriber_processes": args.subscriber_processes,
        "publishers": args.publishers,
        "video_kbps": args.video_kbps,
        "receiver": args.receiver,
        "pin": args.pin,
        "hard_timeout": args.timeout,
        "keep_going": args.keep_going,
        "workers": args.workers,
    }
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    SERVER_CORES[0] = max(1, plan.workers)
    if plan.janus:
        reason = janus.unavailable() or private_network.unavailable()
        if reason:
            say(f"--janus: {reason}")
            return 2
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    results = Results(
        plan=asdict(plan),
        machine={
            "cores": CORES,
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "loadavg": load,
        },
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-mediaserver-"))
    started = time.monotonic()
    ok = False
    try:
        ok = asyncio.run(main_async(plan, results, log_dir))
    except KeyboardInterrupt:
        results.errors.append("interrupted")
    results.summary.update(summarize(results))
    results.summary["duration_s"] = time.monotonic() - started
    print_report(results)
    say(f"duration: {results.summary['duration_s']:.0f} s")
    if args.json is not None:
        payload = asdict(results)
        for design in ("forwarding", "naive", "janus"):
            for row, step in zip(payload[design], getattr(results, design), strict=True):
                row["cpu_per_stream"] = step.cpu_per_stream
                row["streams_per_core"] = step.streams_per_core
                row["other_cpu"] = step.other_cpu
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        say(f"results written to {args.json}")
    if ok and not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        say(f"child process logs: {log_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
