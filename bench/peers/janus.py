"""Janus (Debian's `janus` package, 1.1.x, VideoRoom plugin) for the forwarding benchmark: its
configuration, its process, and the signaling the benchmark's client processes speak to it.

The benchmark installs nothing: without Janus it says how to install it (`INSTALL_HINT`).

* `write_config(folder, address)` writes janus.jcfg and the two configuration files of what it loads
  into a folder of the benchmark's own (never /etc): the VideoRoom plugin and the WebSocket
  transport only (a plugins and a transports folder holding links to just those two libraries),
  the WebSocket API bound to the private network's server address, ICE gathering restricted to
  that address, no STUN server, no event handlers or loggers, warnings only in the log.
* `launch(...)` starts Janus inside the server's network namespace (bench/peers/netns.py), pinned
  before exec so every thread it creates stays on the server's core, and waits until its
  WebSocket API listens (read from /proc/PID/net/tcp, which shows the namespace's sockets).
* `JanusSignaling` is the client processes' side (bench/client.py `--protocol janus`): one
  WebSocket and one Janus session per process, keep-alives every 25 s (Janus drops a session
  after 60 s of silence), a VideoRoom handle per peer connection. A "pipeline" is a room, a
  publisher's "endpoint" is its feed id.

  Publishing: `join` as a publisher, then `publish` with aiortc's offer (aiortc gathers before it
  returns its description, so the candidates are in the SDP; a trickle `completed` follows) and
  Janus's answer. Subscribing: `join` as a subscriber of the feed, Janus's offer, aiortc's answer
  with `start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with `sudo apt-get install -y janus` (Debian/Ubuntu package, 1.1.x)"
WS_PORT = 8188
PLUGIN = "janus.plugin.videoroom"
KEEPALIVE_EVERY = 25.0  # seconds; Janus's session timeout is 60 s
REQUEST_TIMEOUT = 60.0
ROOM_BITRATE = 4_000_000  # bit/s: far above the 0.8 Mbit/s VP8 stream, so nothing is capped
FIR_FREQ = 10  # seconds between the keyframe requests Janus sends publishers (its demo's value)
LIBRARIES = (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_websockets.so"))
LIBRARY_DIRS = (
    "/usr/lib/*/janus",  # Debian's multiarch layout
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",
)


def binary() -> str | None:
    return shutil.which("janus")


def version() -> str:
    path = binary()
    if path is None:
        return "not installed"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.stdout.splitlines():
        if line.startswith("Janus version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def library(kind: str, name: str) -> Path | None:
    """The installed plugin or transport library (kind "plugins" or "transports")."""
    for pattern in LIBRARY_DIRS:
        for folder in sorted(glob.glob(pattern)):
            path = Path(folder) / kind / name
            if path.exists():
                return path
    return None


def unavailable() -> str | None:
    """Why Janus cannot be benchmarked here, or None if it can."""
    if binary() is None:
        return f"janus is not installed; {INSTALL_HINT}"
    for kind, name in LIBRARIES:
        if library(kind, name) is None:
            return f"janus's {name} is missing; {INSTALL_HINT}"
    return None


def write_config(folder: Path, address: str, event_loops: int = 0, debug_level: int = 3) -> Path:
    """Write Janus's configuration for a server listening and gathering on `address` only.

    event_loops=0 is Janus's default, a thread (and GLib loop) per handle; N > 0 shares N loops
    started at startup between all handles."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, name in LIBRARIES:
        target = library(kind, name)
        assert target is not None, f"{name} not found"
        (folder / kind).mkdir(exist_ok=True)
        link = folder / kind / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (folder / "none").mkdir(exist_ok=True)  # no event handlers, no loggers
    main = f"""\
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folder / "plugins"}"
    transports_folder = "{folder / "transports"}"
    events_folder = "{folder / "none"}"
    loggers_folder = "{folder / "none"}"
    debug_level = {debug_level}
    debug_timestamps = true
    debug_colors = false
    server_name = "bench-janus"
    interface = "{address}"
    session_timeout = 60
    event_loops = {event_loops}
}}
media: {{
}}
nat: {{
    ice_enforce_list = "{address}"
    ice_ignore_list = ""
    full_trickle = false
    ice_lite = false
    ice_tcp = false
    nice_debug = false
}}
plugins: {{
}}
transports: {{
}}
events: {{
    broadcast = false
}}
"""
    (folder / "janus.jcfg").write_text(main)
    (folder / "janus.plugin.videoroom.jcfg").write_text(
        "general: {\n    events = false\n    string_ids = false\n}\n"
    )
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""\
general: {{
    json = "plain"
    ws = true
    ws_port = {WS_PORT}
    ws_ip = "{address}"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""
    )
    return folder / "janus.jcfg"


def command(config: Path) -> list[str]:
    path = binary()
    assert path is not None
    return [path, "--config", str(config), "--configs-folder", str(config.parent), "-o"]


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket of the process's network namespace listens on `port`."""
    try:
        with open(f"/proc/{pid}/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    except (OSError, StopIteration):
        pass
    return False


async def wait_listening(pid: int, port: int = WS_PORT, seconds: float = 20.0) -> bool:
    """Wait until the process listens on `port`; False if it exited or `seconds` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not listening(pid, port):
        if not Path(f"/proc/{pid}/stat").exists() or loop.time() > deadline:  # noqa: ASYNC240
            return False
        await asyncio.sleep(0.1)
    return True


# -- the client processes' signaling ---------------------------------------------------------


class JanusError(RuntimeError):
    pass


class JanusSignaling:
    """The Janus API over one WebSocket: a session, VideoRoom handles, publish and subscribe."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.session: int | None = None
        self._connecting = asyncio.Lock()
        self._transactions = (f"t{n}" for n in itertools.count())
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def _connect(self) -> None:
        async with self._connecting:
            if self.ws is not None:
                return
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # Janus may still be starting
                try:
                    self.ws = await connect(
                        self.url,
                        subprotocols=[Subprotocol("janus-protocol")],
                        max_size=None,
                        ping_interval=None,
                    )
                    break
                except OSError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            self._tasks.append(asyncio.create_task(self._read()))
            reply = await self._request({"janus": "create"})
            self.session = int(reply["data"]["id"])
            self._tasks.append(asyncio.create_task(self._keepalive()))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for text in self.ws:
                message = json.loads(text)
                waiting = self._pending.get(message.get("transaction", ""))
                if waiting is None:
                    kind = message.get("janus")
                    if kind in ("hangup", "detached"):  # (each peer, when it closes)
                        logger.info("janus: %s", text[:300])
                    continue  # webrtcup, media, slowlink... (no transaction)
                future, until_event = waiting
                kind = message.get("janus")
                if kind == "ack" and until_event:
                    continue  # the event with the same transaction follows
                if future.done():
                    continue
                if kind == "error":
                    future.set_exception(JanusError(json.dumps(message.get("error"))))
                else:
                    data = message.get("plugindata", {}).get("data", {})
                    if "error" in data:
                        error_text = f"{data.get('error_code')}: {data['error']}"
                        future.set_exception(JanusError(error_text))
                    else:
                        future.set_result(message)
        except Exception as exc:  # the connection is gone: fail whatever waits
            error = exc
        else:
            error = ConnectionError("janus closed the WebSocket")
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_EVERY)
            try:
                await self._request({"janus": "keepalive"})
            except Exception:
                logger.exception("janus keep-alive failed")

    async def _request(
        self, message: dict[str, Any], *, until_event: bool = False
    ) -> dict[str, Any]:
        """Send a request; its answer ("success", or with until_event the "event" after the
        "ack" of an asynchronous plugin request)."""
        assert self.ws is not None
        transaction = next(self._transactions)
        message = {**message, "transaction": transaction}
        if self.session is not None:
            message["session_id"] = self.session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (future, until_event)
        try:
            await self.ws.send(json.dumps(message))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await future
        finally:
            del self._pending[transaction]

    async def _attach(self) -> int:
        await self._connect()
        reply = await self._request({"janus": "attach", "plugin": PLUGIN})
        return int(reply["data"]["id"])

    async def _message(
        self,
        handle: int,
        body: dict[str, Any],
        jsep: RTCSessionDescription | None = None,
        *,
        until_event: bool = True,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            message["jsep"] = {"type": jsep.type, "sdp": jsep.sdp}
        return await self._request(message, until_event=until_event)

    async def _candidates_done(self, handle: int) -> None:
        """Our candidates were all in the SDP: tell Janus there are no more."""
        await self._request(
            {"janus": "trickle", "handle_id": handle, "candidate": {"completed": True}}
        )

    async def create_pipeline(self, publishers: int = 16) -> str:
        """A VideoRoom room (Janus picks its id) for up to `publishers` publishers."""
        handle = await self._attach()
        reply = await self._message(
            handle,
            {
                "request": "create",
                "publishers": publishers,
                "bitrate": ROOM_BITRATE,
                "bitrate_cap": False,
                "fir_freq": FIR_FREQ,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "is_private": True,
                "permanent": False,
            },
            until_event=False,
        )
        return str(reply["plugindata"]["data"]["room"])

    async def publish(self, pc: RTCPeerConnection, pipeline: str) -> str:
        handle = await self._attach()
        joined = await self._message(
            handle, {"request": "join", "ptype": "publisher", "room": int(pipeline)}
        )
        feed = joined["plugindata"]["data"]["id"]
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self._message(handle, {"request": "publish"}, pc.localDescription)
        answer = reply["jsep"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await self._candidates_done(handle)
        return str(feed)

    async def subscribe(self, pc: RTCPeerConnection, pipeline: str, source: str | None) -> str:
        if source is None:
            raise ValueError("a Janus subscriber needs a feed to subscribe to")
        handle = await self._attach()
        body = {
            "request": "join",
            "ptype": "subscriber",
            "room": int(pipeline),
            "streams": [{"feed": int(source)}],
        }
        attached = await self._message(handle, body)
        offer = attached["jsep"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._message(handle, {"request": "start"}, pc.localDescription)
        await self._candidates_done(handle)
        return str(handle)

    async def close(self) -> None:
        if self.ws is not None and self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._request({"janus": "destroy"}), 5)
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
