"""Playing a video into a room through the product, with aiortc peers in place of browsers (the
room WebSocket, the room media service, the embedded media server's PlayerEndpoint): the owner
uploads a video and plays it; everyone, the owner too, receives it as the owner's "playback"
and decodes its frames; late joiners are told; it ends by itself at the file's end, when
stopped, or when its player leaves, and nothing stays on the media server. Only the owner may
play, and only the room's own files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from rooms import services
from rooms.models import Recording, RecordingTrack, RoomVideo
from signaling.models import MediaEndpoint
from tests.media.callers import Caller
from tests.mediaserver.test_player import make_media

# Enough of an offer for the protocol's checks; the service refuses before the media server.
OFFER = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256 AA\r\n"
OFFER += "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Film club")


def _players(kms) -> list[object]:
    return [o for o in kms.registry.objects.values() if o.TYPE == "PlayerEndpoint"]


async def _upload(room, user, tmp_path: Path, seconds: float, title: str = "Trailer") -> RoomVideo:
    clip = make_media(tmp_path / f"clip-{seconds}.webm", seconds=seconds)
    upload = SimpleUploadedFile("trailer.webm", clip.read_bytes(), content_type="video/webm")
    return await sync_to_async(services.video_add)(
        room=room, by_user=user, upload=upload, title=title
    )


async def _frames(caller: Caller, publisher: int, at_least: int) -> None:
    await caller.played[publisher].wait_video(at_least, timeout=15)


async def test_the_owner_plays_a_video_everyone_sees_it_and_it_ends_by_itself(
    join, kms, room, people, tmp_path
) -> None:
    video = await _upload(room, people[0], tmp_path, seconds=4.0)
    ada, grace = [await join(user, room) for user in people[:2]]

    reply = await ada.request({"type": "play", "file": f"video:{video.pk}"})
    assert reply["type"] == "playing" and reply["title"] == "Trailer", reply
    for caller in (ada, grace):
        event = await caller.wait_event("participant_published", source="playback")
        assert event["participant_id"] == ada.id and event["title"] == "Trailer"
    assert len(_players(kms)) == 1

    # Both receive it, the owner too (she sees what everyone sees), and decode real frames.
    for caller in (ada, grace):
        assert (await caller.watch_screen(ada.id, "playback"))["type"] == "subscribed"
    await asyncio.gather(
        *(c.pump(2.0) for c in (ada, grace)),
        _frames(ada, ada.id, 20),
        _frames(grace, ada.id, 20),
    )
    assert grace.played[ada.id].received.non_black_frames > 0
    assert grace.played[ada.id].received.audio_frames > 0
    assert grace.played[ada.id].received.sizes == {(320, 240)}

    # Someone joining now is told who plays what.
    alan = await join(people[2], room)
    playing = {p["id"]: p["playing"] for p in alan.snapshot["participants"]}
    assert playing[ada.id] == "Trailer" and playing[grace.id] is None

    # At the file's end it stops by itself: everyone is told, the media server lets it go.
    for caller in (ada, grace, alan):
        await caller.wait_event(
            "participant_unpublished", timeout=10, participant_id=ada.id, source="playback"
        )
    assert _players(kms) == []
    assert not await sync_to_async(MediaEndpoint.objects.filter(source="playback").exists)()
    for caller in (ada, grace, alan):
        await caller.socket.close()


async def test_stopping_playing_another_and_leaving_release_the_player(
    join, kms, room, people, tmp_path
) -> None:
    first = await _upload(room, people[0], tmp_path, seconds=30.0, title="First")
    second = await _upload(room, people[0], tmp_path, seconds=31.0, title="Second")
    ada, grace = [await join(user, room) for user in people[:2]]

    assert (await ada.request({"type": "play", "file": f"video:{first.pk}"}))["type"] == "playing"
    await grace.wait_event("participant_published", source="playback", title="First")
    assert (await grace.watch_screen(ada.id, "playback"))["type"] == "subscribed"
    await asyncio.gather(grace.pump(1.0), _frames(grace, ada.id, 5))

    # Playing another stops the first: one player, the new one.
    reply = await ada.request({"type": "play", "file": f"video:{second.pk}"})
    assert reply["title"] == "Second"
    await grace.wait_event("participant_unpublished", source="playback")
    await grace.wait_event("participant_published", source="playback", title="Second")
    assert len(_players(kms)) == 1

    # Stopping it: an `unpublish` of "playback".
    reply = await ada.request({"type": "unpublish", "source": "playback"})
    assert reply == {"type": "unpublished", "source": "playback", "id": reply["id"]}
    assert _players(kms) == []

    # Playing again, then leaving: the sweep releases the player and what others received.
    await ada.request({"type": "play", "file": f"video:{first.pk}"})
    assert (await grace.watch_screen(ada.id, "playback"))["type"] == "subscribed"
    await ada.socket.close()
    async with asyncio.timeout(5):
        while _players(kms):
            await asyncio.sleep(0.05)
    await grace.socket.close()


async def test_only_the_owner_plays_and_only_the_rooms_own_files(
    join, kms, room, people, make_room, tmp_path
) -> None:
    video = await _upload(room, people[0], tmp_path, seconds=2.0)
    elsewhere = await sync_to_async(make_room)(people[1], "Grace's room")
    hers = await _upload(elsewhere, people[1], tmp_path, seconds=2.0)
    ada, grace = [await join(user, room) for user in people[:2]]

    refused = await grace.request({"type": "play", "file": f"video:{video.pk}"})
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    # The owner cannot play another room's file, nor anything that is not a file of hers.
    for name in (f"video:{hers.pk}", "video:99999", "recording:1", "../../etc/passwd", ""):
        refused = await ada.request({"type": "play", "file": name})
        assert refused["type"] == "error" and refused["code"] == "not_found", (name, refused)
    refused = await ada.request({"type": "play", "file": "x" * 41})
    assert refused["type"] == "error" and refused["code"] == "invalid", refused
    refused = await ada.request({"type": "play"})
    assert refused["type"] == "error" and refused["code"] == "invalid", refused
    # Nobody can subscribe to a playback that does not exist; nor, still, to their own camera.
    reply = await grace.watch_screen(ada.id, "playback")
    assert reply["type"] == "error" and reply["code"] == "not_publishing", reply
    reply = await grace.request({"type": "subscribe", "publisher": grace.id, "sdp": OFFER})
    assert reply["type"] == "error" and reply["code"] == "invalid", reply
    assert _players(kms) == []
    # The connection goes on working.
    assert (await ada.request({"type": "play", "file": f"video:{video.pk}"}))["type"] == "playing"
    await ada.request({"type": "unpublish", "source": "playback"})
    for caller in (ada, grace):
        await caller.socket.close()


async def test_a_ready_recording_plays_too(join, kms, room, people, tmp_path) -> None:
    directory = Path(settings.RECORDINGS_DIR) / str(room.pk) / "rec"
    directory.mkdir(parents=True)
    make_media(directory / "meeting.webm", seconds=3.0)
    recording = await sync_to_async(Recording.objects.create)(
        room=room,
        started_by=people[0],
        state=Recording.State.READY,
        directory=f"{room.pk}/rec",
        file=f"{room.pk}/rec/meeting.webm",
        size=1,
        duration=3.0,
    )
    ada = await join(people[0], room)
    reply = await ada.request({"type": "play", "file": f"recording:{recording.pk}"})
    assert reply["type"] == "playing" and reply["title"].startswith("Recording of"), reply
    assert (await ada.watch_screen(ada.id, "playback"))["type"] == "subscribed"
    await asyncio.gather(ada.pump(1.5), _frames(ada, ada.id, 10))
    await ada.request({"type": "unpublish", "source": "playback"})
    await ada.socket.close()


async def test_a_recorded_meeting_records_the_played_video_as_a_stream(
    join, kms, room, people, tmp_path
) -> None:
    video = await _upload(room, people[0], tmp_path, seconds=30.0)
    ada = await join(people[0], room)
    await ada.publish()
    assert (await ada.request({"type": "record", "on": True}))["type"] == "recording_set"
    await ada.request({"type": "play", "file": f"video:{video.pk}"})
    await ada.pump(2.0)
    recorders = [o for o in kms.registry.objects.values() if o.TYPE == "RecorderEndpoint"]
    player = _players(kms)[0]
    assert len(recorders) == 2
    assert player in {r.sources["VIDEO"] for r in recorders}
    await ada.request({"type": "record", "on": False})
    tracks = await sync_to_async(list)(RecordingTrack.objects.order_by("source"))
    assert [(t.source, t.label) for t in tracks] == [
        ("camera", people[0].display_name),
        ("playback", f"{people[0].display_name} (video)"),
    ]
    assert all(t.ended_at is not None for t in tracks)
    await ada.request({"type": "unpublish", "source": "playback"})
    await ada.socket.close()
