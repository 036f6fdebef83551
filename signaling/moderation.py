"""Running a meeting on the room socket: one connection's side of a moderator's actions. The
rooms services check that the sender may, in the sender's own room, store and publish; the
media service enforces it on the media server (signaling.actions has the common part)."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.utils.translation import gettext

from rooms import services
from rooms.models import Participant
from signaling import media, protocol
from signaling.actions import RoomActions

logger = logging.getLogger(__name__)

# Per connection: (tokens a second on average, burst). A moderator muting a few people in a
# row stays well inside.
MODERATION_RATE = (2.0, 10)


class Moderation(RoomActions[protocol.ModerationMessage]):
    RATES = {"moderation": MODERATION_RATE}

    def limit_of(self, message: protocol.ModerationMessage) -> tuple[str, str]:
        return "moderation", gettext("Too many changes at once; wait a moment.")

    async def act(
        self, participant: Participant, message: protocol.ModerationMessage
    ) -> protocol.ServerMessage:
        room_id, by_user = participant.room_id, participant.user
        match message:
            case protocol.Moderator(user_id=user_id, on=on):
                change = services.moderator_grant if on else services.moderator_revoke
                await database_sync_to_async(change)(
                    room_id=room_id, user_id=user_id, by_user=by_user
                )
                return protocol.ModeratorSet(user_id=user_id, on=on, id=message.id)
            case protocol.ModerateMedia(participant_id=other, kind=kind, blocked=blocked):
                await database_sync_to_async(services.participant_moderate_media)(
                    room_id=room_id,
                    participant_id=other,
                    kind=kind,
                    blocked=blocked,
                    by_user=by_user,
                )
                # Also when the flag was so already: a block the media server missed is redone.
                await media.block_media(publisher_id=other, kind=kind, blocked=blocked)
                return protocol.MediaModerated(
                    participant_id=other, kind=kind, blocked=blocked, id=message.id
                )
            case protocol.MuteAll(kind=kind):
                blocked = await database_sync_to_async(services.participants_mute_all)(
                    room_id=room_id, kind=kind, by_user=by_user
                )
                for other in blocked:
                    await media.block_media(publisher_id=other, kind=kind, blocked=True)
                return protocol.MutedAll(kind=kind, participant_ids=blocked, id=message.id)
            case protocol.UnblockSelf(kind=kind):
                await database_sync_to_async(services.participant_unblock_self)(
                    participant_id=participant.pk, kind=kind
                )
                await media.block_media(publisher_id=participant.pk, kind=kind, blocked=False)
                return protocol.MediaModerated(
                    participant_id=participant.pk, kind=kind, blocked=False, id=message.id
                )
            case protocol.Admit(user_id=user_id) | protocol.Deny(user_id=user_id):
                admit = isinstance(message, protocol.Admit)
                decided = await database_sync_to_async(services.join_requests_decide)(
                    room_id=room_id, user_id=user_id, admit=admit, by_user=by_user
                )
                return protocol.JoinDecided(user_ids=decided, admitted=admit, id=message.id)
            case protocol.Remove(participant_id=other, ban=ban):
                await database_sync_to_async(services.participant_remove)(
                    room_id=room_id, participant_id=other, by_user=by_user, ban=ban
                )
                await self._release_departed(room_id)
                return protocol.Removed(participant_id=other, id=message.id)
            case protocol.Readmit(user_id=user_id):
                await database_sync_to_async(services.removal_lift)(
                    room_id=room_id, user_id=user_id, by_user=by_user
                )
                return protocol.Readmitted(user_id=user_id, id=message.id)
            case protocol.Record(on=True):
                recording = await database_sync_to_async(services.recording_start)(
                    room_id=room_id, by_user=by_user
                )
                await media.record_room(recording=recording)
                return protocol.RecordingSet(on=True, id=message.id)
            case protocol.Record(on=False):
                stopped = await database_sync_to_async(services.recording_stop)(
                    room_id=room_id, by_user=by_user
                )
                if stopped is not None:
                    await media.stop_recording(recording=stopped)
                return protocol.RecordingSet(on=False, id=message.id)
            case protocol.EndMeeting():
                await database_sync_to_async(services.meeting_end)(room_id=room_id, by_user=by_user)
                # Not released here: every connection releases on `room_closed` (this one too,
                # right after this reply, and its sweep takes whoever has no connection left).
                # Releasing first kept this page from hearing the end until it was all done.
                return protocol.MeetingEnded(id=message.id)
        raise AssertionError(f"no handler for {message.type_name}")  # a message added, not here

    async def _release_departed(self, room_id: int) -> None:
        """Release the media of whoever the action ended, without waiting for their connections
        (on any worker, or none) to close; they sweep too."""
        try:
            await media.sweep_room(room_id)
        except Exception:
            logger.exception("releasing departed media in room %s failed", room_id)
