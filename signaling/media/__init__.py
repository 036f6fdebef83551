"""The room media service: what a room's participants hold on the media server, and its life.

A room gets one MediaPipeline on its first media request; each participant one publishing
WebRtcEndpoint; each (subscriber, publisher) pair one receiving endpoint, connected from the
publisher's. Ids live in the database (signaling.models), so any daphne worker can act on any
room, and whatever a participant held is released however it left.

The service speaks only the Kurento Protocol (signaling.kurento): it cannot tell Kurento Media
Server from the embedded mediaserver/. Its modules, by concern:

- `clients`: the Kurento clients of this process, and where a new room goes;
- `pipelines`: each room's pipeline, made without holding a lock across the network;
- `negotiation`: publish, subscribe, unsubscribe, unpublish, media state;
- `ice`: candidates both ways;
- `moderation`: a moderator's block of someone's microphone or camera, on the media server;
- `recording`: a recorder per published stream while the meeting is recorded;
- `playback`: a video played into the room (a PlayerEndpoint, published as "playback");
- `sweeping`: releasing what departed participants and emptied rooms held;
- `healing`: rebuilding rooms when their media server restarted or stays away;
- `loopback`: the pre-join connection test (one endpoint connected to itself, in a pipeline of
  its own, released with its socket);
- `session`: the per-connection cache (`ParticipantMedia`).
"""

from signaling.media import healing  # noqa: F401  (it watches the clients)
from signaling.media.clients import close_clients, media_client
from signaling.media.errors import MediaError
from signaling.media.ice import add_ice_candidate, start_ice
from signaling.media.moderation import block_media
from signaling.media.negotiation import (
    announce_published,
    publish,
    set_media_state,
    set_receiving_video,
    subscribe,
    unpublish,
    unsubscribe,
)
from signaling.media.playback import play
from signaling.media.recording import (
    composing_done,
    enforce_quota,
    record_published,
    record_room,
    stop_recording,
)
from signaling.media.session import ParticipantMedia
from signaling.media.sweeping import sweep_departed, sweep_orphans, sweep_room

__all__ = [
    "MediaError",
    "ParticipantMedia",
    "add_ice_candidate",
    "announce_published",
    "block_media",
    "close_clients",
    "composing_done",
    "enforce_quota",
    "media_client",
    "play",
    "publish",
    "record_published",
    "record_room",
    "set_media_state",
    "set_receiving_video",
    "start_ice",
    "stop_recording",
    "subscribe",
    "sweep_departed",
    "sweep_orphans",
    "sweep_room",
    "unpublish",
    "unsubscribe",
]
