"""The browser client in Korean, in real Chromium with a Korean locale (Accept-Language ko-KR):
the words the page's scripts write come from Django's JavaScript catalog (/jsi18n/): the
explanation of a refused camera, the status line, the control bar's labels and titles, the
people list and what screen readers hear."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from tests.browser import RECORD_PEER_CONNECTIONS, WAIT_MS, Caller, people_of

pytestmark = pytest.mark.browser

# The person refuses the camera and microphone (as tests/test_browser_call.py does: the
# browser's fake UI would allow them).
BLOCK_CAMERA = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
"""


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    """The .mo files are built, not kept in git: build them before the product starts."""
    call_command("compile_translations", verbosity=0)


class KoreanCaller(Caller):
    """A caller whose browser speaks Korean (its locale, hence its Accept-Language)."""

    def __init__(self, chromium, product, username: str, display_name: str) -> None:
        self.context = chromium.new_context(base_url=product.url, locale="ko-KR")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.name = display_name
        self.sign_up(username, display_name)
        self.context.add_init_script(RECORD_PEER_CONNECTIONS)


@pytest.fixture
def korean(chromium, product):
    with people_of(KoreanCaller, chromium, product) as make:
        yield make


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text(timeout=WAIT_MS).strip()


def test_a_refused_camera_is_explained_in_korean(korean):
    ada = korean("koblockada", "에이다")
    ada.context.add_init_script(BLOCK_CAMERA)
    ada.new_room("Camera-less room")
    page = ada.page
    assert page.get_attribute("html", "lang") == "ko"
    blocked = "카메라와 마이크가 차단되어 있습니다"
    page.wait_for_selector(f"#room-notice:has-text('{blocked}')", timeout=WAIT_MS)
    notice = text_of(page, "#room-notice")
    assert "새로 고쳐 주세요" in notice and "Camera" not in notice, notice
    # The pre-join screen's words from the scripts: the status line and the test's button.
    assert text_of(page, "#room-status") == "카메라와 마이크를 확인한 뒤 참가하세요."
    assert text_of(page, "#connection-test-button") == "카메라와 연결 테스트"
    # Joining without a camera: still in the call, told so in Korean.
    ada.join()
    ada.wait_connected()
    assert text_of(page, "#room-status") == "연결됨"


def test_a_two_person_call_in_korean(korean):
    ada = korean("koada", "에이다")
    grace = korean("kograce", "그레이스")
    room_url = ada.create_room("Korean room")
    page = ada.page
    grace.open(room_url)
    grace.wait_connected()
    # Screen readers hear Grace arrive (the line goes after a while).
    page.wait_for_selector("#announcer :text('그레이스 님이 참가했습니다')", state="attached")
    ada.wait_video_from(grace)
    grace.wait_video_from(ada)
    ada.wait_sees("그레이스")

    assert text_of(page, "#room-status") == "연결됨"
    # The people list counts and marks in Korean.
    assert page.get_attribute("#participant-count", "data-count") == "2"
    assert page.locator("#participant-count").text_content() == "참가자 2명"
    you = page.locator("#participants li.is-you .participant__you").text_content()
    assert you == "(나)"
    assert page.locator("#participants .badge--owner").first.text_content() == "소유자"

    # The tiles: your own is "나", Grace's pin button is labelled for her.
    grace_id = grace.participant_id
    assert page.locator(".tile--local .tile__name").text_content() == "나"
    pin = page.locator(f".tile[data-participant-id='{grace_id}'] .tile__pin")
    assert pin.text_content() == "고정"
    assert pin.get_attribute("aria-label") == "그레이스 님 고정"

    # The control bar's texts set by the scripts: the hand's title, the owner's lock button.
    hand = page.locator("#hand-button")
    assert hand.get_attribute("title") == "손 들기 (H)"
    page.keyboard.press("h")
    page.wait_for_selector("#hand-button[title='손 내리기 (H)']", state="attached", timeout=WAIT_MS)
    mark = page.locator("#participants li.is-you .participant__hand")
    mark.wait_for(state="attached", timeout=WAIT_MS)
    assert mark.get_attribute("title") == "손을 들었습니다(1번째)"
    assert page.locator("#lock-button").text_content().strip() == "회의실 잠금"
    # The document's title, as the scripts write it.
    assert page.title() == "Korean room · Conference"

    # Grace leaves: Ada hears it in Korean, and Grace's page says so in Korean.
    grace.page.click("#leave-button")
    page.wait_for_selector("#announcer :text('그레이스 님이 나갔습니다')", state="attached")
