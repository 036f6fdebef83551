"""Recording a meeting through the product, with aiortc peers in place of browsers (the room
WebSocket, the room media service, the embedded media server and the composing job): a
moderator records, every published stream gets its recorder (a screen shared later too, nothing
a moderator blocked), whoever joins is told, the files are composed into one MP4 when the
recording stops or the room empties, and nothing is left on the media server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from rooms.models import Recording, RecordingTrack
from signaling import media
from signaling.models import MediaEndpoint, MediaRecorder
from tests.media.callers import Caller

from .conftest import media_objects

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room(make_room, people):
    return make_room(people[0], "Recorded meeting")


async def _pump_all(callers: list[Caller], seconds: float) -> None:
    await asyncio.gather(*(c.pump(seconds) for c in callers))


def _recorders(kms) -> dict[str, object]:
    return {
        object_id: obj
        for object_id, obj in kms.registry.objects.items()
        if obj.TYPE == "RecorderEndpoint"
    }


async def _recording() -> Recording:
    return await sync_to_async(Recording.objects.get)()


async def _composed() -> Recording:
    await media.composing_done()
    return await _recording()


async def test_a_recorded_meeting_becomes_one_file(join, kms, room, people) -> None:
    ada, grace, alan = [await join(user, room) for user in people[:3]]
    for caller in (ada, grace, alan):
        await caller.publish()
    everyone = [ada, grace, alan]
    await _pump_all(everyone, 0.5)

    # Grace may not record: she does not moderate.
    refused = await grace.request({"type": "record", "on": True})
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    assert _recorders(kms) == {}

    reply = await ada.request({"type": "record", "on": True})
    assert reply == {"type": "recording_set", "on": True, "id": reply["id"]}
    started = time.monotonic()
    for caller in everyone:
        changed = await caller.wait_event("recording_changed")
        assert changed["recording"]["started_by"] == people[0].shown_name
    # A recorder per camera, each fed by that camera's publishing endpoint.
    recorders = _recorders(kms)
    assert len(recorders) == 3
    publishing = set(
        await sync_to_async(list)(
            MediaEndpoint.objects.filter(publisher__isnull=True).values_list(
                "endpoint_id", flat=True
            )
        )
    )
    assert {r.sources["VIDEO"].id for r in recorders.values()} == publishing
    assert {r.sources["AUDIO"].id for r in recorders.values()} == publishing

    # Someone joining now is told at once; a screen shared now is recorded from now.
    edsger = await join(people[3], room)
    assert edsger.snapshot["recording"]["id"] == (await _recording()).pk
    assert (await grace.share())["type"] == "published"
    await _pump_all([*everyone, edsger], 0.5)
    assert len(_recorders(kms)) == 4
    await _pump_all([*everyone, edsger], 2.5)

    # Alan leaves: his file is finished and his recorder released.
    await alan.socket.close()
    async with asyncio.timeout(5):
        while len(_recorders(kms)) != 3:
            await asyncio.sleep(0.05)
    await _pump_all([ada, grace, edsger], 1.0)

    reply = await ada.request({"type": "record", "on": False})
    assert reply["type"] == "recording_set" and reply["on"] is False
    recorded_for = time.monotonic() - started
    assert (await grace.wait_event("recording_changed", recording=None))["recording"] is None
    assert _recorders(kms) == {}
    assert not await sync_to_async(MediaRecorder.objects.exists)()

    recording = await _composed()
    assert recording.state == Recording.State.READY, recording.error
    tracks = await sync_to_async(list)(RecordingTrack.objects.order_by("pk"))
    assert sorted(t.source for t in tracks) == ["camera", "camera", "camera", "screen"]
    assert all(t.ended_at is not None for t in tracks)
    path = Path(settings.RECORDINGS_DIR) / recording.file
    with av.open(str(path)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        duration = container.duration / 1_000_000
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == {"video": "h264", "audio": "aac"}
    assert abs(duration - recorded_for) < 0.15 * recorded_for, (duration, recorded_for)
    assert frames > 10 * duration  # the composed grid at its steady rate
    assert recording.size == path.stat().st_size  # the per-stream files were let go
    assert recording.duration == pytest.approx(duration, abs=0.5)
    for caller in (ada, grace, edsger):
        await caller.socket.close()


async def test_what_a_moderator_blocked_is_not_recorded(join, kms, room, people) -> None:
    ada, grace = [await join(user, room) for user in people[:2]]
    for caller in (ada, grace):
        await caller.publish()
    await ada.request(
        {"type": "moderate_media", "participant_id": grace.id, "kind": "audio", "blocked": True}
    )
    reply = await ada.request({"type": "record", "on": True})
    assert reply["type"] == "recording_set"
    graces = await sync_to_async(MediaRecorder.objects.get)(publisher_id=grace.id)
    recorder = kms.registry.objects[graces.recorder_id]
    assert set(recorder.sources) == {"VIDEO"}  # her sound never reaches the file
    # Allowed again: the recording hears her from then on.
    await ada.request(
        {"type": "moderate_media", "participant_id": grace.id, "kind": "audio", "blocked": False}
    )
    assert set(recorder.sources) == {"AUDIO", "VIDEO"}
    await ada.request(
        {"type": "moderate_media", "participant_id": grace.id, "kind": "audio", "blocked": True}
    )
    assert set(recorder.sources) == {"VIDEO"}
    for caller in (ada, grace):
        await caller.socket.close()


async def test_the_recording_stops_when_everyone_has_left(join, kms, room, people) -> None:
    ada, grace = [await join(user, room) for user in people[:2]]
    for caller in (ada, grace):
        await caller.publish()
    assert (await ada.request({"type": "record", "on": True}))["type"] == "recording_set"
    await _pump_all([ada, grace], 2.0)
    for caller in (ada, grace):
        await caller.socket.close()
    async with asyncio.timeout(10):
        while media_objects(kms):
            await asyncio.sleep(0.05)
    recording = await _composed()
    assert recording.state == Recording.State.READY, recording.error
    assert recording.ended_at is not None and recording.stopped_by is None
    assert (Path(settings.RECORDINGS_DIR) / recording.file).is_file()


async def test_starting_twice_and_stopping_what_does_not_run_are_refused(
    join, kms, room, people
) -> None:
    ada = await join(people[0], room)
    await ada.publish()
    refused = await ada.request({"type": "record", "on": False})
    assert refused["type"] == "error" and refused["code"] == "not_found"
    assert (await ada.request({"type": "record", "on": True}))["type"] == "recording_set"
    refused = await ada.request({"type": "record", "on": True})
    assert refused["type"] == "error" and refused["code"] == "conflict"
    assert len(_recorders(kms)) == 1
    await ada.socket.close()
    await _composed()
