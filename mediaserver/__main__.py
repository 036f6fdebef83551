"""`python -m mediaserver`: run the embedded media server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .config import Config, parse
from .rpc import RpcServer


async def serve(config: Config) -> None:
    server: RpcServer
    if config.workers > 1:  # the front loads no media module: it routes, the workers forward
        from .front import Front

        server = Front(config)
    else:
        from .server import MediaServer

        server = MediaServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"Media server ready at {server.url}", flush=True)
    await stop.wait()
    logging.getLogger("mediaserver").info("stopping")
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    if config.worker_of:
        from .front import die_with_parent

        die_with_parent(config.worker_of)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(
            max(logging.WARNING, logging.getLevelName(config.log_level))
        )
    loop_factory = None
    if config.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except OSError as exc:
        print(f"media server could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
