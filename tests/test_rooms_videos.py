"""Videos a room's owner uploads to play into its meetings: only the owner and staff upload,
see and delete them; an upload is kept only if PyAV reads it as a WebM or MP4 video; the size
limits hold; deleting takes the file; the room page offers them (and ready recordings) to play,
to the owner only."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from rooms.models import RoomModerator, RoomVideo
from tests.mediaserver.test_player import make_media

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recordings_dir")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("clips")
    webm = make_media(directory / "a.webm", seconds=1.0)
    mp4 = make_media(directory / "a.mp4", video="libx264", audio="aac", seconds=1.0)
    sound = make_media(directory / "sound.webm", video=None, seconds=1.0)
    return {"webm": webm.read_bytes(), "mp4": mp4.read_bytes(), "sound": sound.read_bytes()}


def _upload(client, room, name: str, content: bytes, title: str = "") -> object:
    url = reverse("rooms:video_upload", args=[room.slug])
    return client.post(url, {"title": title, "file": SimpleUploadedFile(name, content)})


def test_the_owner_uploads_webm_and_mp4_and_the_room_page_offers_them(
    client, room, ada, clips, recordings_dir
) -> None:
    client.force_login(ada)
    assert _upload(client, room, "talk.webm", clips["webm"], "Opening talk").status_code == 302
    assert _upload(client, room, "demo.mp4", clips["mp4"]).status_code == 302
    videos = {v.title: v for v in RoomVideo.objects.all()}
    assert set(videos) == {"Opening talk", "demo"}  # no title: the file's name
    assert videos["Opening talk"].file.endswith(".webm") and videos["demo"].file.endswith(".mp4")
    for video in videos.values():
        path = recordings_dir / video.file
        assert path.is_file() and video.size == path.stat().st_size
        assert video.duration == pytest.approx(1.0, abs=0.2)
        assert path.parent == recordings_dir / str(room.pk) / "videos"
    assert not list((recordings_dir / str(room.pk) / "videos").glob(".upload-*"))

    listed = client.get(reverse("rooms:recordings", args=[room.slug])).content.decode()
    assert "Opening talk" in listed and "demo" in listed
    page = client.get(room.get_absolute_url()).content.decode()
    assert 'id="play-select"' in page
    assert f'value="video:{videos["demo"].pk}"' in page


def test_what_is_not_a_webm_or_mp4_video_is_refused(client, room, ada, clips, recordings_dir):
    client.force_login(ada)
    for name, content in (
        ("notes.webm", b"not a video at all"),
        ("sound.webm", clips["sound"]),  # no picture
        ("empty.mp4", b""),
    ):
        response = _upload(client, room, name, content)
        assert response.status_code == 302
    assert not RoomVideo.objects.exists()
    assert not [p for p in recordings_dir.rglob("*") if p.is_file()]


def test_the_size_limits_hold(client, settings, room, ada, clips) -> None:
    client.force_login(ada)
    settings.ROOM_VIDEO_MAX_BYTES = len(clips["webm"]) - 1
    _upload(client, room, "a.webm", clips["webm"])
    assert not RoomVideo.objects.exists()
    settings.ROOM_VIDEO_MAX_BYTES = 10**9
    settings.RECORDINGS_MAX_BYTES_PER_ROOM = len(clips["webm"]) * 3 // 2
    _upload(client, room, "a.webm", clips["webm"])
    _upload(client, room, "b.webm", clips["webm"])  # the room's space is full
    assert RoomVideo.objects.count() == 1


def test_only_the_owner_and_staff_upload_see_and_delete(
    client, room, ada, grace, make_user, clips, recordings_dir, django_capture_on_commit_callbacks
) -> None:
    RoomModerator.objects.create(room=room, user=grace)  # runs meetings; the files are Ada's
    client.force_login(grace)
    assert _upload(client, room, "a.webm", clips["webm"]).status_code == 404
    assert not RoomVideo.objects.exists()
    client.force_login(ada)
    _upload(client, room, "a.webm", clips["webm"])
    video = RoomVideo.objects.get()
    path = recordings_dir / video.file
    delete_url = reverse("rooms:video_delete", args=[room.slug, video.pk])

    client.force_login(grace)
    assert client.post(delete_url).status_code == 404
    page = client.get(room.get_absolute_url()).content.decode()
    assert 'id="play-tools"' not in page  # a moderator does not play the owner's files
    staff = make_user("root")
    type(staff).objects.filter(pk=staff.pk).update(is_staff=True)
    client.force_login(staff)
    assert 'id="play-select"' in client.get(room.get_absolute_url()).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(delete_url).status_code == 302
    assert not RoomVideo.objects.exists() and not path.exists()


def test_the_admin_lists_videos_and_deletes_them_with_their_files(
    admin_client, room, ada, clips, recordings_dir, django_capture_on_commit_callbacks
) -> None:
    from rooms import services

    video = services.video_add(
        room=room,
        by_user=ada,
        upload=SimpleUploadedFile("a.webm", clips["webm"]),
        title="Opening talk",
    )
    path = recordings_dir / video.file
    listing = admin_client.get(reverse("admin:rooms_roomvideo_changelist")).content.decode()
    assert "Opening talk" in listing and room.name in listing
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:rooms_roomvideo_delete", args=[video.pk]), {"post": "yes"})
    assert not RoomVideo.objects.exists() and not path.exists()
