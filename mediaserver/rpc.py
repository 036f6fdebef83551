"""The Kurento Protocol's JSON-RPC over WebSocket, without the media: sockets, sessions and the
protocol's own methods (`ping`, `connect`, `keepAlive`, `transaction`, event subscriptions).

`RpcServer` is what the media server (server.py) and its `--workers` front (front.py) share: each
socket is a `ClientConnection` with its own rate limit and an ordered outbox; each request runs
as its own task, so one slow negotiation never holds up the rest of the socket, while operations
on one object stay ordered by the object. Kept free of the media modules (aiortc, PyAV), so the
front, which only routes, does not load them.

Whatever a client sends below the frame limit is answered, never with a closed socket: bad JSON,
bad requests and requests past a limit (limits.py) get JSON-RPC or Kurento errors. A client that
sends faster than it reads its answers is simply not read from until it catches up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection

from signaling.ratelimit import TokenBucket  # Django-free: the one rate limiter

from .config import Config
from .errors import Code, KurentoError, too_many
from .limits import (
    MAX_NESTING_DEPTH,
    MAX_SESSION_ID,
    MAX_SESSIONS_PER_CONNECTION,
    MAX_TRANSACTION_OPERATIONS,
)
from .objects import EVENT_ALIASES
from .sessions import Session, Sessions

logger = logging.getLogger("mediaserver.server")

MAX_FRAME_BYTES = 4 * 1024 * 1024  # beyond this the socket is closed (1009); below, answered
MAX_IN_FLIGHT = 256
# Answers and events waiting for a socket: past the high-water mark its requests are not read
# until the queue is down to the low-water mark; past the limit (events the client never reads)
# the socket is closed (1008).
OUTBOX_HIGH_WATER = 1_000
OUTBOX_LOW_WATER = 100
OUTBOX_LIMIT = 10_000
COLLECT_INTERVAL = 5.0
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


class RpcServer:
    """Sockets and sessions; a subclass answers the methods about objects."""

    config: Config
    server_id: str
    sessions: Sessions
    connections: set[ClientConnection]
    _handlers: dict[str, Handler]

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    async def collect(self) -> None:
        """End sessions detached longer than the grace period (and what only they held)."""
        raise NotImplementedError

    # The methods about objects, which a subclass answers (`_method_handlers`).
    async def _create(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _invoke(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _subscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        raise NotImplementedError

    async def _unsubscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        raise NotImplementedError

    async def _release(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _describe(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _ref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _unref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        raise NotImplementedError

    async def _close_session(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        raise NotImplementedError

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

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{self.config.path}"

    def _check_path(self, connection: ServerConnection, request: Any) -> Any:
        if request.path.split("?", 1)[0] != self.config.path:
            return connection.respond(HTTPStatus.NOT_FOUND, f"Not found; use {self.config.path}\n")
        return None

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

    async def _keep_alive(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        """Refreshes a session the server knows; an unknown one is 40007, as in KMS (see
        `_session_for`: keepAlive never makes a session)."""
        assert session is not None
        return {"sessionId": session.id}

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

    async def _collect_sessions(self) -> None:
        interval = min(COLLECT_INTERVAL, max(self.config.session_grace / 4, 0.05))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect()
            except Exception:
                logger.exception("session collection failed")


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
