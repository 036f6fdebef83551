"""Child processes for the benchmark, and what /proc says about their CPU time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
REPO = Path(__file__).resolve().parent.parent
REPLY_TIMEOUT = 300.0  # seconds a client process may take to answer a command


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), in seconds."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


async def cpu_percent(pid: int, window: float) -> float:
    """The process's CPU over the next `window` seconds, in % of one core."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def event_loop(pid: int) -> str:
    """Which event loop a Python process runs: "uvloop" if its extension module is mapped."""
    with open(f"/proc/{pid}/maps") as maps:
        return "uvloop" if "/uvloop/" in maps.read() else "asyncio"


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine since boot, from /proc/stat. Steal is
    time a virtual machine's cores were runnable but the hypervisor ran something else."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values), values[7]


Ticks = tuple[int, int, int]


def machine_busy(before: Ticks, after: Ticks, index: int = 0) -> float:
    """Machine CPU (or with index=2, steal) between two samples, in % of one core (at most
    CORES * 100)."""
    total = after[1] - before[1]
    return 100.0 * CORES * (after[index] - before[index]) / total if total else 0.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _before_exec(cpus: set[int] | None) -> Any:
    """What runs in the child before exec: die with the parent and, given cpus, stay on them
    (set before exec, so that every thread the program ever starts inherits it)."""
    if cpus is None:
        return _die_with_parent

    def prepare() -> None:
        _die_with_parent()
        os.sched_setaffinity(0, cpus)

    return prepare


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Pin every thread a process has now (threads it starts later inherit their creator's)."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


class Child:
    """One child process; all are stopped by `stop_all`, whatever happens to the benchmark."""

    running: list[Child] = []

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        Child.running.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        name: str,
        args: list[str],
        log_dir: Path,
        *,
        program: list[str] | None = None,
        prefix: list[str] | None = None,
        cpus: set[int] | None = None,
        stdout_to_log: bool = False,
        **kwargs: Any,
    ) -> Child:
        """Start `program` (default: this Python) with `args`, behind a `prefix` command that
        execs it in place (`ip netns exec NS`), on `cpus` if given; its stderr (and with
        stdout_to_log its stdout, for chatty programs) goes to NAME.log in log_dir."""
        # A developer's aid: BENCH_PROFILE_DIR=/tmp/p [BENCH_PROFILE_MATCH=server] runs the child
        # processes (whose name contains the match) under cProfile, writing NAME.prof there.
        profile_dir = os.environ.get("BENCH_PROFILE_DIR")
        match = os.environ.get("BENCH_PROFILE_MATCH", "")
        if program is None and profile_dir and name.find(match) >= 0:
            args = ["-m", "cProfile", "-o", f"{profile_dir}/{name}.prof", *args]
        argv = [*(prefix or []), *(program or [sys.executable]), *args]
        log = log_dir / f"{name}.log"
        stderr: TextIO = log.open("a")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                stdout=stderr if stdout_to_log else asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C reaches the benchmark only, which stops us
                preexec_fn=_before_exec(cpus),
                limit=1 << 24,
                **kwargs,
            )
        finally:
            stderr.close()
        return cls(name, process, log)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 5.0) -> None:
        if self in Child.running:
            Child.running.remove(self)
        if self.process.returncode is not None:
            return
        try:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), grace)
        except ProcessLookupError:
            return
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    @classmethod
    async def stop_all(cls) -> None:
        await asyncio.gather(*(child.stop() for child in list(cls.running)))


class Server(Child):
    """A server subprocess that prints '... ready at ws://...' on stdout once it listens."""

    url = ""

    @classmethod
    async def launch(cls, name: str, args: list[str], log_dir: Path) -> Server:
        server = await cls.start(name, args, log_dir)
        assert isinstance(server, Server) and server.process.stdout is not None
        try:
            line = await asyncio.wait_for(server.process.stdout.readline(), 30)
        except TimeoutError:
            line = b""
        text = line.decode().strip()
        if " at ws://" not in text:
            await server.stop()
            raise RuntimeError(f"{name} did not start: {text!r}\n{server.log_tail()}")
        server.url = text.rsplit(" at ", 1)[1]
        return server


class Worker(Child):
    """A bench.client process: one JSON command line in, one JSON answer line out."""

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the client to close its peer connections and exit, then make sure it did."""
        if self.process.returncode is None and not self._lock.locked():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("close"), 20)
                await asyncio.wait_for(self.process.wait(), grace)
        await super().stop(grace)

    _lock: asyncio.Lock

    @classmethod
    async def launch(
        cls, name: str, args: list[str], log_dir: Path, prefix: list[str] | None = None
    ) -> Worker:
        worker = await cls.start(
            name, ["-m", "bench.client", *args], log_dir, prefix=prefix, stdin=-1
        )
        assert isinstance(worker, Worker)
        worker._lock = asyncio.Lock()
        return worker

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        """Send a command; its answer must come within REPLY_TIMEOUT seconds."""
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        async with self._lock:
            process.stdin.write((json.dumps({"cmd": command, **params}) + "\n").encode())
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), REPLY_TIMEOUT)
        if not line:
            raise RuntimeError(f"{self.name} exited during {command}:\n{self.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.name}: {command} failed: {reply.get('error')}")
        return reply
