"""Benchmark of recording in the media server (issue 15): server CPU per recorded stream, muxing
only (the stream arrives as VP8 + Opus and is written to WebM as it is).

    python -m bench.recording [--streams 8] [--window 10]

The media server (`python -m mediaserver`) runs in a subprocess, whose CPU time (utime+stime from
/proc/PID/stat) over a steady window is what is measured. One publisher process replays
pre-encoded 640x480@30 VP8 (750 kbit/s) and 20 ms Opus into N WebRtcEndpoints (bench/client.py),
so publishing costs no encoding. The server's CPU is measured first with the N streams arriving
and going nowhere, then with a RecorderEndpoint recording each: the difference divided by N is
the cost of recording one stream. The files' sizes give the bitrate written.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from signaling.kurento import KurentoClient

from .media import encode_media
from .proc import Child, Server, Worker, cpu_percent, rss_bytes

MIB = 1024 * 1024


def say(text: str = "") -> None:
    print(text, flush=True)


async def run(streams: int, window: float, work: Path) -> None:
    recordings = work / "recordings"
    recordings.mkdir()
    media = encode_media(seconds=4.0, video_kbps=750)
    media_path = work / "media.pickle"
    media.save(media_path)
    server = await Server.launch(
        "recording-server",
        [
            "-m",
            "mediaserver",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            "--recordings-dir",
            str(recordings),
        ],
        work,
    )
    publisher = await Worker.launch(
        "recording-publisher", ["publisher", server.url, str(media_path)], work
    )
    rpc = KurentoClient(server.url, request_timeout=30)
    try:
        pipeline = await rpc.create("MediaPipeline")
        endpoints = [
            (await publisher.call("publish", pipeline=pipeline))["endpoint"] for _ in range(streams)
        ]
        await asyncio.sleep(3.0)  # every stream flowing
        idle = await cpu_percent(server.pid, window)
        rss_idle = rss_bytes(server.pid)

        recorders = []
        for index, endpoint in enumerate(endpoints):
            recorder = await rpc.create(
                "RecorderEndpoint", mediaPipeline=pipeline, uri=f"stream-{index}.webm"
            )
            await rpc.invoke(endpoint, "connect", sink=recorder)
            await rpc.invoke(recorder, "record")
            recorders.append(recorder)
        await asyncio.sleep(2.0)
        started = time.monotonic()
        recording = await cpu_percent(server.pid, window)
        rss_recording = rss_bytes(server.pid)
        for recorder in recorders:
            await rpc.invoke(recorder, "stopAndWait")
        recorded_for = time.monotonic() - started + 2.0
        written = sum(f.stat().st_size for f in recordings.glob("*.webm"))
    finally:
        await rpc.close()
        await Child.stop_all()

    per_stream = (recording - idle) / streams
    say(f"streams: {streams} x 640x480@30 VP8 750 kbit/s + Opus, window {window:.0f} s")
    say(f"server CPU, streams arriving, not recorded: {idle:.1f} % of a core")
    say(f"server CPU, every stream recorded:          {recording:.1f} % of a core")
    say(f"CPU per recorded stream (muxing only):      {per_stream:.2f} % of a core")
    say(f"memory per recorder: {(rss_recording - rss_idle) / streams / 1024:.0f} KiB")
    say(
        f"written: {written / MIB:.1f} MiB in about {recorded_for:.0f} s "
        f"({8 * written / recorded_for / streams / 1000:.0f} kbit/s per stream)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    try:
        asyncio.run(run(args.streams, args.window, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
