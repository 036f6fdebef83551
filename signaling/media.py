"""The room media service: what a room's participants hold on the media server, and its life.

A room gets one MediaPipeline on the first media request; each participant one publishing
WebRtcEndpoint; each (subscriber, publisher) pair one receiving endpoint, connected from the
publisher's. Ids live in the database (signaling.models), so any daphne worker can act on any
room and whatever a participant held is released however it left: `sweep_room` releases every
endpoint whose owner or publisher is no longer connected, and the pipeline once nobody is left.

The service speaks only the Kurento Protocol (signaling.kurento): it cannot tell Kurento Media
Server from the embedded mediaserver/. ICE candidates the media server finds are sent to the
participant's connection over the channel layer, as `media.event` messages.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from rooms import events
from rooms.models import Participant, Room
from signaling import turn
from signaling.kurento import (
    IceError,
    InvalidParams,
    KurentoClient,
    KurentoError,
    MediaPipeline,
    MediaServerUnavailable,
    ObjectNotFound,
    SdpError,
    ServerManager,
    WebRtcEndpoint,
    create_pipeline,
)
from signaling.models import MediaEndpoint, RoomPipeline

logger = logging.getLogger(__name__)

CONNECTED = Participant.State.CONNECTED
# Candidates a browser sent for an endpoint that does not exist yet, kept per participant.
_EARLY_CANDIDATE_LIMIT = 64


class MediaError(Exception):
    """A media request that failed; `code` and `message` are for the browser (docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


UNAVAILABLE = MediaError(
    "media_unavailable",
    "The media server cannot be reached right now. Please try again in a moment.",
)


# --- clients: one per media server URL and event loop --------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, KurentoClient]] = (
    weakref.WeakKeyDictionary()
)


def media_client(url: str) -> KurentoClient:
    """This event loop's client of the media server at `url` (it connects on first use)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        client = KurentoClient(
            url,
            request_timeout=settings.KMS_REQUEST_TIMEOUT,
            connect_timeout=settings.KMS_CONNECT_TIMEOUT,
        )
        per_loop[url] = client
    return client


async def close_clients() -> None:
    """Close this event loop's clients (tests; process shutdown)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


async def _server_for_new_room() -> str:
    """The least-loaded reachable media server of KMS_URLS (fewest pipelines; the first on a
    tie). An unreachable one is skipped; none reachable raises MediaServerUnavailable."""
    urls = list(settings.KMS_URLS)
    if len(urls) == 1:
        return urls[0]

    async def load(url: str) -> int | None:
        try:
            async with asyncio.timeout(settings.KMS_CONNECT_TIMEOUT):
                return len(await ServerManager(media_client(url)).get_pipelines())
        except (KurentoError, MediaServerUnavailable, TimeoutError) as error:
            logger.warning("media server %s skipped for a new room: %s", url, error)
            return None

    loads = await asyncio.gather(*(load(url) for url in urls))
    reachable = [(count, index) for index, count in enumerate(loads) if count is not None]
    if not reachable:
        raise MediaServerUnavailable("No media server of KMS_URLS is reachable.")
    return urls[min(reachable)[1]]


# --- the room's pipeline ---------------------------------------------------------------------


def _room_pipeline_sync(room_id: int, url: str) -> RoomPipeline:
    """The room's pipeline record, creating the pipeline (on `url`) if the room has none.

    The room's row lock (SQLite: the IMMEDIATE transaction's write lock) is held while the
    pipeline is created, so joiners on any worker wait for it and then find it: one per room.
    """
    with transaction.atomic():
        room = Room.objects.select_for_update().filter(pk=room_id).first()
        if room is None:
            raise MediaError("not_found", "This room no longer exists.")
        record = RoomPipeline.objects.filter(room=room).first()
        if record is not None:
            return record
        pipeline_id = async_to_sync(_create_pipeline)(url)
        try:
            record = RoomPipeline.objects.create(room=room, server_url=url, pipeline_id=pipeline_id)
        except Exception:
            async_to_sync(_release_quietly)(url, pipeline_id)
            raise
    logger.info("room %s: pipeline %s created on %s", room_id, pipeline_id, url)
    return record


async def _create_pipeline(url: str) -> str:
    return (await create_pipeline(media_client(url))).id


async def _release_quietly(url: str, object_id: str) -> bool:
    """Release an object; True when it is gone (released now, or already gone)."""
    try:
        await media_client(url).release(object_id)
    except ObjectNotFound:
        return True
    except (KurentoError, MediaServerUnavailable) as error:
        logger.warning("could not release %s on %s: %s", object_id, url, error)
        return False
    return True


def _forget_pipeline_sync(record_id: int, pipeline_id: str) -> None:
    """The media server no longer has this pipeline (it restarted): forget it and its endpoints."""
    RoomPipeline.objects.filter(pk=record_id, pipeline_id=pipeline_id).delete()


async def _new_endpoint(
    participant: Participant, record: RoomPipeline | None, *, receiving: bool
) -> tuple[RoomPipeline, WebRtcEndpoint]:
    """A WebRtcEndpoint in the room's pipeline; a vanished pipeline is recreated once."""
    for attempt in (1, 2):
        if record is None:
            # Chosen outside the room's lock; another joiner may have placed the room already,
            # and then the room stays where it is.
            url = await _server_for_new_room()
            record = await database_sync_to_async(_room_pipeline_sync)(participant.room_id, url)
        pipeline = MediaPipeline(media_client(record.server_url), record.pipeline_id)
        try:
            # The publisher's endpoint only receives; a viewer's only sends.
            endpoint = await pipeline.create_webrtc_endpoint(
                recvonly=not receiving, sendonly=receiving
            )
        except ObjectNotFound:
            if attempt == 2:
                raise
            logger.warning(
                "room %s: pipeline %s is gone from %s; creating a new one",
                participant.room_id,
                record.pipeline_id,
                record.server_url,
            )
            await database_sync_to_async(_forget_pipeline_sync)(record.pk, record.pipeline_id)
            record = None
            continue
        return record, endpoint
    raise AssertionError("unreachable")


# --- endpoints -------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What negotiating one endpoint needs from the database, read in one visit."""

    pipeline: RoomPipeline | None  # the room's, if it has one
    previous: MediaEndpoint | None  # the participant's endpoint for this target, if any
    source: MediaEndpoint | None  # subscribing: the publisher's endpoint


def _plan_sync(participant: Participant, publisher_id: int | None) -> _Plan:
    endpoints = MediaEndpoint.objects.select_related("pipeline")
    source = None
    if publisher_id is not None:
        source = endpoints.filter(
            owner_id=publisher_id,
            publisher__isnull=True,
            owner__room_id=participant.room_id,
            owner__state=CONNECTED,
        ).first()
        if source is None:
            raise MediaError("not_publishing", "That participant is not sending media.")
    return _Plan(
        pipeline=RoomPipeline.objects.filter(room_id=participant.room_id).first(),
        previous=endpoints.filter(owner_id=participant.pk, publisher_id=publisher_id).first(),
        source=source,
    )


def _endpoint_row_sync(owner_id: int, publisher_id: int | None) -> MediaEndpoint | None:
    return (
        MediaEndpoint.objects.select_related("pipeline")
        .filter(owner_id=owner_id, publisher_id=publisher_id)
        .first()
    )


def _record_endpoint_sync(
    record: RoomPipeline, owner: Participant, publisher_id: int | None, endpoint_id: str
) -> MediaEndpoint | None:
    """Store the endpoint unless the owner left meanwhile or already has one for this target."""
    with transaction.atomic():
        if not Participant.objects.filter(pk=owner.pk, state=CONNECTED).exists():
            return None
        try:
            with transaction.atomic():
                return MediaEndpoint.objects.create(
                    pipeline=record, owner=owner, publisher_id=publisher_id, endpoint_id=endpoint_id
                )
        except IntegrityError:
            return None


def _delete_endpoint_row_sync(row_id: int) -> None:
    MediaEndpoint.objects.filter(pk=row_id).delete()


async def _negotiate(participant: Participant, publisher_id: int | None, offer: str) -> str:
    """Create, record, connect and negotiate one endpoint; undone on any failure.

    The steps that do not depend on each other run together: the answer is what the browser
    waits for, so every round trip saved here is saved from joining a call.
    """
    plan = await database_sync_to_async(_plan_sync)(participant, publisher_id)
    if plan.previous is not None:  # a renegotiation after a failure: start afresh
        await _release_row(plan.previous)
    record, endpoint = await _new_endpoint(
        participant, plan.pipeline, receiving=publisher_id is not None
    )
    turn_url = turn.media_server_turn_url()
    if turn_url is not None:  # before processOffer, which starts the endpoint's ICE agent
        try:
            await endpoint.set_turn_url(turn_url)
        except BaseException:
            await _release_quietly(record.server_url, endpoint.id)
            raise
    steps: list[Awaitable[Any]] = [
        database_sync_to_async(_record_endpoint_sync)(
            record, participant, publisher_id, endpoint.id
        ),
        endpoint.on("IceCandidateFound", _candidate_relay(participant, publisher_id)),
        endpoint.process_offer(offer),
    ]
    if plan.source is not None:
        sender = WebRtcEndpoint(
            media_client(plan.source.pipeline.server_url), plan.source.endpoint_id
        )
        steps.append(sender.connect(endpoint))
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    row = outcomes[0]
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None or not isinstance(row, MediaEndpoint):
        await _release_quietly(record.server_url, endpoint.id)
        if isinstance(row, MediaEndpoint):
            await database_sync_to_async(_delete_endpoint_row_sync)(row.pk)
        if failure is not None:
            raise failure
        raise MediaError("conflict", "Another request for the same stream is in progress.")
    _endpoints[(participant.pk, publisher_id)] = (record.server_url, endpoint.id)
    return outcomes[2]


async def publish(participant: Participant, offer: str) -> str:
    """Receive the participant's media: returns the SDP answer to its offer.

    Once the browser has the answer, call `start_ice` and then `announce_published`.
    """
    try:
        answer = await _negotiate(participant, None, offer)
    except (KurentoError, MediaServerUnavailable) as error:
        raise _media_error(error) from None
    logger.info("participant %s publishes", participant.pk)
    return answer


async def announce_published(participant: Participant) -> None:
    """Tell the room that the participant sends media: the others subscribe."""
    await events.apublish_room_event(
        participant.room_id, {"type": "participant_published", "participant_id": participant.pk}
    )


async def subscribe(participant: Participant, publisher_id: int, offer: str) -> str:
    """Send a publisher's media to the participant: returns the SDP answer to its offer.

    Once the browser has the answer, call `start_ice`.
    """
    if publisher_id == participant.pk:
        raise MediaError("invalid", "You cannot subscribe to yourself.")
    try:
        answer = await _negotiate(participant, publisher_id, offer)
    except ObjectNotFound:
        raise MediaError("not_publishing", "That participant is not sending media.") from None
    except (KurentoError, MediaServerUnavailable) as error:
        raise _media_error(error) from None
    logger.info("participant %s receives %s", participant.pk, publisher_id)
    return answer


async def unsubscribe(participant: Participant, publisher_id: int) -> bool:
    row = await database_sync_to_async(_endpoint_row_sync)(participant.pk, publisher_id)
    _early_candidates.pop((participant.pk, publisher_id), None)
    if row is None:
        return False
    await _release_row(row)
    return True


async def unpublish(participant: Participant) -> bool:
    """Stop publishing: the participant's endpoint and every receiving endpoint fed by it."""
    row = await database_sync_to_async(_endpoint_row_sync)(participant.pk, None)
    _early_candidates.pop((participant.pk, None), None)
    if row is None:
        return False
    viewers = await database_sync_to_async(_viewer_rows_sync)(participant.pk)
    for viewer in [row, *viewers]:
        await _release_row(viewer)
    await events.apublish_room_event(
        participant.room_id, {"type": "participant_unpublished", "participant_id": participant.pk}
    )
    return True


def _viewer_rows_sync(publisher_id: int) -> list[MediaEndpoint]:
    return list(MediaEndpoint.objects.select_related("pipeline").filter(publisher_id=publisher_id))


async def _release_row(row: MediaEndpoint) -> None:
    _forget_endpoint(row)
    await _release_quietly(row.pipeline.server_url, row.endpoint_id)
    await database_sync_to_async(_delete_endpoint_row_sync)(row.pk)


def _media_error(error: KurentoError | MediaServerUnavailable) -> MediaError:
    if isinstance(error, MediaServerUnavailable):
        logger.warning("media server unavailable: %s", error)
        return UNAVAILABLE
    if isinstance(error, SdpError):
        return MediaError(
            "bad_sdp", f"The media server refused the session description: {error.message}"
        )
    if isinstance(error, IceError | InvalidParams):
        return MediaError("bad_candidate", f"The media server refused that: {error.message}")
    logger.error("media server error: %s", error)
    return MediaError("media_error", f"The media server failed: {error.message}")


# --- ICE ---------------------------------------------------------------------------------------

_early_candidates: dict[tuple[int, int | None], list[dict[str, Any]]] = {}
# The endpoints this worker made, by (owner, target): trickled candidates skip the database.
_endpoints: dict[tuple[int, int | None], tuple[str, str]] = {}


def _forget_endpoint(row: MediaEndpoint) -> None:
    if _endpoints.get((row.owner_id, row.publisher_id), (None, None))[1] == row.endpoint_id:
        del _endpoints[(row.owner_id, row.publisher_id)]


async def add_ice_candidate(
    participant: Participant, target: int | None, candidate: dict[str, Any]
) -> None:
    """A browser's candidate for its endpoint (`target` None: publishing; else that publisher's).

    A candidate for an endpoint that does not exist yet is kept until the endpoint is made.
    """
    known = _endpoints.get((participant.pk, target))
    if known is None:
        row = await database_sync_to_async(_endpoint_row_sync)(participant.pk, target)
        if row is None:
            queue = _early_candidates.setdefault((participant.pk, target), [])
            if len(queue) >= _EARLY_CANDIDATE_LIMIT:
                raise MediaError("bad_candidate", "Too many ICE candidates before the offer.")
            queue.append(candidate)
            return
        known = (row.pipeline.server_url, row.endpoint_id)
    endpoint = WebRtcEndpoint(media_client(known[0]), known[1])
    try:
        await _add_candidate(endpoint, candidate)
    except ObjectNotFound:
        return  # released meanwhile (the publisher left): nothing to do
    except (KurentoError, MediaServerUnavailable) as error:
        raise _media_error(error) from None


async def _add_candidate(endpoint: WebRtcEndpoint, candidate: dict[str, Any]) -> None:
    await endpoint.add_ice_candidate(
        candidate["candidate"], candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    )


async def start_ice(participant: Participant, target: int | None) -> None:
    """After the answer went out: hand over the candidates that came early, then let the
    endpoint gather its own (they reach the browser as `ice_candidate` events)."""
    known = _endpoints.get((participant.pk, target))
    if known is None:
        return  # released meanwhile
    endpoint = WebRtcEndpoint(media_client(known[0]), known[1])
    try:
        for candidate in _early_candidates.pop((participant.pk, target), []):
            try:
                await _add_candidate(endpoint, candidate)
            except (IceError, InvalidParams) as error:
                logger.info("participant %s: early candidate refused: %s", participant.pk, error)
        await endpoint.gather_candidates()
    except ObjectNotFound:
        return  # released meanwhile (the publisher left)
    except (KurentoError, MediaServerUnavailable) as error:
        raise _media_error(error) from None


def _candidate_relay(
    participant: Participant, target: int | None
) -> Callable[[dict[str, Any]], Any]:
    channel = participant.connection_id

    async def relay(data: dict[str, Any]) -> None:
        candidate = data.get("candidate")
        if not isinstance(candidate, dict):
            return
        event = {
            "type": "ice_candidate",
            "target": "publish" if target is None else target,
            "candidate": {
                "candidate": candidate.get("candidate"),
                "sdpMid": candidate.get("sdpMid"),
                "sdpMLineIndex": candidate.get("sdpMLineIndex"),
            },
        }
        await get_channel_layer().send(channel, {"type": "media.event", "event": event})

    return relay


# --- release -----------------------------------------------------------------------------------


def _stale_rows_sync(room_id: int) -> list[MediaEndpoint]:
    """Endpoints in the room whose owner or publisher is no longer connected."""
    gone = ~Q(owner__state=CONNECTED) | (
        Q(publisher__isnull=False) & ~Q(publisher__state=CONNECTED)
    )
    return list(
        MediaEndpoint.objects.select_related("pipeline").filter(gone, pipeline__room_id=room_id)
    )


def _take_pipeline_if_empty_sync(room_id: int) -> RoomPipeline | None:
    """Detach the room's pipeline when nobody is connected; the caller releases it."""
    with transaction.atomic():
        Room.objects.select_for_update().filter(pk=room_id).first()
        record = RoomPipeline.objects.filter(room_id=room_id).first()
        if record is None:
            return None
        if Participant.objects.filter(room_id=room_id, state=CONNECTED).exists():
            return None
        record.delete()
    return record


async def sweep_room(room_id: int) -> int:
    """Release what departed participants held in the room, and the pipeline once it is empty.

    Safe to call any time, from any worker, as often as needed. Returns the objects released.
    """
    released = 0
    for row in await database_sync_to_async(_stale_rows_sync)(room_id):
        _early_candidates.pop((row.owner_id, row.publisher_id), None)
        _forget_endpoint(row)
        if await _release_quietly(row.pipeline.server_url, row.endpoint_id):
            await database_sync_to_async(_delete_endpoint_row_sync)(row.pk)
            released += 1
    record = await database_sync_to_async(_take_pipeline_if_empty_sync)(room_id)
    if record is not None:
        if await _release_quietly(record.server_url, record.pipeline_id):
            released += 1
            logger.info("room %s is empty: pipeline %s released", room_id, record.pipeline_id)
        else:  # keep the record so that a later sweep retries
            await database_sync_to_async(_restore_pipeline_sync)(record)
    return released


def _restore_pipeline_sync(record: RoomPipeline) -> None:
    record.pk = None
    record.room_id = None  # an orphan: sweep_orphans retries it
    record.save()


def _orphans_sync() -> list[RoomPipeline]:
    return list(RoomPipeline.objects.filter(room__isnull=True))


async def sweep_orphans() -> int:
    """Release pipelines whose room was deleted (or whose release failed before)."""
    released = 0
    for record in await database_sync_to_async(_orphans_sync)():
        if await _release_quietly(record.server_url, record.pipeline_id):
            await database_sync_to_async(RoomPipeline.objects.filter(pk=record.pk).delete)()
            released += 1
    return released


async def release_participant(participant: Participant) -> int:
    """After a participant ended (any way): release what it held and what others held for it."""
    for key in [k for k in _early_candidates if k[0] == participant.pk]:
        _early_candidates.pop(key, None)
    for key in [k for k in _endpoints if k[0] == participant.pk]:
        _endpoints.pop(key, None)
    return await sweep_room(participant.room_id)


# --- reads for the consumers -----------------------------------------------------------------


def publishing_sync(room_id: int) -> dict[int, dict[str, bool]]:
    """Participants of the room that publish, with whether their audio and video are on."""
    rows = MediaEndpoint.objects.filter(
        pipeline__room_id=room_id, publisher__isnull=True, owner__state=CONNECTED
    ).values_list("owner_id", "audio_on", "video_on")
    return {owner: {"audio": audio, "video": video} for owner, audio, video in rows}


def _set_media_state_sync(participant_id: int, audio: bool, video: bool) -> bool:
    return bool(
        MediaEndpoint.objects.filter(owner_id=participant_id, publisher__isnull=True).update(
            audio_on=audio, video_on=video
        )
    )


async def set_media_state(participant: Participant, *, audio: bool, video: bool) -> None:
    """The participant switched its microphone or camera on or off: tell the room."""
    if not await database_sync_to_async(_set_media_state_sync)(participant.pk, audio, video):
        raise MediaError("not_publishing", "You are not sending media.")
    await events.apublish_room_event(
        participant.room_id,
        {
            "type": "participant_media",
            "participant_id": participant.pk,
            "audio": audio,
            "video": video,
        },
    )
