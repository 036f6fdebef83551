"""What a moderator blocks, enforced on the media server: a publisher's microphone or camera is
disconnected (that media type only) from every endpoint that receives it, so nothing of it
reaches anyone (or any recording), whatever the publisher's browser keeps sending. Allowing it
connects it again.
New receiving endpoints honour the block as they are made (negotiation._media_types)."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async

from signaling.kurento import (
    KurentoError,
    MediaElement,
    MediaServerUnavailable,
    ObjectNotFound,
    WebRtcEndpoint,
)
from signaling.media import clients
from signaling.media.session import CAMERA, SCREEN
from signaling.models import MediaEndpoint, MediaRecorder

logger = logging.getLogger(__name__)

MEDIA_TYPES = {"audio": "AUDIO", "video": "VIDEO"}


def _streams_sync(publisher_id: int, kind: str) -> list[tuple[MediaEndpoint, MediaEndpoint]]:
    """(sending, receiving) endpoint pairs of the publisher's streams that carry `kind`: its
    camera, and for sound its shared screen too (a screen's sound is a microphone's business)."""
    sources = (CAMERA, SCREEN) if kind == "audio" else (CAMERA,)
    endpoints = MediaEndpoint.objects.select_related("pipeline").filter(source__in=sources)
    pairs = []
    for sending in endpoints.filter(owner_id=publisher_id, publisher__isnull=True):
        receiving = endpoints.filter(publisher_id=publisher_id, source=sending.source)
        if kind == "video":  # not to viewers who turned it off (its tile is off screen)
            receiving = receiving.filter(video_on=True)
        pairs.extend((sending, row) for row in receiving)
    return pairs


def _recorders_sync(publisher_id: int, kind: str) -> list[tuple[MediaEndpoint, str, str]]:
    """(sending endpoint, media server, recorder id) of the publisher's recorded streams that
    carry `kind`: a block keeps it out of the recording too."""
    sources = (CAMERA, SCREEN) if kind == "audio" else (CAMERA,)
    found = []
    for recorder in MediaRecorder.objects.select_related("pipeline").filter(
        publisher_id=publisher_id, source__in=sources
    ):
        sending = (
            MediaEndpoint.objects.select_related("pipeline")
            .filter(owner_id=publisher_id, publisher__isnull=True, source=recorder.source)
            .first()
        )
        if sending is not None:
            found.append((sending, recorder.pipeline.server_url, recorder.recorder_id))
    return found


async def block_media(*, publisher_id: int, kind: str, blocked: bool) -> int:
    """Disconnect (`blocked`) or connect again the publisher's `kind` ("audio" or "video") to
    every endpoint receiving its camera (and, for sound, its shared screen). Returns how many
    were changed; an endpoint being released meanwhile is skipped, a media server that fails is
    logged (the block stays recorded, and new receivers honour it)."""
    media_type = MEDIA_TYPES[kind]
    pairs = [
        (sending, row.pipeline.server_url, row.endpoint_id)
        for sending, row in await database_sync_to_async(_streams_sync)(publisher_id, kind)
    ]
    pairs += await database_sync_to_async(_recorders_sync)(publisher_id, kind)
    changed = 0
    for sending, sink_url, sink_id in pairs:
        sender = WebRtcEndpoint(
            clients.media_client(sending.pipeline.server_url), sending.endpoint_id
        )
        sink = MediaElement(clients.media_client(sink_url), sink_id)
        try:
            if blocked:
                await sender.disconnect(sink, media_type)
            else:
                await sender.connect(sink, media_type)
        except ObjectNotFound:
            continue
        except (KurentoError, MediaServerUnavailable):
            logger.exception(
                "could not %s the %s of participant %s for endpoint %s",
                "block" if blocked else "allow",
                kind,
                publisher_id,
                sink_id,
            )
            continue
        changed += 1
    logger.info(
        "%s of participant %s %s for %d receivers",
        kind,
        publisher_id,
        "blocked" if blocked else "allowed",
        changed,
    )
    return changed
