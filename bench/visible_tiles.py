"""What hidden tiles save (issue 11): a room of 20 publishers whose viewers each receive all 20,
with every video on, then with only 6 tiles' video on per viewer (the others' VIDEO media type
disconnected on the media server, as the page does for tiles off screen; their sound stays).

    python -m bench.visible_tiles [--publishers 20] [--viewers 5] [--visible 6] [--json PATH]

Everything runs on this machine over loopback: the media server (`python -m mediaserver`,
pinned to the last core, its CPU time read from /proc), one process replaying the publishers'
pre-encoded 640x480 VP8 and Opus (bench/media.py), and viewer processes whose receivers count
RTP payload bytes without decoding (bench/client.py). Each phase measures a 10 s window: the
server's CPU, and each viewer's received video and audio bitrate (RTP payload).

A real 20-person room has 20 viewers (380 subscriptions); two cores cannot also run the clients
for that many, so `--viewers` viewers stand for them: the per-viewer bitrate is what each
browser would receive, and the server's CPU scales with the number of forwarded streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from signaling.kurento import KurentoClient

from .media import encode_media
from .mediaserver_forwarding import mediaserver_args, pin
from .proc import Child, Server, Worker, cpu_seconds

WINDOW = 10.0
SETTLE = 3.0


async def measure(server: Server, viewers: list[Worker]) -> dict[str, Any]:
    await asyncio.sleep(SETTLE)
    first = await asyncio.gather(*(viewer.call("snapshot") for viewer in viewers))
    cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
    await asyncio.sleep(WINDOW)
    cpu1, wall = cpu_seconds(server.pid), time.monotonic() - wall0
    last = await asyncio.gather(*(viewer.call("snapshot") for viewer in viewers))
    video_kbps, audio_kbps = [], []
    for before, after in zip(first, last, strict=True):
        elapsed = after["t"] - before["t"]
        video = sum(new[6] - old[6] for old, new in zip(before["subs"], after["subs"], strict=True))
        audio = sum(new[7] - old[7] for old, new in zip(before["subs"], after["subs"], strict=True))
        video_kbps.append(8 * video / elapsed / 1000)
        audio_kbps.append(8 * audio / elapsed / 1000)
    return {
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1),
        "viewer_video_kbps_median": round(statistics.median(video_kbps)),
        "viewer_audio_kbps_median": round(statistics.median(audio_kbps)),
        "viewer_video_kbps": [round(v) for v in video_kbps],
    }


async def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    media_path = log_dir / "media.pickle"
    encode_media(video_kbps=args.video_kbps).save(media_path)
    server = await Server.launch("server", mediaserver_args(), log_dir)
    pin(server.pid, server=True)
    pin(os.getpid(), server=False)
    rpc = KurentoClient(server.url, request_timeout=30)
    try:
        pipeline = await rpc.create("MediaPipeline")
        publisher = await Worker.launch(
            "publishers", ["publisher", server.url, str(media_path)], log_dir
        )
        pin(publisher.pid, server=False)
        sources = [
            (await publisher.call("publish", pipeline=pipeline))["endpoint"]
            for _ in range(args.publishers)
        ]
        viewers = []
        subscriptions: list[list[tuple[str, str]]] = []  # per viewer: (source, its endpoint)
        for index in range(args.viewers):
            viewer = await Worker.launch(f"viewer-{index}", ["subscriber", server.url], log_dir)
            pin(viewer.pid, server=False)
            reply = await viewer.call("subscribe", pipeline=pipeline, sources=sources)
            if reply["errors"]:
                raise RuntimeError(f"viewer {index} could not subscribe: {reply['errors'][:2]}")
            subscriptions.append(list(zip(sources, reply["endpoints"], strict=True)))
            viewers.append(viewer)
        await asyncio.gather(*(viewer.call("wait_media", seconds=30.0) for viewer in viewers))
        print(f"{args.publishers} publishers, {args.viewers} viewers receiving all of them")
        every = await measure(server, viewers)
        print(f"  all {args.publishers} videos on:  {every}", flush=True)
        for pairs in subscriptions:  # each viewer sees only its first `visible` tiles
            for source, endpoint in pairs[args.visible :]:
                await rpc.invoke(source, "disconnect", sink=endpoint, mediaType="VIDEO")
        visible = await measure(server, viewers)
        print(f"  {args.visible} videos on:        {visible}", flush=True)
        for pairs in subscriptions:  # nobody sees any video: the sound alone, the floor
            for source, endpoint in pairs[: args.visible]:
                await rpc.invoke(source, "disconnect", sink=endpoint, mediaType="VIDEO")
        sound_only = await measure(server, viewers)
        print(f"  no video on:        {sound_only}", flush=True)
        return {
            "publishers": args.publishers,
            "viewers": args.viewers,
            "visible": args.visible,
            "video_kbps_target": args.video_kbps,
            "all_video": every,
            "visible_only": visible,
            "sound_only": sound_only,
        }
    finally:
        await rpc.close()
        await Child.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--visible", type=int, default=6)
    parser.add_argument("--video-kbps", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        result = asyncio.run(asyncio.wait_for(run(args, Path(tmp)), 600))
    every, visible = result["all_video"], result["visible_only"]
    print()
    print(f"{'':24} {'server CPU':>10} {'viewer video':>13} {'viewer audio':>13}")
    for label, row in (
        (f"all {args.publishers} videos", every),
        (f"{args.visible} visible", visible),
    ):
        print(
            f"{label:24} {row['server_cpu_percent']:>9}% {row['viewer_video_kbps_median']:>8} kbps"
            f" {row['viewer_audio_kbps_median']:>8} kbps"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
