"""Benchmark of the Composite (the MCU): server CPU for mixing four 640x480 publishers.

    python -m bench.composite [--inputs 4] [--window 10] [--framerate 15]

The media server (`python -m mediaserver`) runs in a subprocess, whose CPU time (utime+stime from
/proc/PID/stat) over a steady window is what is measured. One publisher process replays
pre-encoded 640x480@30 VP8 (750 kbit/s) and 20 ms Opus into N WebRtcEndpoints (bench/client.py),
so publishing costs no encoding. The server's CPU is measured first with the N streams arriving
and going nowhere, then with each connected into a HubPort of one Composite (800x600 output, as
KMS's default) and one subscriber receiving the mix from another port: the difference is the
cost of the Composite (N video and audio decoders, scaling, one VP8 encoder, N + 1 Opus
encoders, and sending the mix to the subscriber).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from signaling.kurento import KurentoClient

from .media import encode_media
from .proc import Child, Server, Worker, cpu_percent, rss_bytes

MIB = 1024 * 1024


def say(text: str = "") -> None:
    print(text, flush=True)


async def run(inputs: int, window: float, framerate: int, work: Path) -> None:
    media = encode_media(seconds=4.0, video_kbps=750)
    media_path = work / "media.pickle"
    media.save(media_path)
    server = await Server.launch(
        "composite-server",
        ["-m", "mediaserver", "--port", "0", "--log-level", "WARNING"],
        work,
    )
    publisher = await Worker.launch(
        "composite-publisher", ["publisher", server.url, str(media_path)], work
    )
    subscriber = await Worker.launch("composite-subscriber", ["subscriber", server.url], work)
    rpc = KurentoClient(server.url, request_timeout=30)
    try:
        pipeline = await rpc.create("MediaPipeline")
        endpoints = [
            (await publisher.call("publish", pipeline=pipeline))["endpoint"] for _ in range(inputs)
        ]
        await asyncio.sleep(3.0)  # every stream flowing
        idle = await cpu_percent(server.pid, window)
        rss_idle = rss_bytes(server.pid)

        composite = await rpc.create("Composite", mediaPipeline=pipeline, framerate=framerate)
        for endpoint in endpoints:
            port = await rpc.create("HubPort", hub=composite)
            await rpc.invoke(endpoint, "connect", sink=port)
        out = await rpc.create("HubPort", hub=composite)
        await subscriber.call("subscribe", pipeline=pipeline, sources=[out])
        ready = await subscriber.call("wait_media", seconds=20)
        await asyncio.sleep(2.0)
        before = await subscriber.call("snapshot")
        mixing = await cpu_percent(server.pid, window)
        after = await subscriber.call("snapshot")
        rss_mixing = rss_bytes(server.pid)
    finally:
        await rpc.close()
        await Child.stop_all()

    received = after["subs"][0][0] - before["subs"][0][0]  # video frames the subscriber got
    seconds = after["t"] - before["t"]
    say(
        f"inputs: {inputs} x 640x480@30 VP8 750 kbit/s + Opus; output 800x600@{framerate} VP8; "
        f"window {window:.0f} s"
    )
    say(f"server CPU, streams arriving, not mixed: {idle:.1f} % of a core")
    say(f"server CPU, mixed by one Composite:      {mixing:.1f} % of a core")
    say(f"CPU of the Composite:                    {mixing - idle:.1f} % of a core")
    say(f"memory of the Composite: {(rss_mixing - rss_idle) / MIB:.1f} MiB")
    say(
        f"subscriber: media {'flowing' if ready['ready'] else 'NOT flowing'}, "
        f"{received / seconds:.1f} video frames/s received"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--framerate", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-composite-"))
    try:
        asyncio.run(run(args.inputs, args.window, args.framerate, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
