"""Limits on what a browser may send on the room socket, applied as each frame arrives.

Channels hands a consumer one message at a time, and daphne queues whatever arrives meanwhile
without bound: a flood behind a slow negotiation would sit in memory, unlimited, for as long
as it takes to work through. This ASGI middleware reads the socket as fast as frames come in
and, before anything is buffered, drops frames that are too large or above the rate limit
(telling the browser, at most once a second per reason); what passes waits in a buffer of
bounded size for the consumer. Connect and disconnect always pass, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from conference import metrics
from signaling.ratelimit import TokenBucket

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _size(message: Message) -> int:
    text, data = message.get("text"), message.get("bytes")
    if text is not None:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(data or b"")


def _is_leave(message: Message) -> bool:
    text = message.get("text")
    if not text or len(text) > 200 or "leave" not in text:
        return False
    try:
        return json.loads(text).get("type") == "leave"
    except (ValueError, AttributeError):
        return False


class _Gate:
    """One socket's inbound side: the pump that drains it and the buffer the consumer reads."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.max_message = settings.SIGNALING_MAX_MESSAGE_BYTES
        self.max_buffered = settings.SIGNALING_INBOUND_BUFFER_BYTES
        self.bucket = TokenBucket(settings.SIGNALING_RATE_PER_SECOND, settings.SIGNALING_RATE_BURST)
        self.buffer: asyncio.Queue[tuple[Message, int]] = asyncio.Queue()
        self.buffered = 0
        self.open = False  # the application accepted and has not closed
        self.last_told: dict[str, float] = {}
        self.pump = asyncio.create_task(self._pump())

    async def receive(self) -> Message:
        message, size = await self.buffer.get()
        self.buffered -= size
        return message

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "websocket.accept":
            self.open = True
        elif kind == "websocket.close":
            self.open = False
        await self._send(message)

    async def _pump(self) -> None:
        while True:
            message = await self._receive()
            size = 0
            if message.get("type") == "websocket.receive":
                size = _size(message)
                if size > self.max_message:
                    await self._drop(
                        "size", "too_large", f"Messages are limited to {self.max_message} bytes."
                    )
                    continue
                if not self.bucket.take():
                    await self._drop("rate", "rate_limited", "Too many messages; slow down.")
                    continue
                if self.buffered + size > self.max_buffered:
                    await self._drop(
                        "buffer",
                        "busy",
                        "Too many messages are waiting to be handled; slow down.",
                    )
                    continue
                self.buffered += size
            elif message.get("type") == "websocket.disconnect":
                self._drop_unanswerable()
            self.buffer.put_nowait((message, size))
            if message.get("type") == "websocket.disconnect":
                return

    def _drop_unanswerable(self) -> None:
        """The socket closed: nobody is left to answer, so what still waits is dropped and the
        connection ends (its participant with it) as soon as the consumer is free. A goodbye
        (`leave`) is kept: it says how the participant ended."""
        kept = []
        while not self.buffer.empty():
            message, size = self.buffer.get_nowait()
            if _is_leave(message):
                kept.append((message, size))
            else:
                self.buffered -= size
        for item in kept:
            self.buffer.put_nowait(item)

    async def _drop(self, reason: str, code: str, text: str) -> None:
        metrics.SIGNALING_MESSAGES_DROPPED.labels(reason=reason).inc()
        now = time.monotonic()
        if not self.open or now - self.last_told.get(code, -10.0) < 1.0:
            return
        self.last_told[code] = now
        with contextlib.suppress(Exception):  # the socket may be closing under us
            body = {"type": "error", "code": code, "message": text}
            await self._send({"type": "websocket.send", "text": json.dumps(body)})


class InboundLimits:
    """ASGI middleware applying the inbound limits to WebSocket connections."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        gate = _Gate(receive, send)
        try:
            await self.app(scope, gate.receive, gate.send)
        finally:
            gate.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gate.pump
