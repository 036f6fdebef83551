"""The Kurento Protocol over WebSocket: JSON-RPC requests in, responses and onEvent notifications
out.

One `MediaServer` holds the object registry and the sessions. Each socket is a `ClientConnection`
with its own rate limit and an ordered outbox; each request runs as its own task, so one slow
negotiation never holds up the rest of the socket, while operations on one object stay ordered by
the object.

Whatever a client sends below the frame limit is answered, never with a closed socket: bad JSON,
bad requests and requests past a limit (limits.py) get JSON-RPC or Kurento errors. A client that
sends faster than it reads its answers is simply not read from until it catches up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from signaling.ratelimit import TokenBucket  # Django-free: the one rate limiter

from . import fanout, forwarding, ice
from .config import Config
from .elements import MediaElement, MediaPipeline, PassThrough, ServerManager
from .errors import Code, KurentoError, marshall_error, too_many
from .filters import FILTER_FACTORIES
from .http_post import HttpPostEndpoint, HttpPostServer
from .hubs import HUB_FACTORIES, Composite, Hub, HubPort
from .kmd import enum_values
from .limits import (
    MAX_ELEMENTS_PER_PIPELINE,
    MAX_NESTING_DEPTH,
    MAX_OBJECTS_PER_SESSION,
    MAX_SESSION_ID,
    MAX_SESSIONS_PER_CONNECTION,
    MAX_TRANSACTION_OPERATIONS,
)
from .objects import EVENT_ALIASES, MediaObject, Registry
from .player import PlayerEndpoint
from .recorder import RecorderEndpoint
from .rtp_endpoint import RtpEndpoint
from .rtp_sdp import sdes_param
from .sessions import Session, Sessions
from .webrtc import IceDefaults, WebRtcEndpoint

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # beyond this the socket is closed (1009); below, answered
MAX_IN_FLIGHT = 256
# Answers and events waiting for a socket: past the high-water mark its requests are not read
# until the queue is down to the low-water mark; past the limit (events the client never reads)
# the socket is closed (1008).
OUTBOX_HIGH_WATER = 1_000
OUTBOX_LOW_WATER = 100
OUTBOX_LIMIT = 10_000
COLLECT_INTERVAL = 5.0
FLOW_CHECK_INTERVAL = 0.5
_NEWREF = re.compile(r"newref:([0-9]+)")
_MAX_NEWREF_DIGITS = 9

Handler = Callable[["ClientConnection", Session | None, dict[str, Any]], Awaitable[Any]]


class ClientConnection:
    """One WebSocket: its bound session, rate limit, in-flight requests and ordered outbox."""

    _serial = 0

    def __init__(self, ws: ServerConnection, config: Config) -> None:
        ClientConnection._serial += 1
        self.name = (
            f"socket#{ClientConnection._serial}({ws.remote_address[0]}:{ws.remote_address[1]})"
        )
        self.ws = ws
        self.session: Session | None = None
        self.created: list[Session] = []  # sessions this socket made, to bound them
        self.bucket = TokenBucket(config.requests_per_second, config.request_burst)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.drained = asyncio.Event()  # clear while the outbox is above its high-water mark
        self.drained.set()
        self.writer = asyncio.create_task(self._write())
        self.closing: asyncio.Future[None] | None = None

    def __str__(self) -> str:
        return self.name

    def send(self, message: dict[str, Any]) -> None:
        if self.closing is not None:
            return
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            logger.warning("%s is not reading; closing it", self)
            self.closing = asyncio.ensure_future(self.ws.close(1008, "not reading"))
            return
        self.outbox.put_nowait(json.dumps(message, separators=(",", ":")))
        if self.outbox.qsize() >= OUTBOX_HIGH_WATER:
            self.drained.clear()

    async def _write(self) -> None:
        try:
            while (text := await self.outbox.get()) is not None:
                try:
                    await self.ws.send(text)
                except websockets.ConnectionClosed:
                    return
                if self.outbox.qsize() <= OUTBOX_LOW_WATER:
                    self.drained.set()
        finally:
            self.drained.set()  # nothing will drain it any more: let the reader see the close

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        await asyncio.gather(self.writer, return_exceptions=True)


_send_path_logged = False


def _log_send_path() -> None:
    """Say once per process which fan-out send path is in use (fanout.py)."""
    global _send_path_logged
    if not _send_path_logged:
        _send_path_logged = True
        logger.info("RTP send path: %s", fanout.describe())


class MediaServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_id = str(uuid.uuid4())
        self.sessions = Sessions()
        self.registry = Registry(self._deliver_event)
        for cls in (
            MediaPipeline,
            PassThrough,
            WebRtcEndpoint,
            RecorderEndpoint,
            PlayerEndpoint,
            *HUB_FACTORIES,
            RtpEndpoint,
            HttpPostEndpoint,
            *FILTER_FACTORIES,
        ):
            self.registry.register_factory(cls)
        self.http_post = HttpPostServer(config.host)
        self.manager = ServerManager(self.registry, self.sessions)
        self.ice_defaults = IceDefaults(config.stun_address, config.stun_port, config.turn_url)
        self.connections: set[ClientConnection] = set()
        self._ws_server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers = self._method_handlers()

    def _method_handlers(self) -> dict[str, Handler]:
        """The Kurento Protocol's methods and what answers each (a subclass's own methods, where
        it has them: the `--workers` front routes the same methods to its workers)."""
        return {
            "ping": self._ping,
            "connect": self._connect,
            "create": self._create,
            "invoke": self._invoke,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "release": self._release,
            "describe": self._describe,
            "ref": self._ref,
            "unref": self._unref,
            "keepAlive": self._keep_alive,
            "closeSession": self._close_session,
            "transaction": self._transaction,
        }

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        forwarding.install()
        _log_send_path()
        ice.configure(
            ice.IcePolicy(
                addresses=self.config.ice_addresses,
                announced_address=self.config.announced_address,
                port_min=self.config.port_min,
                port_max=self.config.port_max,
            )
        )
        self._ws_server = await serve(
            self._serve_socket,
            self.config.host,
            self.config.port,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            process_request=self._check_path,
            ping_interval=20,
            ping_timeout=20,
        )
        self._tasks = [
            asyncio.create_task(self._collect_sessions()),
            asyncio.create_task(self._watch_media_flow()),
        ]
        logger.info(
            "media server %s listening on %s (ICE on %s%s)",
            self.server_id,
            self.url,
            ",".join(self.config.ice_addresses),
            f", announced as {self.config.announced_address}"
            if self.config.announced_address
            else "",
        )

    @property
    def port(self) -> int:
        assert self._ws_server is not None
        return next(iter(self._ws_server.sockets)).getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{self.config.path}"

    async def stop(self) -> None:
        """Close every socket, release every pipeline, stop background tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        for pipeline in self.registry.pipelines():
            await pipeline.release()
        await self.http_post.close()
        logger.info("media server stopped")

    def _check_path(self, connection: ServerConnection, request: Any) -> Any:
        if request.path.split("?", 1)[0] != self.config.path:
            return connection.respond(HTTPStatus.NOT_FOUND, f"Not found; use {self.config.path}\n")
        return None

    # -- sockets ------------------------------------------------------------------------------

    async def _serve_socket(self, ws: ServerConnection) -> None:
        conn = ClientConnection(ws, self.config)
        self.connections.add(conn)
        logger.info("%s connected", conn)
        try:
            async for message in ws:
                # A client behind on reading its answers is not read from until it catches up
                # (closing it instead would punish a client that only sends in bursts).
                await conn.drained.wait()
                try:
                    self._accept(conn, message)
                except Exception:  # a bug here must not take the socket down with it
                    logger.exception("%s: a message could not be handled", conn)
                    conn.send(_error(None, KurentoError(Code.UNEXPECTED_ERROR, "Unexpected error")))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.connections.discard(conn)
            self.sessions.detach(conn)
            await conn.close()
            logger.info("%s closed", conn)

    def _accept(self, conn: ClientConnection, message: str | bytes) -> None:
        if isinstance(message, bytes):
            # The official Node.js client sends its JSON in binary frames; KMS takes both.
            try:
                message = message.decode()
            except UnicodeDecodeError:
                conn.send(_error(None, KurentoError(Code.PARSE_ERROR, "Parse error: not UTF-8")))
                return
        refusal = None
        if len(message) > self.config.max_request_bytes:
            refusal = KurentoError(
                Code.INVALID_REQUEST,
                f"Request too large ({len(message)} bytes, limit {self.config.max_request_bytes})",
            )
        elif not conn.bucket.take():
            refusal = KurentoError(Code.NOT_ENOUGH_RESOURCES, "Too many requests; slow down")
        elif len(conn.in_flight) >= MAX_IN_FLIGHT:
            refusal = KurentoError(
                Code.NOT_ENOUGH_RESOURCES, "Too many requests in flight on this connection"
            )
        if refusal is not None:
            conn.send(_error(_peek_id(message), refusal))
            return
        try:
            request = json.loads(message, parse_constant=_refuse_constant)
        except RecursionError:  # thousands of nested arrays or objects
            error = KurentoError(
                Code.PARSE_ERROR, f"Parse error: nested deeper than {MAX_NESTING_DEPTH} levels"
            )
            conn.send(_error(None, error))
            return
        except ValueError:
            conn.send(_error(None, KurentoError(Code.PARSE_ERROR, "Parse error: not JSON")))
            return
        if _deeper_than(request, MAX_NESTING_DEPTH):
            error = KurentoError(
                Code.INVALID_REQUEST,
                f"Invalid request: nested deeper than {MAX_NESTING_DEPTH} levels",
            )
            conn.send(_error(_request_id(request), error))
            return
        task = asyncio.create_task(self._answer(conn, request))
        conn.in_flight.add(task)
        task.add_done_callback(conn.in_flight.discard)

    async def _answer(self, conn: ClientConnection, request: Any) -> None:
        response = await self.handle(conn, request)
        if response is not None:
            conn.send(response)

    async def handle(
        self, conn: ClientConnection, request: Any, *, cached: bool = True
    ) -> dict[str, Any] | None:
        """Answer one JSON-RPC request (None for a notification). The operations inside a
        transaction are not cached on their own: their ids restart at 0 in every transaction."""
        request_id = _request_id(request)
        # A notification (no id) gets no answer; anything that is not even a request gets one.
        answer = not isinstance(request, dict) or "id" in request
        try:
            method, params = _validate(request)
            handler = self._handlers.get(method)
            if handler is None:
                raise KurentoError(Code.METHOD_NOT_FOUND, f"Method not found: '{method[:100]}'")
            session = self._session_for(conn, method, params)
            previous = session.cached_response(request) if cached and session else None
            if previous is not None:
                return previous
            result = await handler(conn, session, params)
        except KurentoError as error:
            logger.debug("%s: %s failed: %s", conn, _method_of(request), error.message)
            return _error(request_id, error) if answer else None
        except Exception as exc:  # a bug here must not take the socket down with it
            logger.exception("%s: %s crashed", conn, _method_of(request))
            error = KurentoError(Code.UNEXPECTED_ERROR, f"Unexpected error: {exc}")
            return _error(request_id, error) if answer else None
        if not answer:
            return None
        response = {"jsonrpc": "2.0", "id": request_id, "result": result}
        if cached and session is not None and method not in ("ping", "connect"):
            session.cache_response(request, response)
        return response

    def _session_for(
        self, conn: ClientConnection, method: str, params: dict[str, Any]
    ) -> Session | None:
        if method in ("ping", "connect"):
            return conn.session
        session_id = params.get("sessionId")
        if session_id is not None and (
            not isinstance(session_id, str) or len(session_id) > MAX_SESSION_ID
        ):
            raise KurentoError(
                Code.INVALID_PARAMS,
                f"'sessionId' must be a string of at most {MAX_SESSION_ID} characters",
            )
        session = self.sessions.get(session_id) if session_id else conn.session
        if session is None and method == "keepAlive":
            raise KurentoError(Code.INVALID_SESSION, "Invalid session")
        if session is None:
            # A new socket, or a session this server no longer knows (say it restarted): a new
            # session, under the id the client holds when it gave one, as KMS does.
            session = self._new_session(conn, session_id)
        self.sessions.bind(session, conn)
        return session

    def _new_session(self, conn: ClientConnection, session_id: str | None = None) -> Session:
        """A session made by this socket; a socket cannot keep making them without end (each
        session it leaves lives on, detached, for the grace period)."""
        conn.created = [s for s in conn.created if self.sessions.get(s.id) is s]
        if len(conn.created) >= MAX_SESSIONS_PER_CONNECTION:
            raise too_many(
                f"Too many sessions made on this connection (limit {MAX_SESSIONS_PER_CONNECTION})"
            )
        session = self.sessions.create(session_id)
        conn.created.append(session)
        return session

    # -- methods ------------------------------------------------------------------------------

    async def _ping(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        result: dict[str, Any] = {"value": "pong"}
        if session is not None:
            result["sessionId"] = session.id
        return result

    async def _connect(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        session_id = params.get("sessionId")
        if session_id is None:
            session = conn.session or self._new_session(conn)
        else:
            session = self.sessions.get(session_id) if isinstance(session_id, str) else None
            if session is None:
                raise KurentoError(Code.INVALID_SESSION, "Invalid session")
            logger.info("session %s resumed on %s", session.id, conn)
        self.sessions.bind(session, conn)
        return {"sessionId": session.id, "serverId": self.server_id}

    async def _create(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        cls = self.registry.factory(params.get("type"))
        ctor = params.get("constructorParams") or {}
        if not isinstance(ctor, dict):
            raise marshall_error("'constructorParams' should be an object")
        if len(session.objects) >= MAX_OBJECTS_PER_SESSION:
            raise too_many(f"Too many objects in this session (limit {MAX_OBJECTS_PER_SESSION})")
        obj = self._construct(cls, ctor)
        # As in KMS: whoever holds the pipeline holds what is made in it, and the creator holds
        # the new object with its pipeline. So a pipeline several sessions build in (one per web
        # worker) stays while any of them lives, not only while the one that made it does.
        if obj.parent is not None:
            for holder in self.sessions.holders(obj.parent.id):
                holder.objects.add(obj.id)
        _hold(session, obj)
        logger.info("session %s created %s", session.id, obj.id)
        self.manager.emit("ObjectCreated", object=obj.id)
        return {"value": obj.id, "sessionId": session.id}

    def _construct(self, cls: type[MediaObject], ctor: dict[str, Any]) -> MediaObject:
        if cls is MediaPipeline:
            return MediaPipeline(self.registry)
        if cls is HubPort:
            return self._construct_hub_port(ctor)
        pipeline_id = ctor.get("mediaPipeline")
        if pipeline_id is None:
            raise marshall_error(f"{cls.TYPE} needs the constructor parameter 'mediaPipeline'")
        pipeline = self.registry.get(pipeline_id)
        if not isinstance(pipeline, MediaPipeline):
            raise KurentoError(
                Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, f"'{pipeline_id}' is not a MediaPipeline"
            )
        if len(pipeline.children) >= MAX_ELEMENTS_PER_PIPELINE:
            raise too_many(
                f"Too many elements in this pipeline (limit {MAX_ELEMENTS_PER_PIPELINE})"
            )
        if cls is WebRtcEndpoint:
            flags = {name: ctor.get(name, False) for name in ("recvonly", "sendonly")}
            if not all(isinstance(v, bool) for v in flags.values()):
                raise marshall_error("'recvonly' and 'sendonly' parameters should be booleans")
            if flags["recvonly"] and flags["sendonly"]:
                raise KurentoError(
                    Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
                    "A WebRtcEndpoint cannot be both recvonly and sendonly",
                )
            return WebRtcEndpoint(
                self.registry,
                pipeline,
                ice=self.ice_defaults,
                **flags,
                use_data_channels=_constructor_param(ctor, "useDataChannels", bool, False),
                qos_dscp=_enum_param(ctor, "qosDscp", "DSCPValue", "NO_VALUE"),
                # Checked, then served with aiortc's ECDSA certificate either way (webrtc.py).
                certificate_key_type=_enum_param(
                    ctor, "certificateKeyType", "CertificateKeyType", "RSA"
                ),
            )
        if cls is RecorderEndpoint:
            return RecorderEndpoint(
                self.registry,
                pipeline,
                uri=_constructor_param(ctor, "uri", str),
                directory=Path(self.config.recordings_dir).resolve(),
                media_profile=_constructor_param(ctor, "mediaProfile", str, "WEBM"),
                stop_on_end_of_stream=_constructor_param(ctor, "stopOnEndOfStream", bool, False),
            )
        if cls is PlayerEndpoint:
            return PlayerEndpoint(
                self.registry,
                pipeline,
                uri=_constructor_param(ctor, "uri", str),
                directory=Path(self.config.recordings_dir).resolve(),
                use_encoded_media=_constructor_param(ctor, "useEncodedMedia", bool, False),
                network_cache=_constructor_param(ctor, "networkCache", int, 2000),
            )
        if cls is Composite:
            return Composite(
                self.registry,
                pipeline,
                width=_constructor_param(ctor, "width", int, 800),
                height=_constructor_param(ctor, "height", int, 600),
                framerate=_constructor_param(ctor, "framerate", int, 15),
            )
        if cls is RtpEndpoint:
            return self._rtp_endpoint(pipeline, ctor)
        if cls is HttpPostEndpoint:
            return HttpPostEndpoint(
                self.registry,
                pipeline,
                server=self.http_post,
                disconnection_timeout=_constructor_param(ctor, "disconnectionTimeout", int, 2),
                use_encoded_media=_constructor_param(ctor, "useEncodedMedia", bool, False),
            )
        assert issubclass(cls, MediaElement | Hub)
        return cls(self.registry, pipeline)  # type: ignore[call-arg]

    def _construct_hub_port(self, ctor: dict[str, Any]) -> HubPort:
        """A HubPort is made in a hub (its parent), not in a pipeline."""
        hub_id = _constructor_param(ctor, "hub", str)
        hub = self.registry.get(hub_id)
        if not isinstance(hub, Hub):
            raise KurentoError(Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, f"'{hub_id}' is not a Hub")
        if len(hub.children) >= MAX_ELEMENTS_PER_PIPELINE:
            raise too_many(f"Too many ports in this hub (limit {MAX_ELEMENTS_PER_PIPELINE})")
        return HubPort(self.registry, hub)

    def _rtp_endpoint(self, pipeline: MediaPipeline, ctor: dict[str, Any]) -> RtpEndpoint:
        """An RtpEndpoint on the first configured media address of the family it asks for
        (`useIpv6`); with none of that family it is made, and its negotiation is refused."""
        sdes = sdes_param(ctor.get("crypto"))
        ipv6 = _constructor_param(ctor, "useIpv6", bool, False)
        address = next(
            (a for a in self.config.ice_addresses if (":" in a) == ipv6),
            None,
        )
        announced = self.config.announced_address if address is not None else None
        return RtpEndpoint(
            self.registry,
            pipeline,
            address=address,
            announced=announced,
            port_range=(self.config.port_min, self.config.port_max),
            sdes=sdes,
        )

    async def _invoke(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        operation_params = params.get("operationParams") or {}
        if not isinstance(operation_params, dict):
            raise marshall_error("'operationParams' should be an object")
        logger.debug("session %s: %s.%s", session.id, obj.id, params.get("operation"))
        value = await obj.invoke(params.get("operation"), operation_params)
        return {"value": value, "sessionId": session.id}

    async def _subscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        return self._subscribe_session(session, obj.id, obj.supported_events(), params)

    def _subscribe_session(
        self, session: Session, object_id: str, supported: Iterable[str], params: dict
    ) -> dict[str, Any]:
        """Subscribe the session to the event `params` names on the object, if it has it."""
        event = params.get("type")
        if not isinstance(event, str):
            raise KurentoError(Code.INVALID_PARAMS, "'type' must be an event name")
        canonical = EVENT_ALIASES.get(event, event)
        if canonical not in supported:
            raise KurentoError(
                Code.MEDIA_OBJECT_EVENT_NOT_SUPPORTED, f"Event '{event}' not supported"
            )
        subscription = self.sessions.subscribe(session, object_id, event, canonical)
        return {"value": subscription, "sessionId": session.id}

    async def _unsubscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        subscription = params.get("subscription")
        if not isinstance(subscription, str):
            raise KurentoError(Code.INVALID_PARAMS, "'subscription' must be a string")
        self.sessions.unsubscribe(session, subscription)
        return {"sessionId": session.id}

    async def _release(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        obj = self.registry.objects.get(object_id)
        if obj is not None:
            logger.info("session %s releases %s", session.id, object_id)
            await self._release_object(obj)
        return {"sessionId": session.id}

    async def _release_object(self, obj: MediaObject) -> None:
        doomed = [obj.id] + [o for o in self.registry.objects if o.startswith(obj.id + "/")]
        await obj.release()
        for object_id in doomed:
            if object_id not in self.registry.objects:
                self.sessions.forget_object(object_id)
                self.manager.emit("ObjectDestroyed", objectId=object_id)

    async def _describe(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        return {**obj.describe(), "sessionId": session.id}

    async def _ref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        _hold(session, self.registry.get(_object_param(params)))
        return {"sessionId": session.id}

    async def _unref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        """As KMS: letting go of an object the session does not hold (or nobody knows) is no
        error."""
        assert session is not None
        object_id = _object_param(params)
        if object_id in session.objects:
            session.objects.discard(object_id)
            await self._release_unheld([object_id])
        return {"sessionId": session.id}

    async def _keep_alive(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        """Refreshes a session the server knows; an unknown one is 40007, as in KMS (see
        `_session_for`: keepAlive never makes a session)."""
        assert session is not None
        return {"sessionId": session.id}

    async def _close_session(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        held = self.sessions.end(session)
        if params.get("release") is True:
            for object_id in held:
                if (obj := self.registry.objects.get(object_id)) is not None:
                    await self._release_object(obj)
        else:
            await self._release_unheld(held)
        return None

    async def _transaction(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        operations = params.get("operations")
        if not isinstance(operations, list):
            raise KurentoError(Code.INVALID_PARAMS, "'operations' must be a list")
        if len(operations) > MAX_TRANSACTION_OPERATIONS:
            raise too_many(
                f"Too many operations in one transaction ({len(operations)}, "
                f"limit {MAX_TRANSACTION_OPERATIONS})"
            )
        # Every operation is checked before any runs, so a malformed one changes nothing.
        for index, operation in enumerate(operations):
            if not isinstance(operation, dict) or operation.get("method") == "transaction":
                raise KurentoError(Code.MALFORMED_TRANSACTION, "Malformed transaction operation")
            op_id = operation.get("id")
            if isinstance(op_id, bool) or op_id != index:  # as KMS
                raise KurentoError(
                    Code.MALFORMED_TRANSACTION, f"Id of request '{index}' should be '{index}'"
                )
            if not isinstance(operation.get("params"), dict | None):
                raise KurentoError(
                    Code.MALFORMED_TRANSACTION,
                    f"Malformed transaction: the params of request '{index}' must be an object",
                )
        responses: list[dict[str, Any]] = []
        results: list[Any] = []
        for operation in operations:
            operation = {**operation, "params": _resolve_newrefs(operation.get("params"), results)}
            operation.setdefault("jsonrpc", "2.0")
            operation["params"] = {**(operation.get("params") or {}), "sessionId": session.id}
            response = await self.handle(conn, operation, cached=False)
            assert response is not None
            responses.append(response)
            result = response.get("result")
            results.append(result.get("value") if isinstance(result, dict) else None)
            if "error" in response:
                break
        return {"value": responses, "sessionId": session.id}

    # -- events and housekeeping ----------------------------------------------------------------

    def _deliver_event(self, obj: MediaObject, event: str, data: dict[str, Any]) -> None:
        """Send the event to each session subscribed to it, once per session and name it was
        subscribed with, however many subscriptions it holds. `data.type` is the event's name,
        in the spelling subscribed with, except for Error, whose `type` field is the error's
        own type (KMS's Error event has no other)."""
        listeners = self.sessions.listeners.get(obj.id, {}).get(event)
        if not listeners:
            return
        sent: set[tuple[str, str]] = set()
        for subscription in tuple(listeners.values()):
            session = self.sessions.get(subscription.session_id)
            if session is None or session.connection is None:
                continue  # events for a detached session are dropped, as in KMS
            if (session.id, subscription.event) in sent:
                continue
            sent.add((session.id, subscription.event))
            data_type = data["type"] if event == "Error" else subscription.event
            session.connection.send(
                {
                    "jsonrpc": "2.0",
                    "method": "onEvent",
                    "params": {
                        "value": {
                            "object": obj.id,
                            "type": subscription.event,
                            "data": {**data, "type": data_type},
                        }
                    },
                }
            )

    async def _release_unheld(self, object_ids: set[str] | list[str]) -> None:
        for object_id in object_ids:
            obj = self.registry.objects.get(object_id)
            if obj is not None and obj is not self.manager and not self.sessions.holders(object_id):
                logger.info("releasing %s: no session holds it any more", object_id)
                await self._release_object(obj)

    async def collect(self) -> None:
        """End sessions detached longer than the grace period, releasing what only they held."""
        for session in self.sessions.expired(self.config.session_grace):
            logger.info("session %s expired after %.0f s", session.id, self.config.session_grace)
            await self._release_unheld(self.sessions.end(session))

    async def _collect_sessions(self) -> None:
        interval = min(COLLECT_INTERVAL, max(self.config.session_grace / 4, 0.05))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect()
            except Exception:
                logger.exception("session collection failed")

    async def _watch_media_flow(self) -> None:
        while True:
            await asyncio.sleep(FLOW_CHECK_INTERVAL)
            now = time.monotonic()
            for obj in tuple(self.registry.objects.values()):
                if isinstance(obj, MediaElement) and not obj.released:
                    obj.check_flow(now)


def _hold(session: Session, obj: MediaObject) -> None:
    """The session holds the object and, as in KMS, its parents (an element's pipeline)."""
    node: MediaObject | None = obj
    while node is not None:
        session.objects.add(node.id)
        node = node.parent


def _validate(request: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(request, dict):
        raise KurentoError(Code.INVALID_REQUEST, "Invalid request: not a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise KurentoError(Code.INVALID_REQUEST, "Invalid request: 'jsonrpc' must be \"2.0\"")
    if "id" in request and (
        isinstance(request["id"], bool) or not isinstance(request["id"], int | str | None)
    ):
        raise KurentoError(Code.INVALID_REQUEST, "Invalid request: 'id' must be a number or string")
    method = request.get("method")
    if not isinstance(method, str):
        raise KurentoError(Code.INVALID_REQUEST, "Invalid request: 'method' must be a string")
    params = request.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise KurentoError(Code.INVALID_PARAMS, "Invalid params: 'params' must be an object")
    return method, params


_MISSING = object()


def _constructor_param(ctor: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """A constructor parameter of the JSON type `kind`; a missing or mistyped one is refused
    with 40001 (MARSHALL_ERROR), as KMS's generated factories refuse it."""
    value = ctor.get(name, default)
    if value is _MISSING:
        raise KurentoError(Code.MARSHALL_ERROR, f"'{name}' parameter is required")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise KurentoError(Code.MARSHALL_ERROR, f"'{name}' parameter should be a {kind.__name__}")
    return value


def _enum_param(ctor: dict[str, Any], name: str, enum: str, default: str) -> str:
    """A constructor parameter of a Kurento enum type: a value not of the enum is refused with
    40001, as KMS's generated code refuses it while unmarshalling."""
    value = _constructor_param(ctor, name, str, default)
    if value not in enum_values(enum):
        raise KurentoError(Code.MARSHALL_ERROR, f"Invalid value for '{enum}': '{value[:64]}'")
    return value


def _object_param(params: dict[str, Any]) -> str:
    object_id = params.get("object")
    if not isinstance(object_id, str) or not object_id:
        raise KurentoError(Code.MISSING_OBJECT, "Invalid or missing 'object' parameter")
    return object_id


def _resolve_newrefs(value: Any, results: list[Any]) -> Any:
    if isinstance(value, str) and (match := _NEWREF.fullmatch(value)):
        digits = match.group(1)
        index = int(digits) if len(digits) <= _MAX_NEWREF_DIGITS else len(results)
        if index >= len(results) or not isinstance(results[index], str):
            raise KurentoError(Code.MALFORMED_TRANSACTION, f"Unresolved reference '{value}'")
        return results[index]
    if isinstance(value, dict):
        return {k: _resolve_newrefs(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_newrefs(v, results) for v in value]
    return value


def _error(request_id: Any, error: KurentoError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _peek_id(message: str) -> Any:
    """The id of a request refused unread, if it shows near the start (best effort)."""
    match = re.search(r'"id"\s*:\s*("(?:[^"\\]|\\.){0,64}"|-?\d{1,18})', message[:4096])
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:  # "\q", "007" and the like look like an id but are not JSON
        return None


def _request_id(request: Any) -> Any:
    """The id to answer with: an id that is no id is answered as null (JSON-RPC 2.0, 5.1)."""
    request_id = request.get("id") if isinstance(request, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        return None
    return request_id


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; JSON does not


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (without recursion: it is the
    protection against deep nesting)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _method_of(request: Any) -> str:
    return str(request.get("method"))[:50] if isinstance(request, dict) else "?"
