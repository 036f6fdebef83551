"""The room WebSocket: presence (who is here), call signaling, chat, hands and reactions
(signaling.collaboration), running the meeting (signaling.moderation), and waiting to be let in
(a room that asks people to: the connection waits, then joins without reconnecting).

Thin by design: it parses and validates what the browser sends, asks the rooms and media
services to act, and forwards room events from the channel layer to the browser. The inbound
limits (size, rate, buffering) are applied before a message reaches it (signaling.inbound).
docs/protocol.md describes the messages.

Whatever happens, a connection that ends takes its participant with it: an unexpected error
in any handler ends the participant (presence, media) and closes the socket with 1011, instead
of leaving a ghost behind that holds a seat (Channels calls no disconnect handler then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.translation import gettext

from conference import metrics
from rooms import events, selectors, services
from rooms.models import JoinRequest, Participant, Room
from rooms.selectors import Refusal
from signaling import media, protocol, turn
from signaling.collaboration import Collaboration
from signaling.moderation import Moderation
from signaling.selectors import published_sync
from signaling.sockets import TypedSocketConsumer

logger = logging.getLogger(__name__)


@database_sync_to_async
def _join(
    *, slug: str, user: Any, invite: str | None, replaces: int | None, connection_id: str
) -> Participant:
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise services.JoinRefused(
            Refusal("not_found", gettext("There is no room at this address."))
        )
    return services.participant_join(
        room_id=room.pk, user=user, invite=invite, replaces=replaces, connection_id=connection_id
    )


def _waiting_sync(room: Room) -> list[dict[str, Any]]:
    return [events.join_request_payload(r) for r in selectors.join_requests_waiting(room=room)]


def _moderates(user: Any, moderator_ids: Collection[int]) -> bool:
    """Whether the user runs the meeting: a moderator of the room (its owner included), or
    staff (selectors.room_moderates, from what is known already)."""
    return user.is_staff or user.pk in moderator_ids


@database_sync_to_async
def _waiting_message(room_id: int) -> protocol.Waiting:
    room = selectors.room_by_id(room_id=room_id)
    present = room is not None and selectors.moderator_present(room=room)
    text = (
        gettext("Please wait: someone in the meeting will let you in soon.")
        if present
        else gettext("Please wait: no moderator is in the meeting yet to let you in.")
    )
    return protocol.Waiting(message=text, moderator_present=present)


@database_sync_to_async
def _snapshot(participant: Participant, ref: str | int | None = None) -> protocol.Snapshot:
    """The room now; who waits only for a moderator."""
    room = selectors.room_by_slug(slug=participant.room.slug) or participant.room
    published = published_sync(room.pk)
    moderators = selectors.room_moderator_ids(room=room)
    return protocol.Snapshot(
        you=participant.pk,
        ice=turn.ice_servers_for(participant.pk),
        room=events.room_payload(room),
        participants=[
            {
                **events.participant_payload(p),
                "publishing": p.pk in published.cameras,
                "sharing": p.pk in published.sharing,
                "playing": published.playing.get(p.pk),  # the title of the video they play
                **published.cameras.get(p.pk, {"audio": False, "video": False}),
            }
            for p in selectors.participants_live(room=room)
        ],
        hands=[events.hand_payload(p) for p in selectors.hands_raised(room=room)],
        chat=[events.chat_message_payload(m) for m in selectors.chat_recent(room=room)],
        moderators=sorted(moderators),
        waiting=_waiting_sync(room) if _moderates(participant.user, moderators) else [],
        recording=events.recording_payload(selectors.recording_running(room_id=room.pk)),
        id=ref,
    )


def _participant_id(text: str) -> int | None:
    """A participant id from the query string, or None: ASCII digits that fit a bigint."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _typed(event: dict[str, Any]) -> protocol.ServerMessage | None:
    """An event from the channel layer as the message it must be; a malformed one (a bug in
    whoever sent it) is logged and not sent."""
    try:
        return protocol.server_message(event)
    except ValueError as error:
        logger.error("not sending a malformed event %.300r: %s", event, error)
        return None


class RoomConsumer(TypedSocketConsumer):
    participant: Participant | None = None
    media: media.ParticipantMedia | None = None
    group: str | None = None
    heartbeat: asyncio.Task[None] | None = None
    ice_refresh: asyncio.Task[None] | None = None
    # Waiting to be let in: the request, and how to join once let in.
    waiting: JoinRequest | None = None
    join_args: dict[str, Any] | None = None
    moderating = False  # whether this participant may run the meeting (sees who waits)

    parse = staticmethod(protocol.parse_client_message)

    @property
    def subject(self) -> str:
        return f"room connection of participant {self.participant.pk if self.participant else '-'}"

    @property
    def serving(self) -> bool:
        return self.participant is not None or self.waiting is not None  # not refused, not ended

    @functools.cached_property
    def collaboration(self) -> Collaboration:
        """Chat, hands and reactions of this connection, with their own rate limits."""
        return Collaboration(self)

    @functools.cached_property
    def moderation(self) -> Moderation:
        """A moderator's actions from this connection, with their own rate limit."""
        return Moderation(self)

    async def release_after_failure(self) -> None:
        """The participant ends like a dropped one: presence, media, group."""
        for task in (self.heartbeat, self.ice_refresh):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self._stop_waiting(withdraw=True)
        await self._end_presence(Participant.State.DROPPED)

    async def connect(self) -> None:
        # Accept first: a refused handshake reaches the browser as a bare 1006 with no reason.
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.join_args = {
            "slug": self.scope["url_route"]["kwargs"]["slug"],
            "user": self.scope.get("user"),
            "invite": query.get("invite", [None])[0],
            "replaces": _participant_id(query.get("resume", [""])[0]),
            "connection_id": self.channel_name,
        }
        await self._try_joining()

    async def _try_joining(self) -> None:
        """Join the room, wait to be let in, or be refused (and closed)."""
        assert self.join_args is not None
        started = time.monotonic()
        try:
            participant = await _join(**self.join_args)
        except services.JoinWaiting as waiting:
            await self._start_waiting(waiting.request)
            return
        except services.JoinRefused as refused:
            reason = refused.refusal.reason
            metrics.JOINS.labels(outcome=reason).inc()
            await self.send_message(
                protocol.Refused(reason=reason, message=refused.refusal.message)
            )
            await self.close(code=protocol.CLOSE_FOR_REFUSAL.get(reason, 4403))
            return
        self.participant = participant
        self.media = media.ParticipantMedia(participant)
        self.group = events.room_group(participant.room_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await _snapshot(participant)
        self.moderating = _moderates(participant.user, snapshot.moderators)
        await self.send_message(snapshot)
        metrics.JOINS.labels(outcome="joined").inc()
        metrics.JOIN_SECONDS.observe(time.monotonic() - started)
        self.heartbeat = asyncio.create_task(self._keep_present())
        if snapshot.ice["expiresAt"] is not None:
            expires_at = snapshot.ice["expiresAt"]
            self.ice_refresh = asyncio.create_task(self._refresh_ice(participant.pk, expires_at))
        # Whoever this connection replaced (a tab reconnecting after a worker restart) or the
        # join reaped held endpoints: release them now, not when someone next leaves.
        try:
            await media.sweep_departed(participant.room_id)
        except Exception:
            logger.exception("releasing departed media in room %s failed", participant.room_id)

    async def disconnect(self, code: int) -> None:
        for task in (self.heartbeat, self.ice_refresh):
            if task is not None:
                task.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self._stop_waiting(withdraw=True)  # a page that stops asking leaves the queue
        # Without a goodbye (tab closed, network lost) the connection counts as dropped.
        await self._end_presence(Participant.State.DROPPED)

    async def handle(self, message: protocol.ClientMessage) -> None:
        match message:
            case protocol.Ping():
                await self.send_message(protocol.Pong(id=message.id))
            case protocol.Leave():
                await self._stop_waiting(withdraw=True)
                await self._end_presence(Participant.State.LEFT)
                await self.close(code=protocol.CLOSE_LEFT)
            case _ if self.participant is None:  # waiting to be let in: nothing else yet
                error = protocol.ProtocolError(
                    "waiting", gettext("You are waiting to be let in."), message.id
                )
                await self.reply_error(error)
            case protocol.Sync():
                await self.send_message(await _snapshot(self.participant, message.id))
            case protocol.CollaborationMessage():
                await self.collaboration.handle(message)
            case protocol.ModerationMessage():
                await self.moderation.handle(message)
            case _:
                await self._handle_media(message)

    async def _handle_media(self, message: protocol.ClientMessage) -> None:
        own = self.media
        assert own is not None
        try:
            match message:
                case protocol.Publish(sdp=offer, source=source):
                    answer = await media.publish(media=own, offer=offer, source=source)
                    reply = protocol.Published(sdp=answer, source=source, id=message.id)
                    await self.send_message(reply)
                    await media.start_ice(media=own, target=None, source=source)
                    await media.announce_published(media=own, source=source)
                    await media.record_published(participant=own.participant, source=source)
                case protocol.Subscribe(publisher=publisher, sdp=offer, video=video, source=source):
                    answer = await media.subscribe(
                        media=own, publisher_id=publisher, offer=offer, video=video, source=source
                    )
                    reply = protocol.Subscribed(
                        publisher=publisher, sdp=answer, source=source, id=message.id
                    )
                    await self.send_message(reply)
                    await media.start_ice(media=own, target=publisher, source=source)
                case protocol.Ice(candidate=candidate, source=source):
                    if candidate["candidate"]:  # "" marks the end of candidates: nothing to do
                        await media.add_ice_candidate(
                            media=own, target=message.publisher, candidate=candidate, source=source
                        )
                case protocol.Unsubscribe(publisher=publisher, source=source):
                    await media.unsubscribe(media=own, publisher_id=publisher, source=source)
                    await self.send_message(
                        protocol.Unsubscribed(publisher=publisher, source=source, id=message.id)
                    )
                case protocol.Video(publisher=publisher, on=on, source=source):
                    await media.set_receiving_video(
                        media=own, publisher_id=publisher, on=on, source=source
                    )
                    await self.send_message(
                        protocol.VideoSet(publisher=publisher, on=on, source=source, id=message.id)
                    )
                case protocol.MediaState(audio=audio, video=video):
                    await media.set_media_state(media=own, audio=audio, video=video)
                case protocol.Play(file=file):
                    title = await media.play(media=own, file=file)
                    await self.send_message(protocol.Playing(title=title, id=message.id))
                case protocol.Unpublish(source=source):
                    await media.unpublish(media=own, source=source)
                    await self.send_message(protocol.Unpublished(source=source, id=message.id))
        except media.MediaError as error:
            await self.reply_error(protocol.ProtocolError(error.code, error.message, message.id))

    # --- events from the room group -------------------------------------------------------
    async def media_event(self, message: dict[str, Any]) -> None:
        """An event the media server sent for one of this participant's endpoints."""
        event = _typed(message["event"])
        if event is not None and self.participant is not None:
            await self.send_message(event)

    async def room_event(self, message: dict[str, Any]) -> None:
        event = _typed(message["event"])
        if event is None:
            return
        if isinstance(event, protocol.ModeratorsChanged) and self.participant is not None:
            was = self.moderating
            self.moderating = _moderates(self.participant.user, event.user_ids)
            if self.moderating and not was:  # who waits now, to the new moderator
                waiting = await database_sync_to_async(_waiting_sync)(self.participant.room)
                await self.send_message(protocol.WaitingChanged(waiting=waiting))
        if isinstance(event, protocol.WaitingChanged) and not self.moderating:
            return  # who waits is the moderators' business
        if (
            isinstance(event, protocol.MediaBlocked)
            and self.participant is not None
            and event.participant_id == self.participant.pk
        ):
            # Enforced by the connection it concerns too: an admin's action (no socket) or an
            # actor whose own enforcement failed. Connecting what is connected changes nothing.
            await self._enforce_block(event.kind, event.blocked)
        if isinstance(event, protocol.MediaReset) and self.media is not None:
            self.media.forget_all()  # the room's media is being rebuilt: those endpoints are gone
        if isinstance(event, protocol.RoomClosed | protocol.ParticipantRemoved):
            # Published once in English (gettext_noop): told in this connection's language.
            event = dataclasses.replace(event, message=gettext(event.message))
        await self.send_message(event)
        if isinstance(event, protocol.RoomClosed):
            await self._end_presence(Participant.State.REMOVED)  # recorded already: releases
            await self.close(code=protocol.CLOSE_ROOM_CLOSED)
        elif (
            isinstance(event, protocol.ParticipantRemoved)
            and self.participant is not None
            and event.participant_id == self.participant.pk
        ):
            await self._end_presence(Participant.State.REMOVED)  # recorded already: releases
            await self.close(code=protocol.CLOSE_REMOVED)

    async def waiting_event(self, message: dict[str, Any]) -> None:
        """A moderator's decision about people waiting, the room closing under them, or a
        moderator arriving (`waiting_refresh`: the waiting message says so)."""
        if message["event"].get("type") == "waiting_refresh":
            if self.waiting is not None:
                await self.send_message(await _waiting_message(self.waiting.room_id))
            return
        event = _typed(message["event"])
        if event is None or self.waiting is None:
            return
        if isinstance(event, protocol.RoomClosed):
            await self._stop_waiting(withdraw=False)
            await self.send_message(dataclasses.replace(event, message=gettext(event.message)))
            await self.close(code=protocol.CLOSE_ROOM_CLOSED)
        elif isinstance(event, protocol.JoinDecided) and self.waiting.user_id in event.user_ids:
            await self._decided(admitted=event.admitted)

    # --- waiting to be let in -------------------------------------------------------------
    async def _start_waiting(self, request: JoinRequest) -> None:
        self.waiting = request
        await self.channel_layer.group_add(events.waiting_group(request.room_id), self.channel_name)
        await self.send_message(await _waiting_message(request.room_id))
        self.heartbeat = asyncio.create_task(self._keep_waiting(request.pk))

    async def _stop_waiting(self, *, withdraw: bool) -> None:
        request, self.waiting = self.waiting, None
        if request is None:
            return
        if self.heartbeat is not None and self.heartbeat is not asyncio.current_task():
            self.heartbeat.cancel()
        await self.channel_layer.group_discard(
            events.waiting_group(request.room_id), self.channel_name
        )
        if withdraw:
            await database_sync_to_async(services.join_request_withdraw)(
                request_id=request.pk, connection_id=self.channel_name
            )

    async def _decided(self, *, admitted: bool) -> None:
        """Let in: join now, on this connection (the join checks everything again: the room may
        be full). Turned away: say so and close."""
        if self.waiting is None:  # decided already (the event and the heartbeat both saw it)
            return
        await self._stop_waiting(withdraw=False)
        if admitted:
            await self.send_message(protocol.Admitted())
            await self._try_joining()
            return
        metrics.JOINS.labels(outcome="denied").inc()
        text = gettext("A moderator did not let you in.")
        await self.send_message(protocol.Refused(reason="denied", message=text))
        await self.close(code=protocol.CLOSE_FOR_REFUSAL["denied"])

    async def _keep_waiting(self, request_id: int) -> None:
        """Keep the request fresh (moderators see only live ones), and act on a decision this
        connection missed (a channel layer hiccup, another worker's restart)."""
        while self.waiting is not None:
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)
            try:
                state = await database_sync_to_async(services.join_request_touch)(
                    request_id=request_id
                )
                if state == JoinRequest.State.ADMITTED:
                    await self._decided(admitted=True)
                elif state == JoinRequest.State.DENIED:
                    await self._decided(admitted=False)
                elif state is None and self.waiting is not None:  # the meeting ended: ask again
                    await self._stop_waiting(withdraw=False)
                    await self._try_joining()
            except Exception:
                logger.exception("waiting connection of request %s failed", request_id)
                if not self.closing:
                    await self.close(code=protocol.CLOSE_INTERNAL_ERROR)
                return

    async def _enforce_block(self, kind: str, blocked: bool) -> None:
        assert self.participant is not None
        try:
            await media.block_media(publisher_id=self.participant.pk, kind=kind, blocked=blocked)
        except Exception:
            logger.exception("enforcing a block on participant %s failed", self.participant.pk)

    # --- helpers ----------------------------------------------------------------------------
    async def _end_presence(self, state: str) -> None:
        participant, self.participant = self.participant, None
        own, self.media = self.media, None
        if participant is None:
            return
        if own is not None:
            own.forget_all()
        if self.heartbeat is not None and self.heartbeat is not asyncio.current_task():
            self.heartbeat.cancel()  # a connection that left has no presence to refresh
        await database_sync_to_async(services.participant_leave)(
            participant_id=participant.pk, state=state
        )
        # However it ended (or if the room was closed or deleted around it), release its media.
        try:
            await media.sweep_room(participant.room_id)
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
            await self.send_message(protocol.IceServers(ice=ice))
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
                if self.moderating:  # whose page stopped asking leaves the moderators' list
                    await database_sync_to_async(services.join_requests_reap_stale)(room_id=room_id)
                    await media.enforce_quota(room_id)
            except Exception:
                logger.exception("presence refresh failed for participant %s", participant_id)
                continue
            if not present:
                # We were reaped (this worker stalled) or removed; the browser reconnects afresh.
                logger.info("participant %s is no longer present; closing", participant_id)
                self.participant = None
                await self.close(code=protocol.CLOSE_STALE)
                return
