"""Kurento sessions: who owns which objects and subscriptions, and which socket gets their events.

A session is created by the first request of a socket and bound to it. When the socket goes away the
session is detached, not ended: a new socket resumes it with `connect {"sessionId"}`. A detached
session is collected after the grace period, releasing the objects only it held.

As in KMS (WebSocketTransport::storeConnection), a socket is bound to one session at a time: a
request naming another session moves the socket to it, and the session it leaves is detached like
one whose socket closed (or ended at once when it holds nothing, as KMS never knew it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import too_many
from .limits import (
    MAX_CACHE_BYTES,
    MAX_CACHED_RESPONSE_BYTES,
    MAX_CACHED_RESPONSES,
    MAX_SESSION_ID,
    MAX_SUBSCRIPTIONS_PER_SESSION,
)

logger = logging.getLogger(__name__)

RESPONSE_CACHE_SECONDS = 20.0


@dataclass(frozen=True)
class Subscription:
    id: str
    session_id: str
    object_id: str
    event: str  # the name the client subscribed with (a 6.x alias stays as it was asked)
    canonical: str


@dataclass(frozen=True)
class CachedResponse:
    expires: float
    fingerprint: bytes  # a digest of the request, not the request: requests can be large
    response: dict[str, Any]
    size: int  # bytes of the response as JSON


@dataclass
class Session:
    id: str
    connection: Any = None  # the socket the session is bound to, if any
    objects: set[str] = field(default_factory=set)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    detached_at: float | None = None
    # request id digest -> its answer, oldest first; at most MAX_CACHED_RESPONSES entries and
    # MAX_CACHE_BYTES bytes
    responses: dict[bytes, CachedResponse] = field(default_factory=dict)
    cache_bytes: int = 0

    def cached_response(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a retried request: same id and same content within the cache window."""
        hit = self.responses.get(_request_key(request))
        if hit is None or hit.expires < time.monotonic():
            return None
        return hit.response if hit.fingerprint == _fingerprint(request) else None

    def cache_response(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        size = len(json.dumps(response, separators=(",", ":")))
        if size > MAX_CACHED_RESPONSE_BYTES:
            return  # too large to keep: a retry of it is answered afresh
        now = time.monotonic()
        key = _request_key(request)
        self._drop(key)
        for old_key in [k for k, v in self.responses.items() if v.expires < now]:
            self._drop(old_key)
        while self.responses and (
            len(self.responses) >= MAX_CACHED_RESPONSES or self.cache_bytes + size > MAX_CACHE_BYTES
        ):
            self._drop(next(iter(self.responses)))  # the oldest
        self.responses[key] = CachedResponse(
            now + RESPONSE_CACHE_SECONDS, _fingerprint(request), response, size
        )
        self.cache_bytes += size

    def _drop(self, key: bytes) -> None:
        entry = self.responses.pop(key, None)
        if entry is not None:
            self.cache_bytes -= entry.size

    @property
    def empty(self) -> bool:
        """Holds nothing a client could come back for."""
        return not self.objects and not self.subscriptions


def _request_key(request: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(request.get("id")).encode()).digest()


def _fingerprint(request: dict[str, Any]) -> bytes:
    params = {k: v for k, v in (request.get("params") or {}).items() if k != "sessionId"}
    text = json.dumps([request.get("method"), params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).digest()


class Sessions:
    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}
        # object id -> canonical event -> subscriptions, for event delivery
        self.listeners: dict[str, dict[str, dict[str, Subscription]]] = {}

    def ids(self) -> list[str]:
        return list(self.by_id)

    def get(self, session_id: str) -> Session | None:
        return self.by_id.get(session_id)

    def create(self, session_id: str | None = None) -> Session:
        if not session_id or len(session_id) > MAX_SESSION_ID:
            session_id = str(uuid.uuid4())
        session = Session(id=session_id)
        self.by_id[session.id] = session
        logger.info("session %s created", session.id)
        return session

    def bind(self, session: Session, connection: Any) -> None:
        """Bind the session to the socket, the socket to the session only (as KMS does): the
        session the socket leaves is detached, or ended when it holds nothing."""
        left = connection.session
        if left is not None and left is not session and left.connection is connection:
            left.connection = None
            if left.empty:
                self.end(left)
            else:
                left.detached_at = time.monotonic()
                logger.info("session %s detached (its socket moved to %s)", left.id, session.id)
        if session.connection is not connection:
            previous = session.connection
            session.connection = connection
            if previous is not None and previous.session is session:
                previous.session = None
            logger.info("session %s bound to %s", session.id, connection)
        session.detached_at = None
        connection.session = session

    def detach(self, connection: Any) -> None:
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            session.detached_at = time.monotonic()
            logger.info("session %s detached (socket closed)", session.id)

    def subscribe(self, session: Session, object_id: str, event: str, canonical: str) -> str:
        """A new subscription, even when the session already has one to the same event (as KMS,
        which makes a handler per call): the event keeps coming until the last is cancelled,
        and still once per session (see MediaServer._deliver_event)."""
        if len(session.subscriptions) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            raise too_many(
                f"Too many subscriptions in this session (limit {MAX_SUBSCRIPTIONS_PER_SESSION})"
            )
        subscription = Subscription(str(uuid.uuid4()), session.id, object_id, event, canonical)
        session.subscriptions[subscription.id] = subscription
        by_event = self.listeners.setdefault(object_id, {})
        by_event.setdefault(canonical, {})[subscription.id] = subscription
        return subscription.id

    def unsubscribe(self, session: Session, subscription_id: str) -> None:
        subscription = session.subscriptions.pop(subscription_id, None)
        if subscription is not None:
            by_event = self.listeners.get(subscription.object_id, {})
            by_event.get(subscription.canonical, {}).pop(subscription.id, None)
            if not by_event.get(subscription.canonical):
                by_event.pop(subscription.canonical, None)
            if not by_event:
                self.listeners.pop(subscription.object_id, None)

    def forget_object(self, object_id: str) -> None:
        for subscriptions in self.listeners.pop(object_id, {}).values():
            for subscription in subscriptions.values():
                session = self.by_id.get(subscription.session_id)
                if session is not None:
                    session.subscriptions.pop(subscription.id, None)
        for session in self.by_id.values():
            session.objects.discard(object_id)

    def end(self, session: Session) -> set[str]:
        """Forget a session; returns the ids of the objects it held."""
        for subscription_id in list(session.subscriptions):
            self.unsubscribe(session, subscription_id)
        self.by_id.pop(session.id, None)
        if session.connection is not None and session.connection.session is session:
            session.connection.session = None
        logger.info("session %s ended", session.id)
        return set(session.objects)

    def expired(self, grace: float, now: Callable[[], float] = time.monotonic) -> list[Session]:
        """Sessions without a socket for the grace period (or with none and no time of detaching,
        which no path should leave, but such a session must not live forever either)."""
        limit = now() - grace
        return [
            s
            for s in self.by_id.values()
            if s.connection is None and (s.detached_at is None or s.detached_at <= limit)
        ]

    def holders(self, object_id: str) -> list[Session]:
        return [s for s in self.by_id.values() if object_id in s.objects]
