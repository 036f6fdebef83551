"""Playing a video into a room: a PlayerEndpoint in the room's pipeline reads one of the room's
uploaded videos or ready recordings (from RECORDINGS_MEDIA_DIR, as the media server sees it)
and is published as the source "playback" of the participant who played it. Everyone, that
participant too, receives it like a shared screen: a receiving WebRtcEndpoint connected from
the player (negotiation.subscribe). It ends at the file's end (EndOfStream), when they stop it
(`unpublish` of "playback"), play another, or leave; a recorded meeting records it as a stream
of its own. The same Kurento calls work on KMS, whose filesystem then holds the files.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError

from rooms import events, selectors
from rooms.models import Participant
from signaling import protocol
from signaling.kurento import KurentoError, MediaServerUnavailable
from signaling.media import clients, pipelines, recording
from signaling.media.errors import MediaError, media_error
from signaling.media.negotiation import unpublish, withdraw
from signaling.media.session import PLAYBACK, ParticipantMedia
from signaling.models import MediaEndpoint, RoomPipeline

logger = logging.getLogger(__name__)

# End-of-file handlers running in this process, kept referenced until they end.
_ending: set[asyncio.Task[None]] = set()


def _playable_sync(participant: Participant, key: str) -> selectors.Playable | None:
    """The file `key` names; MediaError if the participant may not play into the room."""
    room, user = participant.room, participant.user
    if not selectors.room_recordings_visible_to(room=room, user=user):
        raise MediaError("forbidden", "Only the room's owner may play a video here.")
    return selectors.playable(room=room, user=user, key=key)


def _record_sync(
    record: RoomPipeline, participant: Participant, player_id: str, title: str
) -> MediaEndpoint | None:
    """Store the player as the participant's "playback" endpoint, unless they left meanwhile or
    another request of theirs was quicker."""
    connected = Participant.objects.filter(pk=participant.pk, state=Participant.State.CONNECTED)
    if not connected.exists():
        return None
    try:
        return MediaEndpoint.objects.create(
            pipeline=record,
            owner=participant,
            source=PLAYBACK,
            endpoint_id=player_id,
            label=title,
        )
    except IntegrityError:
        return None


def media_uri(file: str) -> str:
    """A file under RECORDINGS_DIR as the media server opens it."""
    return f"file://{settings.RECORDINGS_MEDIA_DIR.rstrip('/')}/{file}"


async def play(*, media: ParticipantMedia, file: str) -> str:
    """Play the room's video or recording `file` ("video:<id>", "recording:<id>") into the
    room as the participant's "playback"; returns its title. What they played before stops."""
    participant = media.participant
    found = await database_sync_to_async(_playable_sync)(participant, file)
    if found is None:
        raise MediaError("not_found", "There is no such video or recording to play.")
    await unpublish(media=media, source=PLAYBACK)  # what they played before
    try:
        record, player = await pipelines.create_in_room(
            participant.room_id,
            None,
            lambda pipeline: pipeline.create_player_endpoint(uri=media_uri(found.file)),
        )
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None
    try:
        row = await database_sync_to_async(_record_sync)(
            record, participant, player.id, found.title
        )
        if row is None:
            raise MediaError("conflict", "Another request to play a video is in progress.")
        await player.on("EndOfStream", _on_end(participant, player.id))
        await player.play()
    except BaseException as error:
        await clients.release_quietly(record.server_url, player.id)
        await database_sync_to_async(MediaEndpoint.objects.filter(endpoint_id=player.id).delete)()
        if isinstance(error, (KurentoError, MediaServerUnavailable)):
            raise media_error(error) from None
        raise
    event = protocol.ParticipantPublished(
        participant_id=participant.pk, source=PLAYBACK, title=found.title
    )
    await events.apublish_room_event(participant.room_id, event.payload())
    await recording.record_published(participant=participant, source=PLAYBACK)
    logger.info("participant %s plays %s into room %s", participant.pk, file, participant.room_id)
    return found.title


def _on_end(participant: Participant, player_id: str) -> Any:
    """The EndOfStream handler of one player: that player (not a later one) stops."""

    async def withdraw_quietly() -> None:
        try:
            await withdraw(participant=participant, source=PLAYBACK, endpoint_id=player_id)
        except (KurentoError, MediaServerUnavailable):  # the sweep releases it later
            logger.warning("could not stop the video %s that ended", player_id, exc_info=True)

    def ended(_data: dict[str, Any]) -> None:
        task = asyncio.create_task(withdraw_quietly())
        _ending.add(task)
        task.add_done_callback(_ending.discard)

    return ended
