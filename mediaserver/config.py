"""The media server's settings, from command-line flags with environment-variable defaults."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8888
    path: str = "/kurento"
    ice_addresses: tuple[str, ...] = ("127.0.0.1",)
    announced_address: str | None = None
    port_min: int = 0
    port_max: int = 0
    stun_address: str = ""
    stun_port: int = 3478
    turn_url: str = ""
    session_grace: float = 240.0
    recordings_dir: str = "recordings"
    max_request_bytes: int = 512 * 1024
    requests_per_second: float = 500.0
    request_burst: int = 1000
    log_level: str = "INFO"
    event_loop: str = "uvloop"
    # Worker processes behind the one endpoint (front.py); 1 is the single process of old.
    workers: int = 1
    # Set by the front on the workers it starts: the front's pid (they die with it).
    worker_of: int = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"


def _addresses(value: str) -> tuple[str, ...]:
    addresses = tuple(a.strip() for a in value.split(",") if a.strip())
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError for names: ICE needs addresses
    if not addresses:
        raise ValueError("at least one address is needed")
    return addresses


def _port_range(value: str) -> tuple[int, int]:
    if not value:
        return 0, 0
    low, _, high = value.partition("-")
    port_min, port_max = int(low), int(high or low)
    if not 1024 <= port_min <= port_max <= 65535:
        raise ValueError(f"invalid port range {value!r}")
    return port_min, port_max


def _workers(value: str) -> int:
    if value in ("", "auto"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    count = int(value)
    if not 1 <= count <= 256:
        raise ValueError(f"invalid worker count {value!r}")
    return count


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    default = Config()

    def env_or(name: str, fallback: object) -> str:
        return env.get(f"MEDIASERVER_{name}", str(fallback))

    parser = argparse.ArgumentParser(
        prog="python -m mediaserver",
        description="Embedded Kurento-compatible media server (SFU on aiortc). Every flag can also "
        "be set with the environment variable named in its help.",
    )
    parser.add_argument(
        "--host", default=env_or("HOST", default.host), help="listen address (MEDIASERVER_HOST)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env_or("PORT", default.port)),
        help="listen port (MEDIASERVER_PORT)",
    )
    parser.add_argument(
        "--path", default=env_or("PATH", default.path), help="WebSocket path (MEDIASERVER_PATH)"
    )
    parser.add_argument(
        "--ice-addresses",
        type=_addresses,
        default=env_or("ICE_ADDRESSES", ",".join(default.ice_addresses)),
        help="comma-separated addresses ICE gathers candidates on "
        "(MEDIASERVER_ICE_ADDRESSES, default 127.0.0.1)",
    )
    parser.add_argument(
        "--announced-address",
        default=env.get("MEDIASERVER_ANNOUNCED_ADDRESS"),
        help="address announced in candidates instead, e.g. the public address "
        "behind 1:1 NAT (MEDIASERVER_ANNOUNCED_ADDRESS)",
    )
    parser.add_argument(
        "--port-range",
        type=_port_range,
        default=env_or("PORT_RANGE", ""),
        help="UDP ports for media, e.g. 40000-40999 (MEDIASERVER_PORT_RANGE; "
        "default any free port)",
    )
    parser.add_argument(
        "--stun",
        default=env_or("STUN", ""),
        help="default STUN server as address:port (MEDIASERVER_STUN)",
    )
    parser.add_argument(
        "--turn-url",
        default=env_or("TURN_URL", ""),
        help="default TURN as user:password@host:port[?transport=udp|tcp|tls] "
        "(MEDIASERVER_TURN_URL)",
    )
    parser.add_argument(
        "--session-grace",
        type=float,
        default=float(env_or("SESSION_GRACE", default.session_grace)),
        help="seconds a disconnected session's objects live on "
        "(MEDIASERVER_SESSION_GRACE, default 240 as in KMS)",
    )
    parser.add_argument(
        "--recordings-dir",
        default=env_or("RECORDINGS_DIR", default.recordings_dir),
        help="the directory recorders write to (file:// URIs outside it are refused; relative "
        "URIs are taken under it) (MEDIASERVER_RECORDINGS_DIR, default ./recordings)",
    )
    parser.add_argument(
        "--log-level",
        default=env_or("LOG_LEVEL", default.log_level),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="(MEDIASERVER_LOG_LEVEL)",
    )
    parser.add_argument(
        "--event-loop",
        default=env_or("EVENT_LOOP", default.event_loop),
        choices=["uvloop", "asyncio"],
        help="uvloop (faster forwarding) or the standard asyncio loop (MEDIASERVER_EVENT_LOOP)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=env_or("WORKERS", "auto"),
        help="worker processes, each holding its own pipelines behind the one endpoint "
        "(MEDIASERVER_WORKERS; default: one per core this process may use; 1 is a single "
        "process with no router)",
    )
    parser.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if isinstance(args.workers, str):
        args.workers = _workers(args.workers)
    if isinstance(args.ice_addresses, str):
        args.ice_addresses = _addresses(args.ice_addresses)
    if isinstance(args.port_range, str):
        args.port_range = _port_range(args.port_range)
    stun_address, _, stun_port = args.stun.partition(":")
    return Config(
        host=args.host,
        port=args.port,
        path=args.path if args.path.startswith("/") else f"/{args.path}",
        ice_addresses=args.ice_addresses,
        announced_address=args.announced_address or None,
        port_min=args.port_range[0],
        port_max=args.port_range[1],
        stun_address=stun_address,
        stun_port=int(stun_port or 3478),
        turn_url=args.turn_url,
        session_grace=args.session_grace,
        recordings_dir=args.recordings_dir,
        log_level=args.log_level,
        event_loop=args.event_loop,
        workers=1 if args.worker_of else args.workers,
        worker_of=args.worker_of,
    )
