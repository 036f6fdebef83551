"""ICE between browsers and the media server: the browser's trickled candidates to its
endpoints (kept while an endpoint does not exist yet), and the endpoints' candidates to the
browser, as `ice_candidate` messages through the channel layer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms.models import Participant
from signaling import protocol
from signaling.kurento import (
    IceError,
    InvalidParams,
    KurentoError,
    MediaServerUnavailable,
    ObjectNotFound,
    WebRtcEndpoint,
)
from signaling.media import clients
from signaling.media.errors import MediaError, media_error
from signaling.media.session import (
    CAMERA,
    EARLY_CANDIDATE_LIMIT,
    EARLY_TARGET_LIMIT,
    KnownEndpoint,
    ParticipantMedia,
    Source,
    Target,
)
from signaling.models import MediaEndpoint

logger = logging.getLogger(__name__)


def _endpoint_sync(owner_id: int, publisher_id: Target, source: Source) -> KnownEndpoint | None:
    row = (
        MediaEndpoint.objects.select_related("pipeline")
        .filter(owner_id=owner_id, publisher_id=publisher_id, source=source)
        .first()
    )
    return None if row is None else KnownEndpoint(row.pipeline.server_url, row.endpoint_id)


async def add_ice_candidate(
    *, media: ParticipantMedia, target: Target, candidate: dict[str, Any], source: Source = CAMERA
) -> None:
    """A browser's candidate for its endpoint (`target` None: publishing; else that publisher's)
    of `source`.

    A candidate for an endpoint that does not exist yet is kept until the endpoint is made.
    """
    stream = (target, source)
    known = media.endpoints.get(stream)
    if known is None:
        known = await database_sync_to_async(_endpoint_sync)(media.participant.pk, target, source)
        if known is None:
            early = media.early_candidates
            if stream not in early and len(early) >= EARLY_TARGET_LIMIT:
                raise MediaError("bad_candidate", "Too many connections with early candidates.")
            queue = early.setdefault(stream, [])
            if len(queue) >= EARLY_CANDIDATE_LIMIT:
                raise MediaError("bad_candidate", "Too many ICE candidates before the offer.")
            queue.append(candidate)
            return
    endpoint = WebRtcEndpoint(clients.media_client(known.server_url), known.endpoint_id)
    try:
        await _add_candidate(endpoint, candidate)
    except ObjectNotFound:
        return  # released meanwhile (the publisher left, the media was rebuilt): nothing to do
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None


async def _add_candidate(endpoint: WebRtcEndpoint, candidate: dict[str, Any]) -> None:
    await endpoint.add_ice_candidate(
        candidate["candidate"], candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    )


async def start_ice(*, media: ParticipantMedia, target: Target, source: Source = CAMERA) -> None:
    """After the answer went out: hand over the candidates that came early, then let the
    endpoint gather its own (they reach the browser as `ice_candidate` events)."""
    known = media.endpoints.get((target, source))
    early = media.early_candidates.pop((target, source), [])
    if known is None:
        return  # released meanwhile
    endpoint = WebRtcEndpoint(clients.media_client(known.server_url), known.endpoint_id)
    try:
        for candidate in early:
            try:
                await _add_candidate(endpoint, candidate)
            except (IceError, InvalidParams) as error:
                logger.info(
                    "participant %s: early candidate refused: %s", media.participant.pk, error
                )
        await endpoint.gather_candidates()
    except ObjectNotFound:
        return  # released meanwhile (the publisher left)
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None


def candidate_relay(
    participant: Participant, target: Target, source: Source
) -> Callable[[dict[str, Any]], Any]:
    """The callback that sends an endpoint's candidates to its participant's connection."""
    channel = participant.connection_id

    async def relay(data: dict[str, Any]) -> None:
        candidate = data.get("candidate")
        if not isinstance(candidate, dict):
            return
        event = protocol.IceCandidate(
            target="publish" if target is None else target,
            source=source,
            candidate={
                "candidate": candidate.get("candidate"),
                "sdpMid": candidate.get("sdpMid"),
                "sdpMLineIndex": candidate.get("sdpMLineIndex"),
            },
        )
        await get_channel_layer().send(channel, {"type": "media.event", "event": event.payload()})

    return relay
