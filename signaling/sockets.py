"""What the product's WebSocket consumers share: typed messages out, validated messages in, clear
error replies, nothing sent after closing, and a safety net that ends the connection properly
when a handler fails unexpectedly (Channels calls no disconnect handler then)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from conference import metrics
from signaling import protocol

logger = logging.getLogger(__name__)


class TypedSocketConsumer(AsyncWebsocketConsumer):
    """Subclasses say how a text frame is parsed (`parse`), who they serve (`subject`, for the
    logs), whether they still act (`serving`), how to act (`handle`), and what to release when
    a handler failed (`release_after_failure`)."""

    closing = False

    def parse(self, text: str) -> protocol.ClientMessage:
        raise NotImplementedError

    @property
    def subject(self) -> str:
        raise NotImplementedError

    @property
    def serving(self) -> bool:
        return True

    async def handle(self, message: protocol.ClientMessage) -> None:
        raise NotImplementedError

    async def release_after_failure(self) -> None:
        """Release what this connection holds; called once, after an unexpected error."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await super().dispatch(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception:
            metrics.CONSUMER_CRASHES.inc()
            logger.exception("%s failed on %s; ending it", self.subject, message.get("type"))
            try:
                await self.release_after_failure()
            except Exception:
                logger.exception("ending %s after a failure failed too", self.subject)
            if not self.closing:
                await self.close(code=protocol.CLOSE_INTERNAL_ERROR)
            if message.get("type") == "websocket.disconnect":
                raise StopConsumer() from None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            error = protocol.ProtocolError(
                "invalid", "Binary frames are not supported; send JSON text."
            )
            await self.reply_error(error)
            return
        try:
            message = self.parse(text_data)
        except protocol.ProtocolError as error:
            await self.reply_error(error)
            return
        if self.serving:  # not refused, not closing
            await self.handle(message)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True
        await super().close(code=code, reason=reason)

    async def send_message(self, message: protocol.ServerMessage) -> None:
        # After this side closed, messages still on their way (a connection's own departure
        # comes back through the channel layer) are dropped: daphne refuses to send them, and
        # the error would end the consumer before its disconnect handler ran.
        if not self.closing:
            await self.send(text_data=json.dumps(message.payload()))

    async def reply_error(self, error: protocol.ProtocolError) -> None:
        metrics.SIGNALING_ERRORS.labels(code=error.code).inc()
        logger.info("%s sent a bad message: %s (%s)", self.subject, error.code, error.message)
        await self.send_message(
            protocol.Error(code=error.code, message=error.message, id=error.ref)
        )
