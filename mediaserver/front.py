"""`python -m mediaserver --workers N`: one Kurento Protocol endpoint in front of N worker
processes, so the server uses every core.

Each worker is the ordinary single-process `MediaServer` (`python -m mediaserver --workers 1`)
listening on an internal port of 127.0.0.1. The front owns the client WebSockets and the
client-facing session layer (the `MediaServer` socket and session code it inherits: binding,
resume, the response cache, keepAlive, 40007, limits) and routes each request to one worker:

- a `create` of a MediaPipeline goes to the least-loaded live worker (fewest media objects,
  then fewest pipelines, then the lowest index);
- everything about an existing object goes to the worker of its pipeline: an element's id
  begins with its pipeline's id (`<pipeline>/<element>`), so the pipeline prefix of the
  `object` parameter (of `mediaPipeline` or `hub` in a `create`) is looked up in a table;
  an id the table does not know goes to any live worker, which answers what the
  single-process server answers (40101 for an unknown object);
- a `transaction` is run here operation by operation, each routed on its own after its
  `newref:` references are resolved, so the elements a transaction makes land with their
  pipeline;
- `ping`, `connect`, `keepAlive` and `closeSession` are answered here; the ServerManager
  (`manager_ServerManager`) too: pipelines and memory/CPU figures summed over the workers, the
  front's own sessions, its events merged from every worker, the rest asked of one worker.

Per client session the front holds one upstream WebSocket to each worker the session used
(opened on first use), with a worker-side session that mirrors the client's: what a session
holds, its subscriptions and its events stay the worker's business. Media never passes
through the front, and it parses only what it routes on.

A worker that dies (`kill -9`) takes its pipelines with it. Every client session that had an
upstream to it is lost, as if KMS had restarted: its socket is closed and `connect
{sessionId}` answers 40007. The objects such a session holds on the other workers are not
released: the next session made on the socket that tried to resume (or under the old id) takes
them over, so rooms on the workers that live go on while a web tier rebuilds those whose
pipeline is gone from `getPipelines`. The worker is started again, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection as Upstream
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve

from .config import Config
from .errors import Code, KurentoError
from .objects import SERVER_MANAGER_EVENTS, SERVER_MANAGER_ID, MediaObject
from .rpc import (
    MAX_FRAME_BYTES,
    ClientConnection,
    RpcServer,
    _object_param,
)
from .sessions import Session, Sessions

logger = logging.getLogger("mediaserver.front")

MANAGER_ID = SERVER_MANAGER_ID
MANAGER_SUPPORTED_EVENTS = MediaObject.supported_events() | SERVER_MANAGER_EVENTS
READY_PREFIX = "Media server ready at "
UPSTREAM_TIMEOUT = 60.0  # a worker that answers nothing this long is taken for stuck
RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 30.0
WORKER_START_TIMEOUT = 60.0
MANAGER_EVENTS = tuple(sorted(SERVER_MANAGER_EVENTS))
# ServerManager operations whose answer is made of every worker's
_SUMMED = {"getUsedMemory", "getUsedCpu"}


class ForwardedError(KurentoError):
    """A worker's error answer, passed on as the worker wrote it."""

    def __init__(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        try:
            parsed = Code(code)
        except ValueError:
            parsed = Code.UNEXPECTED_ERROR
        super().__init__(parsed, str(error.get("message", "")))
        self.raw = error

    def to_json(self) -> dict[str, Any]:
        return self.raw


def worker_unavailable() -> KurentoError:
    return KurentoError(Code.UNEXPECTED_ERROR, "No media worker is available; try again")


class Link:
    """One upstream WebSocket to a worker: for one client session, or the front's own."""

    def __init__(self, worker: Worker, ws: Upstream, session: str | None, front: Front) -> None:
        self.worker = worker
        self.ws = ws
        self.session = session  # the front's session id it serves (None: the front's own)
        self.worker_session: str | None = session  # the worker's id for it (kept on adoption)
        self.front = front
        self._ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @property
    def open(self) -> bool:
        return not self.reader.done()

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                if message.get("method") == "onEvent":
                    self.front.on_event(self, message)
                elif (future := self.pending.pop(message.get("id"), None)) and not future.done():
                    future.set_result(message)
        except (websockets.ConnectionClosed, OSError, ValueError):
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("worker connection lost"))
            self.pending.clear()

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if not self.open:
            raise worker_unavailable()
        request_id = next(self._ids)
        params = dict(params)
        if self.worker_session is not None:
            params["sessionId"] = self.worker_session
        else:
            params.pop("sessionId", None)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            await self.ws.send(json.dumps(message, separators=(",", ":")))
            response = await asyncio.wait_for(future, UPSTREAM_TIMEOUT)
        except (websockets.ConnectionClosed, ConnectionError, OSError, TimeoutError):
            self.pending.pop(request_id, None)
            raise worker_unavailable() from None
        result = response.get("result")
        sid = result.get("sessionId") if isinstance(result, dict) else None
        if self.worker_session is None and self.session is None and isinstance(sid, str):
            self.worker_session = sid  # the front's own link keeps one worker session
        return response

    async def close(self, *, close_session: bool, release: bool = False) -> None:
        if close_session and self.open:
            with contextlib.suppress(KurentoError):
                params = {"release": True} if release else {}
                await asyncio.wait_for(self.call("closeSession", params), 10)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


@dataclass(eq=False)
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    url: str | None = None
    alive: bool = False
    control: Link | None = None  # the front's own link: manager events and questions
    objects: set[str] = field(default_factory=set)  # its media objects (not the manager)
    pending_creates: int = 0
    restarts: int = 0
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def load(self) -> tuple[int, int, int]:
        pipelines = sum(1 for o in self.objects if "/" not in o)
        return (len(self.objects) + self.pending_creates, pipelines, self.index)


@dataclass
class LostSession:
    """A session lost with a worker: what it holds elsewhere waits for its heir."""

    links: dict[int, Link]
    objects: set[str]
    at: float


class Front(RpcServer):
    """The router: sockets and sessions as the media server has them, requests about objects
    sent on to the workers. It loads no media module (aiortc, PyAV): it forwards no media."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_id = str(uuid.uuid4())
        self.sessions = Sessions()
        self.connections: set[ClientConnection] = set()
        self._ws_server = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_socket: socket.socket | None = None
        self.workers = [Worker(i) for i in range(config.workers)]
        self.links: dict[str, dict[int, Link]] = {}  # front session id -> worker -> link
        self.link_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.pipelines: dict[str, int] = {}  # pipeline id -> worker index
        self.lost: dict[str, LostSession] = {}
        self.stopping = False
        self.started = False
        self._background: set[asyncio.Task[Any]] = set()
        self._handlers = self._method_handlers()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # Take the port first (a busy port fails at once), listen once every worker is up.
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError:
            sock.close()
            raise
        self._listen_socket = sock
        try:
            await asyncio.gather(*(self._start_worker(w) for w in self.workers))
        except BaseException:
            await self._stop_workers()
            raise
        sock.listen(511)
        self._ws_server = await serve(
            self._serve_socket,
            sock=sock,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            process_request=self._check_path,
            ping_interval=20,
            ping_timeout=20,
        )
        self._tasks = [asyncio.create_task(self._collect_sessions())]
        self.started = True
        logger.info(
            "media server %s listening on %s with %d workers (pids %s)",
            self.server_id,
            self.url,
            len(self.workers),
            ", ".join(str(w.pid) for w in self.workers),
        )

    @property
    def port(self) -> int:
        assert self._listen_socket is not None
        return self._listen_socket.getsockname()[1]

    async def stop(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        elif self._listen_socket is not None:
            self._listen_socket.close()
        for links in list(self.links.values()) + [lost.links for lost in self.lost.values()]:
            for link in links.values():
                await link.close(close_session=False)
        await self._stop_workers()
        logger.info("media server stopped")

    async def _stop_workers(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.control is not None:
                await worker.control.close(close_session=False)
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()

    def _spawn(self, coroutine: Any) -> None:
        """A task the front keeps a reference to until it ends."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- workers ------------------------------------------------------------------------------

    def _worker_argv(self, index: int) -> list[str]:
        c = self.config
        argv = [
            sys.executable,
            "-m",
            "mediaserver",
            "--workers",
            "1",
            "--worker-of",
            str(os.getpid()),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--path",
            c.path,
            "--ice-addresses",
            ",".join(c.ice_addresses),
            "--session-grace",
            str(c.session_grace),
            "--recordings-dir",
            c.recordings_dir,
            "--log-level",
            c.log_level,
            "--event-loop",
            c.event_loop,
        ]
        if c.announced_address:
            argv += ["--announced-address", c.announced_address]
        if c.port_min:
            low, high = worker_port_range(c.port_min, c.port_max, index, len(self.workers))
            argv += ["--port-range", f"{low}-{high}"]
        if c.stun_address:
            argv += ["--stun", f"{c.stun_address}:{c.stun_port}"]
        if c.turn_url:
            argv += ["--turn-url", c.turn_url]
        return argv

    async def _start_worker(self, worker: Worker) -> None:
        worker.ready = asyncio.Event()
        worker.url = None
        worker.objects.clear()
        process = await asyncio.create_subprocess_exec(
            *self._worker_argv(worker.index),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group: a Ctrl-C at the terminal reaches the front only, which
            # then stops the workers (an exit the front did not ask for is a death).
            start_new_session=True,
        )
        worker.process = process
        worker.started_at = time.monotonic()
        logger.info("worker %d started (pid %d)", worker.index, process.pid)
        self._spawn(self._pipe_log(worker, process, process.stderr))
        self._spawn(self._read_stdout(worker, process))
        self._spawn(self._watch(worker, process))
        try:
            await asyncio.wait_for(worker.ready.wait(), WORKER_START_TIMEOUT)
        except TimeoutError:
            raise OSError(f"worker {worker.index} did not start") from None
        if process.returncode is not None or worker.url is None:
            raise OSError(f"worker {worker.index} exited before it was ready")
        worker.control = await self._open_link(worker, None)
        for event in MANAGER_EVENTS:
            response = await worker.control.call("subscribe", {"object": MANAGER_ID, "type": event})
            if "error" in response:
                raise OSError(f"worker {worker.index}: {response['error']}")
        worker.alive = True

    async def _read_stdout(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            if text.startswith(READY_PREFIX) and worker.url is None:
                worker.url = text[len(READY_PREFIX) :].strip()
                worker.ready.set()
            else:
                print(f"[worker {worker.index}] {text}", file=sys.stderr, flush=True)
        worker.ready.set()  # exited: whoever waits learns it from the return code

    async def _pipe_log(self, worker: Worker, process: Any, stream: Any) -> None:
        while line := await stream.readline():
            sys.stderr.write(f"[worker {worker.index}] {line.decode(errors='replace')}")
            sys.stderr.flush()

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        worker.ready.set()
        if self.stopping or not self.started or worker.process is not process:
            return
        logger.error(
            "worker %d (pid %d) died (exit %s); its pipelines are lost",
            worker.index,
            process.pid,
            code,
        )
        await self._lose_worker(worker)
        await self._restart(worker)

    async def _lose_worker(self, worker: Worker) -> None:
        worker.alive = False
        if worker.control is not None:
            self._spawn(worker.control.close(close_session=False))
            worker.control = None
        gone = set(worker.objects)
        worker.objects.clear()
        for pipeline_id in [p for p, w in self.pipelines.items() if w == worker.index]:
            del self.pipelines[pipeline_id]
        # Every session that used the worker is lost, as with a KMS restart.
        for session_id in [s for s, links in self.links.items() if worker.index in links]:
            links = self.links.pop(session_id)
            dead = links.pop(worker.index)
            self._spawn(dead.close(close_session=False))
            session = self.sessions.get(session_id)
            objects = set(session.objects) - gone if session is not None else set()
            self.lost[session_id] = LostSession(links, objects, time.monotonic())
            if session is not None:
                conn = session.connection
                self.sessions.end(session)
                if conn is not None:
                    logger.warning(
                        "session %s lost with worker %d; closing %s", session_id, worker.index, conn
                    )
                    self._spawn(conn.ws.close(1011, "media server worker lost"))
        for object_id in gone:  # what KMS says of objects it no longer has
            self._manager_event("ObjectDestroyed", {"objectId": object_id})

    async def _restart(self, worker: Worker) -> None:
        if time.monotonic() - worker.started_at > 60:
            worker.restarts = 0  # it ran a good while: a fresh start
        delay = min(RESTART_BACKOFF_FIRST * 2**worker.restarts, RESTART_BACKOFF_MAX)
        while not self.stopping:
            worker.restarts += 1
            logger.warning("restarting worker %d in %.1f s", worker.index, delay)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            before = worker.process
            try:
                await self._start_worker(worker)
                logger.info("worker %d is back (pid %s)", worker.index, worker.pid)
                return
            except (OSError, KurentoError) as exc:
                logger.error("worker %d could not start again: %s", worker.index, exc)
                if worker.process is not before:  # its watcher restarts it once it exits
                    if worker.process is not None and worker.process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            worker.process.kill()
                    return
                delay = min(delay * 2, RESTART_BACKOFF_MAX)

    def _live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def _any_worker(self) -> Worker:
        live = self._live()
        if not live:
            raise worker_unavailable()
        return live[0]

    def _route(self, object_id: Any) -> Worker:
        """The worker of the object's pipeline; any live worker for an id no worker has."""
        if isinstance(object_id, str):
            index = self.pipelines.get(object_id.split("/", 1)[0])
            if index is not None and self.workers[index].alive:
                return self.workers[index]
        return self._any_worker()

    def _least_loaded(self) -> Worker:
        live = self._live()
        if not live:
            raise worker_unavailable()
        return min(live, key=Worker.load)

    # -- upstream links -----------------------------------------------------------------------

    async def _open_link(self, worker: Worker, session: str | None) -> Link:
        assert worker.url is not None
        try:
            ws = await ws_connect(
                worker.url, max_size=None, compression=None, ping_interval=None, open_timeout=10
            )
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            raise worker_unavailable() from None
        return Link(worker, ws, session, self)

    async def _link(self, session: Session, worker: Worker) -> Link:
        links = self.links.setdefault(session.id, {})
        link = links.get(worker.index)
        if link is not None and link.open:
            return link
        lock = self.link_locks.setdefault((session.id, worker.index), asyncio.Lock())
        async with lock:
            link = links.get(worker.index)
            if link is not None and link.open:
                return link
            link = await self._open_link(worker, session.id)
            if self.sessions.get(session.id) is not session or not worker.alive:
                await link.close(close_session=True)
                raise worker_unavailable()
            self.links.setdefault(session.id, {})[worker.index] = link
            return link

    async def _forward(
        self, session: Session, worker: Worker, method: str, params: dict[str, Any]
    ) -> Any:
        link = await self._link(session, worker)
        response = await link.call(method, params)
        if "error" in response:
            raise ForwardedError(response["error"])
        return _as_session(response.get("result"), session.id)

    async def _ask(self, worker: Worker, method: str, params: dict[str, Any]) -> Any:
        """A question on the front's own link (the ServerManager's)."""
        if worker.control is None or not worker.control.open:
            raise worker_unavailable()
        response = await worker.control.call(method, params)
        if "error" in response:
            raise ForwardedError(response["error"])
        return response.get("result")

    # -- events -------------------------------------------------------------------------------

    def on_event(self, link: Link, message: dict[str, Any]) -> None:
        value = (message.get("params") or {}).get("value") or {}
        if link.session is None:  # the front's own subscription: the manager's events
            data = value.get("data") or {}
            kind = value.get("type")
            if kind == "ObjectCreated" and isinstance(data.get("object"), str):
                link.worker.objects.add(data["object"])
                if "/" not in data["object"]:
                    self.pipelines.setdefault(data["object"], link.worker.index)
            elif kind == "ObjectDestroyed" and isinstance(data.get("objectId"), str):
                link.worker.objects.discard(data["objectId"])
                if self.pipelines.get(data["objectId"]) == link.worker.index:
                    del self.pipelines[data["objectId"]]
            if kind in MANAGER_EVENTS:
                self._manager_event(kind, data)
            return
        session = self.sessions.get(link.session)
        if session is not None and session.connection is not None:
            session.connection.send(message)  # dropped for a detached session, as in KMS

    def _manager_event(self, event: str, data: dict[str, Any]) -> None:
        listeners = self.sessions.listeners.get(MANAGER_ID, {}).get(event)
        if not listeners:
            return
        sent: set[tuple[str, str]] = set()
        for subscription in tuple(listeners.values()):
            session = self.sessions.get(subscription.session_id)
            if session is None or session.connection is None:
                continue
            if (session.id, subscription.event) in sent:
                continue
            sent.add((session.id, subscription.event))
            session.connection.send(
                {
                    "jsonrpc": "2.0",
                    "method": "onEvent",
                    "params": {
                        "value": {
                            "object": MANAGER_ID,
                            "type": subscription.event,
                            "data": {**data, "type": subscription.event},
                        }
                    },
                }
            )

    # -- sessions -----------------------------------------------------------------------------

    def _new_session(self, conn: ClientConnection, session_id: str | None = None) -> Session:
        session = super()._new_session(conn, session_id)
        heir_of = session_id if session_id in self.lost else getattr(conn, "heir_of", None)
        lost = self.lost.pop(heir_of, None) if heir_of else None
        conn.heir_of = None  # type: ignore[attr-defined]
        if lost is not None:
            for link in lost.links.values():
                link.session = session.id
            self.links.setdefault(session.id, {}).update(lost.links)
            session.objects |= lost.objects
            logger.info("session %s takes over what lost session %s held", session.id, heir_of)
        return session

    async def _connect(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        session_id = params.get("sessionId")
        if isinstance(session_id, str) and session_id in self.lost:
            conn.heir_of = session_id  # type: ignore[attr-defined]
            logger.info("session %s was lost with a worker: 40007 to %s", session_id, conn)
            raise KurentoError(Code.INVALID_SESSION, "Invalid session")
        return await super()._connect(conn, session, params)

    async def _close_session(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        self.sessions.end(session)
        release = params.get("release") is True
        for link in self.links.pop(session.id, {}).values():
            await link.close(close_session=True, release=release)
        return None

    async def collect(self) -> None:
        """Sessions detached past the grace period end here and on every worker (which
        releases what only they held); so do lost sessions nobody took over."""
        grace = self.config.session_grace
        for session in self.sessions.expired(grace):
            logger.info("session %s expired after %.0f s", session.id, grace)
            self.sessions.end(session)
        limit = time.monotonic() - grace
        for session_id in [s for s, lost in self.lost.items() if lost.at <= limit]:
            for link in self.lost.pop(session_id).links.values():
                await link.close(close_session=True)
        # Links of sessions that ended (expired, or left empty by a socket that moved on).
        for session_id in [s for s in self.links if self.sessions.get(s) is None]:
            for link in self.links.pop(session_id).values():
                await link.close(close_session=True)
        for key in [k for k in self.link_locks if k[0] not in self.links]:
            del self.link_locks[key]

    # -- methods ------------------------------------------------------------------------------

    async def _create(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        type_name = params.get("type")
        is_pipeline = (
            isinstance(type_name, str) and type_name.removeprefix("kurento.") == "MediaPipeline"
        )
        if is_pipeline:
            worker = self._least_loaded()
        else:
            ctor = params.get("constructorParams")
            parent = None
            if isinstance(ctor, dict):
                parent = ctor.get("mediaPipeline") or ctor.get("hub")
            worker = self._route(parent)
        worker.pending_creates += 1
        try:
            result = await self._forward(session, worker, "create", params)
        finally:
            worker.pending_creates -= 1
        object_id = result.get("value") if isinstance(result, dict) else None
        if isinstance(object_id, str):
            worker.objects.add(object_id)
            session.objects.add(object_id)
            if is_pipeline:
                self.pipelines[object_id] = worker.index
                logger.info(
                    "pipeline %s on worker %d (pid %s)", object_id, worker.index, worker.pid
                )
        return result

    async def _invoke(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id == MANAGER_ID:
            return {"value": await self._manager_invoke(params), "sessionId": session.id}
        return await self._forward(session, self._route(object_id), "invoke", params)

    async def _manager_invoke(self, params: dict[str, Any]) -> Any:
        operation = params.get("operation")
        if operation == "getSessions":
            return self.sessions.ids()
        live = self._live()
        if not live:
            raise worker_unavailable()
        if operation == "getPipelines":
            answers = await asyncio.gather(
                *(self._ask(w, "invoke", params) for w in live), return_exceptions=True
            )
            return [p for a in answers if isinstance(a, dict) for p in a.get("value") or []]
        if operation in _SUMMED:
            answers = await asyncio.gather(*(self._ask(w, "invoke", params) for w in live))
            total = sum(a.get("value") or 0 for a in answers)
            return round(total, 2) if isinstance(total, float) else total
        return (await self._ask(live[0], "invoke", params)).get("value")

    async def _describe(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id == MANAGER_ID:
            return _as_session(await self._ask(self._any_worker(), "describe", params), session.id)
        return await self._forward(session, self._route(object_id), "describe", params)

    async def _subscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id != MANAGER_ID:
            return await self._forward(session, self._route(object_id), "subscribe", params)
        return self._subscribe_session(session, MANAGER_ID, MANAGER_SUPPORTED_EVENTS, params)

    async def _unsubscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        subscription = params.get("subscription")
        if not isinstance(subscription, str):
            raise KurentoError(Code.INVALID_PARAMS, "'subscription' must be a string")
        if subscription in session.subscriptions:  # the manager's, kept here
            self.sessions.unsubscribe(session, subscription)
            return {"sessionId": session.id}
        object_id = params.get("object")
        if isinstance(object_id, str) and object_id != MANAGER_ID:
            return await self._forward(session, self._route(object_id), "unsubscribe", params)
        for link in list(self.links.get(session.id, {}).values()):  # no object: ask them all
            with contextlib.suppress(KurentoError):
                await link.call("unsubscribe", params)
        return {"sessionId": session.id}

    async def _release(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id == MANAGER_ID:
            return {"sessionId": session.id}
        result = await self._forward(session, self._route(object_id), "release", params)
        if "/" not in object_id:
            self.pipelines.pop(object_id, None)
        return result

    async def _ref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id == MANAGER_ID:
            return {"sessionId": session.id}
        result = await self._forward(session, self._route(object_id), "ref", params)
        session.objects.add(object_id)
        return result

    async def _unref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        if object_id == MANAGER_ID:
            return {"sessionId": session.id}
        worker = self._route(object_id)
        link = self.links.get(session.id, {}).get(worker.index)
        session.objects.discard(object_id)
        if link is None:  # the session holds nothing there: nothing to let go of
            return {"sessionId": session.id}
        return await self._forward(session, worker, "unref", params)


def _as_session(result: Any, session_id: str) -> Any:
    if isinstance(result, dict) and "sessionId" in result:
        return {**result, "sessionId": session_id}
    return result


def worker_port_range(low: int, high: int, index: int, count: int) -> tuple[int, int]:
    """Worker `index`'s share of the media port range (each its own, so they never collide)."""
    size = high - low + 1
    if size < count:
        return low, high  # too few to split: they share (and may collide)
    share = size // count
    start = low + index * share
    end = high if index == count - 1 else start + share - 1
    return start, end


def die_with_parent(parent_pid: int) -> None:
    """A worker ends when the front does, however it ends (Linux: PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
