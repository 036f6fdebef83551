"""The room WebSocket: presence (who is here) and, later, call signaling.

Thin by design: it parses and validates what the browser sends, asks the rooms services to
act, and forwards room events from the channel layer to the browser. docs/protocol.md describes
the messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from rooms import events, selectors, services
from rooms.models import Participant
from rooms.selectors import Refusal
from signaling import media, protocol, turn

logger = logging.getLogger(__name__)


@database_sync_to_async
def _join(
    *, slug: str, user: Any, invite: str | None, replaces: int | None, connection_id: str
) -> Participant:
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise services.JoinRefused(Refusal("not_found", "There is no room at this address."))
    return services.participant_join(
        room_id=room.pk, user=user, invite=invite, replaces=replaces, connection_id=connection_id
    )


@database_sync_to_async
def _snapshot(participant: Participant) -> dict[str, Any]:
    room = selectors.room_by_slug(slug=participant.room.slug) or participant.room
    publishing = media.publishing_sync(room.pk)
    return {
        "type": "snapshot",
        "you": participant.pk,
        "ice": turn.ice_servers_for(participant.pk),
        "room": events.room_payload(room),
        "participants": [
            {
                **events.participant_payload(p),
                "publishing": p.pk in publishing,
                **publishing.get(p.pk, {"audio": False, "video": False}),
            }
            for p in selectors.participants_live(room=room)
        ],
    }


def _participant_id(text: str) -> int | None:
    """A participant id from the query string, or None: ASCII digits that fit a bigint."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _reply(payload: dict[str, Any], request: protocol.ClientMessage) -> dict[str, Any]:
    """A reply carries the request's id when it had one."""
    return payload if request.id is None else {**payload, "id": request.id}


class _RateLimit:
    """Token bucket: `rate` messages a second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class RoomConsumer(AsyncWebsocketConsumer):
    participant: Participant | None = None
    group: str | None = None
    heartbeat: asyncio.Task[None] | None = None
    closing = False
    ice_refresh: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # Accept first: a refused handshake reaches the browser as a bare 1006 with no reason.
        await self.accept()
        self.rate = _RateLimit(settings.SIGNALING_RATE_PER_SECOND, settings.SIGNALING_RATE_BURST)
        self.last_rate_warning = 0.0
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            participant = await _join(
                slug=self.scope["url_route"]["kwargs"]["slug"],
                user=self.scope.get("user"),
                invite=query.get("invite", [None])[0],
                replaces=_participant_id(query.get("resume", [""])[0]),
                connection_id=self.channel_name,
            )
        except services.JoinRefused as refused:
            reason = refused.refusal.reason
            await self.send_json(
                {"type": "refused", "reason": reason, "message": refused.refusal.message}
            )
            await self.close(code=protocol.CLOSE_FOR_REFUSAL.get(reason, 4403))
            return
        self.participant = participant
        self.group = events.room_group(participant.room_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await _snapshot(participant)
        await self.send_json(snapshot)
        self.heartbeat = asyncio.create_task(self._keep_present())
        if snapshot["ice"]["expiresAt"] is not None:
            expires_at = snapshot["ice"]["expiresAt"]
            self.ice_refresh = asyncio.create_task(self._refresh_ice(participant.pk, expires_at))

    async def disconnect(self, code: int) -> None:
        for task in (self.heartbeat, self.ice_refresh):
            if task is not None:
                task.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # Without a goodbye (tab closed, network lost) the connection counts as dropped.
        await self._end_presence(Participant.State.DROPPED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.rate.allow():
            now = time.monotonic()
            if now - self.last_rate_warning >= 1.0:
                self.last_rate_warning = now
                await self._reply_error(
                    protocol.ProtocolError("rate_limited", "Too many messages; slow down.")
                )
            return
        if text_data is None:
            await self._reply_error(
                protocol.ProtocolError(
                    "invalid", "Binary frames are not supported; send JSON text."
                )
            )
            return
        if len(text_data.encode()) > settings.SIGNALING_MAX_MESSAGE_BYTES:
            await self._reply_error(
                protocol.ProtocolError(
                    "too_large",
                    f"Messages are limited to {settings.SIGNALING_MAX_MESSAGE_BYTES} bytes.",
                )
            )
            return
        try:
            message = protocol.parse_client_message(text_data)
        except protocol.ProtocolError as error:
            await self._reply_error(error)
            return
        if self.participant is None:  # refused, closing
            return
        await self._handle(message)

    async def _handle(self, message: protocol.ClientMessage) -> None:
        match message:
            case protocol.Ping():
                await self.send_json(_reply({"type": "pong"}, message))
            case protocol.Sync():
                assert self.participant is not None
                await self.send_json(_reply(await _snapshot(self.participant), message))
            case protocol.Leave():
                await self._end_presence(Participant.State.LEFT)
                await self.close(code=protocol.CLOSE_LEFT)
            case _:
                await self._handle_media(message)

    async def _handle_media(self, message: protocol.ClientMessage) -> None:
        participant = self.participant
        assert participant is not None
        try:
            match message:
                case protocol.Publish(sdp=offer):
                    answer = await media.publish(participant, offer)
                    await self.send_json(_reply({"type": "published", "sdp": answer}, message))
                    await media.start_ice(participant, None)
                    await media.announce_published(participant)
                case protocol.Subscribe(publisher=publisher, sdp=offer):
                    answer = await media.subscribe(participant, publisher, offer)
                    reply = {"type": "subscribed", "publisher": publisher, "sdp": answer}
                    await self.send_json(_reply(reply, message))
                    await media.start_ice(participant, publisher)
                case protocol.Ice(candidate=candidate):
                    if candidate["candidate"]:  # "" marks the end of candidates: nothing to do
                        await media.add_ice_candidate(participant, message.publisher, candidate)
                case protocol.Unsubscribe(publisher=publisher):
                    await media.unsubscribe(participant, publisher)
                    reply = {"type": "unsubscribed", "publisher": publisher}
                    await self.send_json(_reply(reply, message))
                case protocol.MediaState(audio=audio, video=video):
                    await media.set_media_state(participant, audio=audio, video=video)
                case protocol.Unpublish():
                    await media.unpublish(participant)
                    await self.send_json(_reply({"type": "unpublished"}, message))
        except media.MediaError as error:
            await self._reply_error(protocol.ProtocolError(error.code, error.message, message.id))

    # --- events from the room group -------------------------------------------------------
    async def media_event(self, message: dict[str, Any]) -> None:
        """An event the media server sent for one of this participant's endpoints."""
        if self.participant is not None:
            await self.send_json(message["event"])

    async def room_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])
        close_code = message.get("close_code")
        if close_code is not None:
            await self.close(code=close_code)

    # --- helpers ----------------------------------------------------------------------------
    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True
        await super().close(code=code, reason=reason)

    async def send_json(self, payload: dict[str, Any]) -> None:
        # After this side closed, events still on their way (this connection's own departure
        # comes back through the channel layer) are dropped: daphne refuses to send them, and
        # the error would end the consumer before its disconnect handler leaves the group.
        if not self.closing:
            await self.send(text_data=json.dumps(payload))

    async def _reply_error(self, error: protocol.ProtocolError) -> None:
        logger.info(
            "participant %s sent a bad message: %s (%s)",
            self.participant.pk if self.participant else "-",
            error.code,
            error.message,
        )
        await self.send_json(error.payload())

    async def _end_presence(self, state: str) -> None:
        participant, self.participant = self.participant, None
        if participant is None:
            return
        if self.heartbeat is not None and self.heartbeat is not asyncio.current_task():
            self.heartbeat.cancel()  # a connection that left has no presence to refresh
        await database_sync_to_async(services.participant_leave)(
            participant_id=participant.pk, state=state
        )
        # However it ended (or if the room was closed or deleted around it), release its media.
        try:
            await media.release_participant(participant)
            await media.sweep_orphans()
        except Exception:
            logger.exception("releasing the media of participant %s failed", participant.pk)

    async def _refresh_ice(self, participant_id: int, expires_at: int) -> None:
        """Send fresh TURN credentials before the current ones expire (long calls)."""
        lead = min(600.0, settings.TURN_CREDENTIAL_TTL * 0.2)
        while True:
            await asyncio.sleep(max(1.0, expires_at - lead - time.time()))
            if self.participant is None:  # left meanwhile
                return
            ice = turn.ice_servers_for(participant_id)
            await self.send_json({"type": "ice_servers", "ice": ice})
            expires_at = ice["expiresAt"]

    async def _keep_present(self) -> None:
        """Refresh this connection's presence and reap peers whose worker stopped doing so."""
        assert self.participant is not None
        participant_id, room_id = self.participant.pk, self.participant.room_id
        while True:
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)
            try:
                present = await database_sync_to_async(services.participant_touch)(
                    participant_id=participant_id
                )
                reaped = await database_sync_to_async(services.participants_reap_stale)(
                    room_id=room_id
                )
                if reaped:
                    await media.sweep_room(room_id)
            except Exception:
                logger.exception("presence refresh failed for participant %s", participant_id)
                continue
            if not present:
                # We were reaped (this worker stalled) or removed; the browser reconnects afresh.
                logger.info("participant %s is no longer present; closing", participant_id)
                self.participant = None
                await self.close(code=protocol.CLOSE_STALE)
                return
