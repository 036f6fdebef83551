"""Publishing and subscribing: one publishing WebRtcEndpoint per participant and source (its
camera and microphone, a shared screen), one receiving endpoint per (subscriber, publisher,
source), connected from the publisher's. Every step that can fail is undone, and only the
participant's own endpoints can be touched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction

from conference import metrics
from rooms import events, selectors
from rooms.models import Participant
from signaling import protocol, turn
from signaling.kurento import (
    KurentoError,
    MediaServerUnavailable,
    ObjectNotFound,
    WebRtcEndpoint,
)
from signaling.media import clients, ice, pipelines, recording
from signaling.media.errors import MediaError, media_error
from signaling.media.session import (
    CAMERA,
    PLAYBACK,
    SCREEN,
    KnownEndpoint,
    ParticipantMedia,
    Source,
    Target,
)
from signaling.models import MediaEndpoint, RoomPipeline

logger = logging.getLogger(__name__)

CONNECTED = Participant.State.CONNECTED


@dataclass
class _Plan:
    """What negotiating one endpoint needs from the database, read in one visit."""

    pipeline: RoomPipeline | None  # the room's, if it has one
    previous: MediaEndpoint | None  # the participant's endpoint for this target, if any
    source: MediaEndpoint | None  # subscribing: the publisher's endpoint
    # Subscribing: what of the stream a moderator blocked ("AUDIO", "VIDEO"; a shared screen's
    # sound goes with the microphone, its picture is not the camera).
    blocked: frozenset[str] = frozenset()


def moderator_blocked(publisher: Participant) -> frozenset[str]:
    """The media types of a publisher's camera and microphone that a moderator blocked."""
    return frozenset(
        kind
        for kind, on in (
            ("AUDIO", publisher.muted_audio_by_moderator),
            ("VIDEO", publisher.muted_video_by_moderator),
        )
        if on
    )


def _plan_sync(participant: Participant, publisher_id: Target, kind: Source) -> _Plan:
    endpoints = MediaEndpoint.objects.select_related("pipeline")
    source = None
    blocked: frozenset[str] = frozenset()
    if publisher_id is not None:
        source = (
            endpoints.select_related("owner")
            .filter(
                owner_id=publisher_id,
                publisher__isnull=True,
                source=kind,
                owner__room_id=participant.room_id,
                owner__state=CONNECTED,
            )
            .first()
        )
        if source is None:
            what = {SCREEN: "sharing a screen", PLAYBACK: "playing a video"}.get(
                kind, "sending media"
            )
            raise MediaError("not_publishing", f"That participant is not {what}.")
        blocked = moderator_blocked(source.owner)
        if kind == SCREEN:
            blocked &= {"AUDIO"}
        elif kind == PLAYBACK:  # a played video is not its player's camera or microphone
            blocked = frozenset()
    elif kind == SCREEN:
        room = participant.room
        if not selectors.room_allows_sharing(room=room, user=participant.user):
            raise MediaError("forbidden", "Only the room's owner may share a screen here.")
    return _Plan(
        pipeline=RoomPipeline.objects.filter(room_id=participant.room_id).first(),
        previous=endpoints.filter(
            owner_id=participant.pk, publisher_id=publisher_id, source=kind
        ).first(),
        source=source,
        blocked=blocked,
    )


def _media_types(*, video: bool, blocked: frozenset[str]) -> list[str | None]:
    """The media types to connect from a publisher's endpoint to a new receiving one: None for
    all; none at all when a moderator blocked everything that was wanted."""
    wanted = {"AUDIO", "VIDEO"} if video else {"AUDIO"}
    allowed = wanted - blocked
    if allowed == {"AUDIO", "VIDEO"}:
        return [None]
    return sorted(allowed)


def endpoint_row_sync(owner_id: int, publisher_id: Target, source: Source) -> MediaEndpoint | None:
    return (
        MediaEndpoint.objects.select_related("pipeline")
        .filter(owner_id=owner_id, publisher_id=publisher_id, source=source)
        .first()
    )


def _record_endpoint_sync(
    record: RoomPipeline,
    owner: Participant,
    stream: tuple[Target, Source],
    endpoint_id: str,
    video: bool = True,
) -> MediaEndpoint | None:
    """Store the endpoint unless the owner left meanwhile, the pipeline was given up, or the
    owner already has one for this target."""
    with transaction.atomic():
        if not Participant.objects.filter(pk=owner.pk, state=CONNECTED).exists():
            return None
        try:
            with transaction.atomic():
                return MediaEndpoint.objects.create(
                    pipeline=record,
                    owner=owner,
                    publisher_id=stream[0],
                    source=stream[1],
                    endpoint_id=endpoint_id,
                    video_on=video,
                )
        except IntegrityError:
            return None


def _delete_endpoint_row_sync(row_id: int) -> None:
    MediaEndpoint.objects.filter(pk=row_id).delete()


async def release_row(row: MediaEndpoint, media: ParticipantMedia | None = None) -> bool:
    """Release an endpoint and forget it; True when the media server let it go."""
    if media is not None:
        media.forget((row.publisher_id, row.source), row.endpoint_id)
    released = await clients.release_quietly(row.pipeline.server_url, row.endpoint_id)
    await database_sync_to_async(_delete_endpoint_row_sync)(row.pk)
    return released


async def _new_endpoint(
    room_id: int, record: RoomPipeline | None, *, receiving: bool
) -> tuple[RoomPipeline, WebRtcEndpoint]:
    """A WebRtcEndpoint in the room's pipeline. The publisher's endpoint only receives; a
    viewer's only sends."""
    return await pipelines.create_in_room(
        room_id,
        record,
        lambda pipeline: pipeline.create_webrtc_endpoint(
            recvonly=not receiving, sendonly=receiving
        ),
    )


async def _negotiate(
    media: ParticipantMedia, publisher_id: Target, source: Source, offer: str, *, video: bool = True
) -> str:
    """Create, record, connect and negotiate one endpoint; undone on any failure.

    The steps that do not depend on each other run together: the answer is what the browser
    waits for, so every round trip saved here is saved from joining a call.
    """
    participant = media.participant
    plan = await database_sync_to_async(_plan_sync)(participant, publisher_id, source)
    if plan.previous is not None:  # a renegotiation after a failure: start afresh
        await release_row(plan.previous, media)
    record, endpoint = await _new_endpoint(
        participant.room_id, plan.pipeline, receiving=publisher_id is not None
    )
    turn_url = turn.media_server_turn_url()
    if turn_url is not None:  # before processOffer, which starts the endpoint's ICE agent
        try:
            await endpoint.set_turn_url(turn_url)
        except BaseException:
            await clients.release_quietly(record.server_url, endpoint.id)
            raise
    steps: list[Awaitable[Any]] = [
        database_sync_to_async(_record_endpoint_sync)(
            record, participant, (publisher_id, source), endpoint.id, video
        ),
        endpoint.on("IceCandidateFound", ice.candidate_relay(participant, publisher_id, source)),
        endpoint.process_offer(offer),
    ]
    if plan.source is not None:
        sender = WebRtcEndpoint(
            clients.media_client(plan.source.pipeline.server_url), plan.source.endpoint_id
        )
        for media_type in _media_types(video=video, blocked=plan.blocked):
            steps.append(sender.connect(endpoint, media_type))
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    row = outcomes[0]
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None or not isinstance(row, MediaEndpoint):
        await clients.release_quietly(record.server_url, endpoint.id)
        if isinstance(row, MediaEndpoint):
            await database_sync_to_async(_delete_endpoint_row_sync)(row.pk)
        if failure is not None:
            raise failure
        raise MediaError("conflict", "Another request for the same stream is in progress.")
    media.remember((publisher_id, source), KnownEndpoint(record.server_url, endpoint.id))
    if plan.source is not None:
        await _follow_moderation(sender, endpoint, plan.blocked, publisher_id, source, video)
    return outcomes[2]


def _blocked_now_sync(publisher_id: int, source: Source) -> frozenset[str]:
    publisher = Participant.objects.filter(pk=publisher_id).first()
    if publisher is None or source == PLAYBACK:
        return frozenset()
    blocked = moderator_blocked(publisher)
    return blocked & {"AUDIO"} if source == SCREEN else blocked


async def _follow_moderation(
    sender: WebRtcEndpoint,
    endpoint: WebRtcEndpoint,
    planned: frozenset[str],
    publisher_id: int,
    source: Source,
    video: bool,
) -> None:
    """A moderator's block (or allow) that came while this endpoint was negotiated may have
    missed it (it was not recorded yet when the block went round the receivers): read the block
    again now that the endpoint is connected, and follow it."""
    now = await database_sync_to_async(_blocked_now_sync)(publisher_id, source)
    wanted = {"AUDIO", "VIDEO"} if video else {"AUDIO"}
    try:
        for media_type in sorted((now - planned) & wanted):
            await sender.disconnect(endpoint, media_type)
        for media_type in sorted((planned - now) & wanted):
            await sender.connect(endpoint, media_type)
    except (KurentoError, MediaServerUnavailable):
        logger.exception("could not follow a moderator's change for %s's %s", publisher_id, source)


async def publish(*, media: ParticipantMedia, offer: str, source: Source = CAMERA) -> str:
    """Receive the participant's camera and microphone, or its screen (if the room lets it
    share): returns the SDP answer to its offer.

    Once the browser has the answer, call `ice.start_ice` and then `announce_published`.
    """
    started = asyncio.get_running_loop().time()
    try:
        answer = await _negotiate(media, None, source, offer)
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None
    metrics.NEGOTIATION_SECONDS.labels(kind="publish").observe(
        asyncio.get_running_loop().time() - started
    )
    logger.info("participant %s publishes its %s", media.participant.pk, source)
    return answer


async def announce_published(*, media: ParticipantMedia, source: Source = CAMERA) -> None:
    """Tell the room that the participant sends a source: the others subscribe."""
    participant = media.participant
    event = protocol.ParticipantPublished(participant_id=participant.pk, source=source)
    await events.apublish_room_event(participant.room_id, event.payload())


async def subscribe(
    *,
    media: ParticipantMedia,
    publisher_id: int,
    offer: str,
    video: bool = True,
    source: Source = CAMERA,
) -> str:
    """Send a publisher's camera or screen to the participant (`video` false: its audio only,
    for now): returns the SDP answer to its offer.

    Once the browser has the answer, call `ice.start_ice`.
    """
    if publisher_id == media.participant.pk and source != PLAYBACK:  # a video you play: you see it
        raise MediaError("invalid", "You cannot subscribe to yourself.")
    started = asyncio.get_running_loop().time()
    try:
        answer = await _negotiate(media, publisher_id, source, offer, video=video)
    except ObjectNotFound:
        raise MediaError("not_publishing", "That participant is not sending media.") from None
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None
    metrics.NEGOTIATION_SECONDS.labels(kind="subscribe").observe(
        asyncio.get_running_loop().time() - started
    )
    logger.info("participant %s receives %s's %s", media.participant.pk, publisher_id, source)
    return answer


async def unsubscribe(
    *, media: ParticipantMedia, publisher_id: int, source: Source = CAMERA
) -> bool:
    row = await database_sync_to_async(endpoint_row_sync)(
        media.participant.pk, publisher_id, source
    )
    media.forget((publisher_id, source))
    if row is None:
        return False
    await release_row(row, media)
    return True


def _set_wants_video_sync(receiver_id: int, on: bool) -> None:
    MediaEndpoint.objects.filter(pk=receiver_id).update(video_on=on)


def _pair_sync(
    owner_id: int, publisher_id: int, kind: Source
) -> tuple[MediaEndpoint, MediaEndpoint] | None:
    """The participant's receiving endpoint for a publisher's source, and the publisher's own."""
    endpoints = MediaEndpoint.objects.select_related("pipeline")
    receiver = endpoints.filter(owner_id=owner_id, publisher_id=publisher_id, source=kind).first()
    source = (
        endpoints.select_related("owner")
        .filter(owner_id=publisher_id, publisher__isnull=True, source=kind, owner__state=CONNECTED)
        .first()
    )
    return None if receiver is None or source is None else (receiver, source)


async def set_receiving_video(
    *, media: ParticipantMedia, publisher_id: int, on: bool, source: Source = CAMERA
) -> None:
    """Turn on or off the video the participant receives from a publisher; its audio goes on.

    The media server stops carrying it (a disconnect of the VIDEO media type), so a tile that is
    off screen costs neither the participant's bandwidth nor the server's forwarding. A camera a
    moderator blocked stays disconnected.
    """
    pair = await database_sync_to_async(_pair_sync)(media.participant.pk, publisher_id, source)
    if pair is None:
        raise MediaError("not_subscribed", "You do not receive that participant's media.")
    receiver, sending = pair
    sender = WebRtcEndpoint(clients.media_client(sending.pipeline.server_url), sending.endpoint_id)
    sink = WebRtcEndpoint(clients.media_client(receiver.pipeline.server_url), receiver.endpoint_id)
    # Remembered, so that a moderator allowing a camera again leaves this one off.
    await database_sync_to_async(_set_wants_video_sync)(receiver.pk, on)
    if on and source == CAMERA and "VIDEO" in moderator_blocked(sending.owner):
        return
    try:
        if on:
            await sender.connect(sink, "VIDEO")
        else:
            await sender.disconnect(sink, "VIDEO")
    except ObjectNotFound:
        raise MediaError("not_subscribed", "That media is no longer there.") from None
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None


def _viewer_rows_sync(publisher_id: int, source: Source) -> list[MediaEndpoint]:
    return list(
        MediaEndpoint.objects.select_related("pipeline").filter(
            publisher_id=publisher_id, source=source
        )
    )


async def unpublish(*, media: ParticipantMedia, source: Source = CAMERA) -> bool:
    """Stop publishing a source (stop sharing the screen, stop a played video): the
    participant's endpoint for it and every receiving endpoint fed by it."""
    media.forget((None, source))
    return await withdraw(participant=media.participant, source=source)


async def withdraw(
    *, participant: Participant, source: Source, endpoint_id: str | None = None
) -> bool:
    """Release what the participant publishes of `source` (only if it is `endpoint_id`, when
    given) and every receiving endpoint fed by it, and tell the room. False if there was none."""
    row = await database_sync_to_async(endpoint_row_sync)(participant.pk, None, source)
    if row is None or endpoint_id not in (None, row.endpoint_id):
        return False
    viewers = await database_sync_to_async(_viewer_rows_sync)(participant.pk, source)
    await recording.finish_stream(publisher_id=participant.pk, source=source)
    await release_row(row)
    for viewer in viewers:
        await release_row(viewer)
    event = protocol.ParticipantUnpublished(participant_id=participant.pk, source=source)
    await events.apublish_room_event(participant.room_id, event.payload())
    return True


def _set_media_state_sync(participant_id: int, audio: bool, video: bool) -> bool:
    publishing = MediaEndpoint.objects.filter(
        owner_id=participant_id, publisher__isnull=True, source=CAMERA
    )
    return bool(publishing.update(audio_on=audio, video_on=video))


async def set_media_state(*, media: ParticipantMedia, audio: bool, video: bool) -> None:
    """The participant switched its microphone or camera on or off: tell the room."""
    participant = media.participant
    if not await database_sync_to_async(_set_media_state_sync)(participant.pk, audio, video):
        raise MediaError("not_publishing", "You are not sending media.")
    event = protocol.ParticipantMedia(participant_id=participant.pk, audio=audio, video=video)
    await events.apublish_room_event(participant.room_id, event.payload())
