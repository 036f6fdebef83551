"""The product in Korean and English: the language from Accept-Language, the switcher and the
account's saved language, the admin, the browser's time zone, and the missing-translation check
(accounts/middleware.py, accounts/views.py, the check_translations command)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.middleware import TimezoneMiddleware
from accounts.models import User
from rooms.models import Room
from tests.conftest import IN_CI

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
KOREAN = {"HTTP_ACCEPT_LANGUAGE": "ko-KR,ko;q=0.9,en;q=0.5"}


def _korean_page(client: Client, url: str) -> str:
    response = client.get(url, **KOREAN)
    assert response.status_code in (200, 404), (url, response.status_code)
    html = response.content.decode()
    assert '<html lang="ko">' in html, url
    return html


def test_pages_follow_the_browsers_language(client, make_user, make_room):
    assert "회의실" in _korean_page(client, "/")
    assert "계정 만들기" in _korean_page(client, reverse("signup"))
    assert "로그인" in _korean_page(client, reverse("login"))
    assert "페이지를 찾을 수 없습니다" in _korean_page(client, "/nowhere/")

    owner = make_user("minji", display_name="김민지")
    room = make_room(owner, "주간 회의")
    client.force_login(owner)
    lobby = _korean_page(client, reverse("rooms:lobby"))
    assert "내 회의실" in lobby and "공개 회의실" in lobby
    form = _korean_page(client, reverse("rooms:create"))
    assert "회의실 만들기" in form and "공개: 회의실 목록에 표시됩니다" in form
    prejoin = _korean_page(client, room.get_absolute_url())
    assert "지금 참가하기" in prejoin and "음소거" in prejoin and "화면 공유" in prejoin


def test_english_stays_the_default(client):
    html = client.get("/").content.decode()
    assert '<html lang="en">' in html
    assert "Video rooms in your browser" in html


def test_form_errors_and_messages_are_translated(client, make_user):
    owner = make_user("minji")
    client.force_login(owner)
    response = client.post(
        reverse("rooms:create"),
        {"name": "  ", "visibility": "public", "max_participants": 999, "screen_sharing": "owner"},
        **KOREAN,
    )
    html = response.content.decode()
    assert "필수 항목" in html  # Django's own catalog
    assert "이 서버에서는 회의실당 최대 50명까지 참가할 수 있습니다." in html
    valid = {"visibility": "public", "max_participants": 5, "screen_sharing": "owner"}
    response = client.post(
        reverse("rooms:create"),
        {"name": "스탠드업", **valid},
        follow=True,
        **KOREAN,
    )
    assert "“스탠드업” 회의실을 만들었습니다." in response.content.decode()


def test_the_switcher_sets_the_cookie_and_saves_the_choice_on_the_account(make_user):
    user = make_user("minji")
    browser = Client()
    browser.force_login(user)
    response = browser.post(reverse("set_language"), {"language": "ko", "next": "/rooms/"})
    assert response.status_code == 302 and response.url == "/rooms/"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    user.refresh_from_db()
    assert user.language == "ko"
    assert '<html lang="ko">' in browser.get("/rooms/").content.decode()

    # Another browser, English by its Accept-Language and with no cookie: logging in brings
    # the account's language, and the cookie that keeps it.
    other = Client()
    response = other.post(
        reverse("login"), {"username": "minji", "password": PASSWORD}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 302
    response = other.get("/rooms/", HTTP_ACCEPT_LANGUAGE="en")
    html = response.content.decode()
    assert '<html lang="ko">' in html and "내 회의실" in html
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert other.get("/", HTTP_ACCEPT_LANGUAGE="en").cookies == {}  # set once, then kept


def test_a_logged_out_switch_is_only_the_cookie(client):
    response = client.post(reverse("set_language"), {"language": "ko", "next": "/"})
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert '<html lang="ko">' in client.get("/").content.decode()
    client.post(reverse("set_language"), {"language": "xx", "next": "/"})  # unknown: ignored
    assert '<html lang="ko">' in client.get("/").content.decode()


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_superuser(username="boss", password=PASSWORD)


def test_admin_is_korean_for_staff(client, admin_user, make_room):
    make_room(admin_user, "운영 회의")
    client.force_login(admin_user)
    index = client.get(reverse("admin:index"), **KOREAN).content.decode()
    assert "사이트 관리" in index  # Django's own catalog
    assert "회의실" in index and "참가자" in index and "채팅 메시지" in index  # our models
    changelist = client.get(reverse("admin:rooms_room_changelist"), **KOREAN).content.decode()
    assert "현재 참가자" in changelist and "공개 범위" in changelist
    assert "선택한 회의실 닫기" in changelist


def _zone_seen(cookie: str | None) -> str:
    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES["timezone"] = cookie
    seen = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen["zone"] = timezone.get_current_timezone_name()
        return HttpResponse()

    TimezoneMiddleware(view)(request)
    return seen["zone"]


def test_dates_follow_the_browsers_time_zone():
    assert _zone_seen("Asia/Seoul") == "Asia/Seoul"
    assert _zone_seen(None) == settings.TIME_ZONE
    for bad in ("Not/AZone", "../../etc/passwd", "/etc/localtime", "x" * 200, ""):
        assert _zone_seen(bad) == settings.TIME_ZONE


def test_admin_dates_are_in_the_browsers_time_zone(client, admin_user, make_room):
    room = make_room(admin_user, "Late call")
    Room.objects.filter(pk=room.pk).update(created_at=datetime(2030, 1, 1, 23, 30, tzinfo=UTC))
    client.force_login(admin_user)
    client.cookies["timezone"] = "Asia/Seoul"
    html = client.get(reverse("admin:rooms_room_changelist"), **KOREAN).content.decode()
    assert "2030년 1월 2일" in html  # 08:30 the next day in Seoul


FIXTURE = Path(__file__).parent / "i18n_fixture"


def _gettext_or_skip() -> None:
    if shutil.which("xgettext") is None:
        if IN_CI:
            pytest.fail("GNU gettext is required under CI=true", pytrace=False)
        pytest.skip("GNU gettext (xgettext) is missing")


def test_the_check_fails_on_a_marked_string_missing_from_the_catalog():
    _gettext_or_skip()
    with pytest.raises(CommandError) as failure:
        call_command(
            "check_translations", source_dir=str(FIXTURE), locale_dir=str(FIXTURE / "locale")
        )
    assert "ko django: A string nobody translated" in str(failure.value)
    assert "Hello" not in str(failure.value)  # translated in the fixture's catalog
    # The committed catalog is untouched: the check works on a copy.
    assert "nobody translated" not in (FIXTURE / "locale/ko/LC_MESSAGES/django.po").read_text()


def test_the_products_catalogs_are_complete(capsys):
    _gettext_or_skip()
    call_command("check_translations")
    assert "translations complete" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
async def test_the_room_socket_speaks_the_pages_language(make_user, make_room):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from conference.asgi import application
    from tests.conftest import session_cookie

    owner = await sync_to_async(make_user)("minji")
    guest = await sync_to_async(make_user)("jiwoo")
    room = await sync_to_async(make_room)(owner, "비밀 회의", visibility=Room.Visibility.PRIVATE)
    cookie = await sync_to_async(session_cookie)(guest)
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", cookie.encode()),
        (b"accept-language", b"ko-KR,ko;q=0.9"),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/rooms/{room.slug}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    refused = await communicator.receive_json_from(timeout=3)
    assert refused["reason"] == "private"
    assert (
        refused["message"] == "비공개 회의실입니다. 참가하려면 소유자에게 초대 링크를 요청하세요."
    )
    await communicator.disconnect()
