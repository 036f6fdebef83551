"""An asyncio client of the Kurento Protocol: JSON-RPC 2.0 over one WebSocket.

One `KurentoClient` talks to one media server (Kurento Media Server 7 or the embedded
`mediaserver/`) from one event loop. It

- matches responses to requests by id, each request with a timeout;
- learns the session id from the first response and sends it with every later request;
- keeps the connection alive with `ping` and reconnects on its own, with a short backoff, as soon
  as the socket drops (however it drops), then resumes the session with `connect {"sessionId"}`
  so the media objects and event subscriptions survive. When the server no longer knows the
  session (error 40007: it restarted, or the grace period passed) the objects are gone: the
  client forgets its subscriptions, starts a new session with the next request and tells its
  state listeners (`session_lost`);
- tells its state listeners when it connects, reconnects, loses its session, and when the server
  has been unreachable for `down_after` seconds (`down`), so that the caller can heal;
- re-sends requests that were in flight when the socket dropped, with their original ids: the
  server answers a repeated (session, id) from its response cache, so nothing happens twice;
- delivers `onEvent` notifications to the callbacks subscribed to (object, event type).

It imports nothing from Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from signaling.kurento.errors import (
    InvalidSession,
    KurentoError,
    MediaServerUnavailable,
    RequestTimeout,
    error_from_response,
)

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
StateCallback = Callable[["ConnectionState"], Awaitable[None] | None]


class ConnectionState(enum.Enum):
    """What a state listener hears about the connection to the media server."""

    CONNECTED = "connected"  # the first connection (or the first after a session was lost)
    RESUMED = "resumed"  # a new socket took the session back: every object is still there
    SESSION_LOST = "session_lost"  # the server forgot the session: every object is gone
    DOWN = "down"  # no connection for `down_after` seconds (said once per outage)


# Reconnecting is cheap and a restarted server should be found within a second.
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 1.0
# Requests wait for a reconnect during the first moments of an outage only.
_FAIL_FAST_AFTER = 1.5


@dataclass(eq=False)
class Subscription:
    """One event subscription: the server's id for it, what it watches, and the callback."""

    id: str
    object_id: str
    event: str
    callback: EventCallback


@dataclass(eq=False)
class _Pending:
    message: dict[str, Any]
    future: asyncio.Future[Any] = field(repr=False)
    # The request must not be sent before this generation's connection is ready (see _send).
    sent_on: int = -1


class KurentoClient:
    def __init__(
        self,
        url: str,
        *,
        request_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
        down_after: float = 5.0,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        # A server that froze (no close, no answers) is noticed after an unanswered ping.
        self.ping_interval = ping_interval
        self.down_after = down_after
        self.max_message_bytes = max_message_bytes
        self.session_id: str | None = None
        self.server_id: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._listeners: list[StateCallback] = []
        self._ws: ClientConnection | None = None
        self._generation = 0  # counts connections made
        self._ready = asyncio.Event()  # set while a connection is open and its session resumed
        self._waiters: set[asyncio.Future[None]] = set()  # requests waiting for a connection
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = "not connected yet"
        self._callbacks: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None  # loop time the current outage began
        self._down_told = False

    # --- life cycle -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the connection (if not already open); MediaServerUnavailable if it cannot."""
        await self._wait_ready(self.connect_timeout)

    async def close(self) -> None:
        """Close the socket and stop reconnecting (the server keeps our objects a grace period)."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self._fail_all(MediaServerUnavailable("The Kurento client was closed."))
        for task in tuple(self._callbacks):
            task.cancel()

    def on_state(self, callback: StateCallback) -> None:
        """Call `callback(state)` on every ConnectionState change (in a task of its own, so it
        may make requests on this client)."""
        self._listeners.append(callback)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # --- requests ---------------------------------------------------------------------------
    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, within: float | None = None
    ) -> Any:
        """Send one request and return its `result`, answered `within` seconds.

        Raises KurentoError for an error answer, MediaServerUnavailable for no answer.
        """
        if self._closed:
            raise MediaServerUnavailable("The Kurento client was closed.")
        timeout = self.request_timeout if within is None else within
        deadline = asyncio.get_running_loop().time() + timeout
        await self._wait_ready(timeout)
        try:
            result = await self._exchange(method, params, deadline)
        except TimeoutError:
            raise RequestTimeout(
                f"The media server did not answer '{method}' within {timeout:g} s."
            ) from None
        if isinstance(result, dict) and isinstance(result.get("sessionId"), str):
            self._learn_session(result["sessionId"])
        return result

    async def create(self, type_name: str, **constructor_params: Any) -> str:
        result = await self.request(
            "create", {"type": type_name, "constructorParams": constructor_params}
        )
        return _value(result, str, "create")

    async def invoke(self, object_id: str, operation: str, **params: Any) -> Any:
        body: dict[str, Any] = {"object": object_id, "operation": operation}
        if params:
            body["operationParams"] = params
        result = await self.request("invoke", body)
        return result.get("value") if isinstance(result, dict) else None

    async def release(self, object_id: str) -> None:
        """Release an object (and its children). Releasing a gone object is not an error."""
        for subscription in [s for s in self._subscriptions.values() if _owned(s, object_id)]:
            self._subscriptions.pop(subscription.id, None)
        await self.request("release", {"object": object_id})

    async def subscribe(self, object_id: str, event: str, callback: EventCallback) -> Subscription:
        result = await self.request("subscribe", {"object": object_id, "type": event})
        subscription = Subscription(_value(result, str, "subscribe"), object_id, event, callback)
        self._subscriptions[subscription.id] = subscription
        return subscription

    def keep_subscriptions_of(self, pipelines: set[str]) -> int:
        """After SESSION_LOST: forget the subscriptions of objects outside `pipelines` (the
        server's pipelines that are still there: an element's id begins with its pipeline's);
        how many were forgotten. The rest go on delivering events to the new session."""
        gone = [
            s for s in self._subscriptions.values() if s.object_id.split("/", 1)[0] not in pipelines
        ]
        for subscription in gone:
            del self._subscriptions[subscription.id]
        return len(gone)

    async def unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.pop(subscription.id, None) is None:
            return
        await self.request(
            "unsubscribe",
            {"object": subscription.object_id, "subscription": subscription.id},
        )

    # --- the connection ---------------------------------------------------------------------
    async def _wait_ready(self, within: float) -> None:
        if self._ready.is_set():
            return
        if self._closed:
            raise MediaServerUnavailable("The Kurento client was closed.")
        loop = asyncio.get_running_loop()
        if self._down_since is not None and loop.time() - self._down_since > _FAIL_FAST_AFTER:
            # A server away for a while is not waited for: callers (releases in a row, say)
            # learn at once, and the reconnect loop goes on by itself.
            raise MediaServerUnavailable(
                f"Cannot reach the media server at {self.url}: {self._last_error}"
            )
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"kurento-client {self.url}")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter
        except TimeoutError:
            raise MediaServerUnavailable(
                f"Cannot reach the media server at {self.url}: {self._last_error}"
            ) from None
        finally:
            self._waiters.discard(waiter)

    async def _run(self) -> None:
        """Connect, and reconnect whenever the connection drops, until closed."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.connect_timeout,
                    max_size=self.max_message_bytes,
                    ping_interval=None,  # the protocol's own ping keeps the session alive
                    compression=None,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as error:
                self._last_error = str(error) or type(error).__name__
                self._wake_waiters(
                    MediaServerUnavailable(
                        f"Cannot reach the media server at {self.url}: {self._last_error}"
                    )
                )
                self._note_outage(loop.time())
                attempt += 1
                await asyncio.sleep(_backoff(attempt))
                continue
            attempt = 0
            self._generation += 1
            self._ws = ws
            # A first connection is routine (health probes make one each); a reconnect is news.
            logger.log(
                logging.INFO if self._generation > 1 else logging.DEBUG,
                "connected to the media server at %s",
                self.url,
            )
            reader = asyncio.create_task(self._read(ws))
            try:
                state = await self._resume(ws)
                self._ready.set()
                self._down_since, self._down_told = None, False
                self._tell(state)
                self._wake_waiters(None)
                for pending in list(self._pending.values()):
                    await self._send(pending)
                await self._keep_alive(reader)
                self._last_error = "the connection closed"
            except (ConnectionClosed, OSError, MediaServerUnavailable) as error:
                self._last_error = str(error) or type(error).__name__
            finally:
                self._ready.clear()
                self._ws = None
                reader.cancel()
                # The reader ends with the socket, often by raising (an abnormal close): that is
                # why we are here, and it must not end the reconnect loop.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                with contextlib.suppress(Exception):
                    await ws.close()
            if not self._closed:
                logger.warning(
                    "lost the media server at %s (%s); reconnecting", self.url, self._last_error
                )
                self._note_outage(loop.time())
                await asyncio.sleep(_backoff(1))

    def _note_outage(self, now: float) -> None:
        """Count the outage from its first failure; say DOWN once it lasted `down_after`."""
        if self._down_since is None:
            self._down_since = now
        if not self._down_told and now - self._down_since >= self.down_after:
            self._down_told = True
            logger.warning(
                "the media server at %s has been unreachable for %.1f s", self.url, self.down_after
            )
            self._tell(ConnectionState.DOWN)

    async def _resume(self, ws: ClientConnection) -> ConnectionState:
        """On a new socket, take the session back; learn when the server has forgotten it."""
        if self.session_id is None:
            return ConnectionState.CONNECTED
        loop = asyncio.get_running_loop()
        try:
            result = await self._exchange(
                "connect",
                {"sessionId": self.session_id},
                loop.time() + self.request_timeout,
                on=ws,
            )
        except InvalidSession:
            logger.warning(
                "the media server at %s forgot session %s: its media objects are gone",
                self.url,
                self.session_id,
            )
            self.session_id = None
            # The subscriptions stay until the listeners learn which objects are gone
            # (`keep_subscriptions_of`): a media server of several workers that lost one of
            # them keeps the others' objects, and their events, for the next session.
            return ConnectionState.SESSION_LOST
        except TimeoutError:
            raise MediaServerUnavailable("no answer to connect") from None
        if isinstance(result, dict) and isinstance(result.get("serverId"), str):
            self.server_id = result["serverId"]
        logger.info("resumed media server session %s", self.session_id)
        return ConnectionState.RESUMED

    def _tell(self, state: ConnectionState) -> None:
        for listener in list(self._listeners):
            self._spawn(listener, state, f"the {state.value} listener")

    async def _keep_alive(self, reader: asyncio.Task[None]) -> None:
        """Ping every `ping_interval` s; return when the socket closes or a ping goes unanswered."""
        while True:
            done, _ = await asyncio.wait({reader}, timeout=self.ping_interval)
            if done:
                return
            within = min(self.request_timeout, max(self.ping_interval, 2.0))
            deadline = asyncio.get_running_loop().time() + within
            try:
                await self._exchange("ping", {"interval": int(self.ping_interval * 1000)}, deadline)
            except (TimeoutError, KurentoError):
                raise MediaServerUnavailable("the media server stopped answering pings") from None

    async def _exchange(
        self,
        method: str,
        params: dict[str, Any] | None,
        deadline: float,
        *,
        on: ClientConnection | None = None,
    ) -> Any:
        """Send one request and wait for its result until `deadline` (loop time); TimeoutError
        if none comes. `on`: send on this socket at once, before the connection counts as ready
        (the resume); otherwise the current socket sends it, or the next one after a drop."""
        request_id = next(self._ids)
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": method,
            "params": dict(params or {}),
        }
        pending = _Pending(message, asyncio.get_running_loop().create_future())
        self._pending[request_id] = pending
        try:
            if on is None:
                await self._send(pending)
            else:
                await on.send(json.dumps(message))
                pending.sent_on = self._generation
            async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
                return await pending.future
        finally:
            self._pending.pop(request_id, None)

    async def _send(self, pending: _Pending) -> None:
        """Send a request on the current socket once; a dropped socket re-sends it on reconnect."""
        ws = self._ws
        if ws is None or not self._ready.is_set() or pending.sent_on == self._generation:
            return
        message = pending.message
        if message["method"] != "connect":
            if self.session_id is None:  # a new session: the server makes one for this request
                message["params"].pop("sessionId", None)
            else:
                message["params"]["sessionId"] = self.session_id
        pending.sent_on = self._generation
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed:
            pending.sent_on = -1  # the reconnect sends it again

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                message = json.loads(frame)
            except ValueError:
                logger.warning("the media server sent a frame that is not JSON: %.200r", frame)
                continue
            if not isinstance(message, dict):
                continue
            if message.get("method") == "onEvent":
                self._dispatch_event(message.get("params"))
                continue
            request_id = message.get("id")
            pending = self._pending.get(request_id) if isinstance(request_id, int) else None
            if pending is None or pending.future.done():
                continue
            if "error" in message:
                pending.future.set_exception(error_from_response(message["error"]))
            else:
                pending.future.set_result(message.get("result"))

    def _dispatch_event(self, params: Any) -> None:
        value = params.get("value") if isinstance(params, dict) else None
        if not isinstance(value, dict):
            return
        object_id, event = value.get("object"), value.get("type")
        data = value.get("data") if isinstance(value.get("data"), dict) else {}
        for subscription in list(self._subscriptions.values()):
            if subscription.object_id == object_id and subscription.event == event:
                self._call(subscription, data)

    def _call(self, subscription: Subscription, data: dict[str, Any]) -> None:
        what = f"the callback for {subscription.event} on {subscription.object_id}"
        self._spawn(subscription.callback, data, what)

    def _spawn(self, callback: Callable[[Any], Any], argument: Any, what: str) -> None:
        """Run a callback; an awaitable it returns runs as a task of its own. Failures are
        logged, never raised into the connection's own loop."""
        try:
            outcome = callback(argument)
        except Exception:
            logger.exception("%s failed", what)
            return
        if inspect.isawaitable(outcome):

            async def run() -> None:
                try:
                    await outcome
                except Exception:
                    logger.exception("%s failed", what)

            task = asyncio.create_task(run())
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    def _learn_session(self, session_id: str) -> None:
        if self.session_id != session_id:
            if self.session_id is not None:
                logger.info("media server session changed: %s -> %s", self.session_id, session_id)
            self.session_id = session_id

    def _wake_waiters(self, error: Exception | None) -> None:
        for waiter in tuple(self._waiters):
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def _fail_all(self, error: Exception) -> None:
        self._wake_waiters(error)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)


def _owned(subscription: Subscription, object_id: str) -> bool:
    """True when the subscription watches the object or one of its children."""
    return subscription.object_id == object_id or subscription.object_id.startswith(object_id + "/")


def _value(result: Any, kind: type, method: str) -> Any:
    value = result.get("value") if isinstance(result, dict) else None
    if not isinstance(value, kind):
        raise KurentoError(-32603, f"The media server's answer to '{method}' has no value.")
    return value


def _backoff(attempt: int) -> float:
    base = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (attempt - 1))
    return base * (0.8 + random.random() * 0.4)
