"""Kurento sessions: who owns which objects and subscriptions, and which socket gets their events.

A session is created by the first request of a socket and bound to it. When the socket goes away the
session is detached, not ended: a new socket resumes it with `connect {"sessionId"}`. A detached
session is collected after the grace period, releasing the objects only it held.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RESPONSE_CACHE_SECONDS = 20.0
MAX_SESSION_ID = 64


@dataclass(frozen=True)
class Subscription:
    id: str
    session_id: str
    object_id: str
    event: str  # the name the client subscribed with (a 6.x alias stays as it was asked)
    canonical: str


@dataclass
class Session:
    id: str
    connection: Any = None  # the socket the session is bound to, if any
    objects: set[str] = field(default_factory=set)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    detached_at: float | None = None
    responses: dict[str, tuple[float, str, dict[str, Any]]] = field(default_factory=dict)

    def cached_response(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a retried request: same id and same content within the cache window."""
        key = json.dumps(request.get("id"))
        hit = self.responses.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[2] if hit[1] == _fingerprint(request) else None

    def cache_response(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self.responses) > 256:
            self.responses = {k: v for k, v in self.responses.items() if v[0] >= now}
        self.responses[json.dumps(request.get("id"))] = (
            now + RESPONSE_CACHE_SECONDS,
            _fingerprint(request),
            response,
        )


def _fingerprint(request: dict[str, Any]) -> str:
    params = {k: v for k, v in (request.get("params") or {}).items() if k != "sessionId"}
    return json.dumps([request.get("method"), params], sort_keys=True, default=str)


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
        for existing in session.subscriptions.values():
            if (existing.object_id, existing.event) == (object_id, event):
                return existing.id  # one delivery per session and event, however often asked
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
        limit = now() - grace
        return [
            s for s in self.by_id.values() if s.detached_at is not None and s.detached_at <= limit
        ]

    def holders(self, object_id: str) -> list[Session]:
        return [s for s in self.by_id.values() if object_id in s.objects]
