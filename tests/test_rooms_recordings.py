"""Recordings as the owner and staff see them: who may start one (moderators), who may list,
download and delete them (the owner and staff, nobody else, who cannot even tell they exist),
the download (streamed by Django, or handed to nginx), deletion with the files, the per-room
space limit; and the admin's list."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from rooms import services
from rooms.models import Recording, RecordingTrack, RoomModerator
from tests.conftest import record_participant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recordings_dir")]


def _ready(room, by, directory: Path, content: bytes = b"\x00\x00\x00\x18ftypmp42") -> Recording:
    """A recording as the composing job leaves it: its file on disk."""
    recording = services.recording_start(room_id=room.pk, by_user=by)
    services.recording_stop(room_id=room.pk, by_user=by)
    path = directory / recording.directory / "meeting.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    services.recording_composed(
        recording_id=recording.pk,
        file=f"{recording.directory}/meeting.mp4",
        size=len(content),
        duration=12.0,
    )
    recording.refresh_from_db()
    return recording


def test_moderators_start_and_stop_others_are_refused(room, ada, grace, alan) -> None:
    with pytest.raises(services.ActionRefused) as refused:
        services.recording_start(room_id=room.pk, by_user=grace)
    assert refused.value.code == "forbidden"
    RoomModerator.objects.create(room=room, user=grace)
    recording = services.recording_start(room_id=room.pk, by_user=grace)
    assert recording.directory == f"{room.pk}/{recording.pk}"
    with pytest.raises(services.ActionRefused) as twice:
        services.recording_start(room_id=room.pk, by_user=ada)
    assert twice.value.code == "conflict"
    with pytest.raises(services.ActionRefused):
        services.recording_stop(room_id=room.pk, by_user=alan)
    stopped = services.recording_stop(room_id=room.pk, by_user=ada)
    assert stopped is not None and stopped.state == Recording.State.COMPOSING
    assert stopped.stopped_by == ada and stopped.ended_at is not None
    assert services.recording_stop(room_id=room.pk) is None  # only one caller stops it


def test_only_the_owner_and_staff_see_list_and_download(
    client, room, ada, grace, make_user, recordings_dir
) -> None:
    recording = _ready(room, ada, recordings_dir)
    list_url = reverse("rooms:recordings", args=[room.slug])
    download_url = reverse("rooms:recording_download", args=[room.slug, recording.pk])
    # A moderator runs the meeting, but the files are the owner's.
    RoomModerator.objects.create(room=room, user=grace)
    client.force_login(grace)
    assert client.get(list_url).status_code == 404
    assert client.get(download_url).status_code == 404
    client.logout()
    assert client.get(download_url).status_code == 302  # to the log-in page

    client.force_login(ada)
    page = client.get(list_url)
    assert page.status_code == 200
    assert download_url in page.content.decode()
    response = client.get(download_url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (recordings_dir / recording.file).read_bytes()
    assert response["Content-Disposition"].startswith("attachment;")

    staff = make_user("root")
    type(staff).objects.filter(pk=staff.pk).update(is_staff=True)
    client.force_login(staff)
    assert client.get(download_url).status_code == 200


def test_another_rooms_recording_is_not_reachable_through_this_room(
    client, make_room, room, ada, grace, recordings_dir
) -> None:
    other = make_room(grace, "Grace's room")
    theirs = _ready(other, grace, recordings_dir)
    client.force_login(ada)  # owns `room`, not `other`
    url = reverse("rooms:recording_download", args=[room.slug, theirs.pk])
    assert client.get(url).status_code == 404


def test_behind_nginx_the_file_is_handed_to_it(client, settings, room, ada, recordings_dir) -> None:
    settings.RECORDINGS_X_ACCEL_PREFIX = "/protected-recordings/"
    recording = _ready(room, ada, recordings_dir)
    client.force_login(ada)
    response = client.get(reverse("rooms:recording_download", args=[room.slug, recording.pk]))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-recordings/{recording.file}"
    assert response.content == b""


def test_a_recording_being_prepared_has_nothing_to_download(client, room, ada) -> None:
    recording = services.recording_start(room_id=room.pk, by_user=ada)
    services.recording_stop(room_id=room.pk, by_user=ada)
    client.force_login(ada)
    url = reverse("rooms:recording_download", args=[room.slug, recording.pk])
    assert client.get(url).status_code == 404
    page = client.get(reverse("rooms:recordings", args=[room.slug])).content.decode()
    assert "Being prepared" in page and 'http-equiv="refresh"' in page


def test_deleting_takes_the_files_too(
    client, room, ada, grace, recordings_dir, django_capture_on_commit_callbacks
) -> None:
    recording = _ready(room, ada, recordings_dir)
    directory = recordings_dir / recording.directory
    delete_url = reverse("rooms:recording_delete", args=[room.slug, recording.pk])
    client.force_login(grace)
    assert client.post(delete_url).status_code == 404
    assert directory.is_dir()
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(delete_url)
    assert response.status_code == 302
    assert not Recording.objects.exists() and not directory.exists()


def test_a_running_recording_cannot_be_deleted(room, ada) -> None:
    recording = services.recording_start(room_id=room.pk, by_user=ada)
    with pytest.raises(services.ActionRefused) as refused:
        services.recording_delete(recording=recording, by_user=ada)
    assert refused.value.code == "conflict"


def test_deleting_the_room_deletes_its_recordings_files(
    room, ada, recordings_dir, django_capture_on_commit_callbacks
) -> None:
    recording = _ready(room, ada, recordings_dir)
    directory = recordings_dir / recording.directory
    with django_capture_on_commit_callbacks(execute=True):
        services.room_delete(room=room)
    assert not directory.exists()


def test_the_rooms_space_limit_refuses_a_new_recording(settings, room, ada, recordings_dir) -> None:
    settings.RECORDINGS_MAX_BYTES_PER_ROOM = 100
    _ready(room, ada, recordings_dir, content=b"x" * 100)
    with pytest.raises(services.ActionRefused) as refused:
        services.recording_start(room_id=room.pk, by_user=ada)
    assert refused.value.code == "quota"


def test_tracks_are_named_after_who_and_what(room, ada) -> None:
    recording = services.recording_start(room_id=room.pk, by_user=ada)
    participant = record_participant(room, ada)
    camera = services.recording_track_add(
        recording_id=recording.pk, participant=participant, source="camera"
    )
    screen = services.recording_track_add(
        recording_id=recording.pk, participant=participant, source="screen"
    )
    assert camera is not None and screen is not None
    assert camera.file == f"{recording.directory}/{camera.pk}-{participant.pk}-camera.webm"
    assert screen.label == f"{participant.display_name} (screen)"
    services.recording_stop(room_id=room.pk, by_user=ada)
    late = services.recording_track_add(
        recording_id=recording.pk, participant=participant, source="camera"
    )
    assert late is None  # stopped meanwhile
    assert RecordingTrack.objects.count() == 2


def test_the_admin_lists_recordings_with_a_download_link(
    admin_client, room, ada, recordings_dir
) -> None:
    recording = _ready(room, ada, recordings_dir)
    page = admin_client.get(reverse("admin:rooms_recording_changelist")).content.decode()
    assert reverse("rooms:recording_download", args=[room.slug, recording.pk]) in page
    assert (
        admin_client.get(reverse("admin:rooms_recording_change", args=[recording.pk])).status_code
        == 200
    )
