"""The language as people meet it in real headless Chromium against daphne: a Korean browser
gets Korean pages, the header's switcher changes the language for good, and a logged-in
person's choice comes back when they log in again in another browser."""

from __future__ import annotations

import re

import pytest

from tests.browser import PASSWORD, WAIT_MS

pytestmark = pytest.mark.browser


def _switch_to(page, language: str) -> None:
    page.select_option("#language-select", language)
    page.click(".site-nav__language button[type=submit]")
    page.wait_for_selector(f"html[lang={language}]", timeout=WAIT_MS)


def test_a_korean_browser_gets_korean_and_the_switcher_changes_it(chromium, product):
    from playwright.sync_api import expect

    context = chromium.new_context(base_url=product.url, locale="ko-KR")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.locator(".site-nav")).to_contain_text("회원가입")
        # The browser's time zone reaches the server in a cookie.
        assert any(cookie["name"] == "timezone" for cookie in context.cookies())

        _switch_to(page, "en")
        expect(page.locator(".site-nav")).to_contain_text("Sign up")
        page.goto("/accounts/login/")
        expect(page.locator("h1")).to_have_text("Log in")
        expect(page.locator("html")).to_have_attribute("lang", "en")
    finally:
        context.close()
    assert errors == []


def test_a_logged_in_choice_comes_back_at_the_next_log_in(chromium, product):
    from playwright.sync_api import expect

    first = chromium.new_context(base_url=product.url, locale="en-US")
    page = first.new_page()
    page.goto("/accounts/signup/")
    page.fill("input[name=username]", "jiwoo")
    page.fill("input[name=display_name]", "박지우 (아주 긴 이름을 가진 참가자입니다)")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("#main button[type=submit]")
    page.wait_for_url(re.compile(r"/rooms/$"))
    _switch_to(page, "ko")
    expect(page.locator("h1")).to_have_text("회의실")
    page.click(".site-nav__logout button")
    page.wait_for_url(re.compile(r"/$"))
    first.close()

    # A fresh browser in English, without any cookie of the first one.
    second = chromium.new_context(base_url=product.url, locale="en-US")
    page = second.new_page()
    try:
        page.goto("/accounts/login/")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        page.fill("input[name=username]", "jiwoo")
        page.fill("input[name=password]", PASSWORD)
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/$"))
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.locator("h1")).to_have_text("회의실")
        page.goto("/rooms/new/")
        expect(page.locator("h1")).to_have_text("새 회의실")
        # A long Korean room name wraps inside its card instead of overflowing it.
        name = "아주아주긴회의실이름" * 8
        page.fill("input[name=name]", name[:80])
        page.click("#main button[type=submit]")
        page.wait_for_url(re.compile(r"/rooms/[-a-z0-9]+/$"))
        page.goto("/rooms/")
        card = page.locator("#my-rooms .room-card").first
        overflow = card.evaluate("card => card.scrollWidth - card.clientWidth")
        assert overflow <= 1
    finally:
        second.close()
