"""People get the product's own error pages (404, 403, CSRF failure, 400, 500), each saying what
happened and offering a way back, never Django's technical pages; DEBUG is off here, as in
production and under `make run`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client, override_settings
from django.urls import reverse

ERROR_TEMPLATES = (
    "error_page.html",
    "400.html",
    "403.html",
    "403_csrf.html",
    "404.html",
    "500.html",
)
TEMPLATES_DIR = Path(settings.BASE_DIR) / "templates"
# What Django's technical (DEBUG) pages say, and its plain fallbacks when a template is missing.
TECHNICAL = (
    "Using the URLconf",
    "DEBUG = True",
    "Traceback",
    "CSRF verification failed",
    "<h1>Not Found</h1>",
    "<h1>Server Error (500)</h1>",
    "<h1>Bad Request (400)</h1>",
    "<h1>403 Forbidden</h1>",
)


def _text(response) -> str:
    return response.content.decode()


def _assert_product_page(response, status: int, error: str) -> str:
    page = _text(response)
    assert response.status_code == status
    assert f'data-error="{error}"' in page
    assert 'class="narrow card error-page"' in page
    assert "/static/css/app" in page  # the product's stylesheet, so the product's look
    for words in TECHNICAL:
        assert words not in page, words
    return page


def _link(page: str, href: str, label: str) -> bool:
    return (
        re.search(rf'<a [^>]*href="{re.escape(href)}"[^>]*>{re.escape(label)}</a>', page)
        is not None
    )


@pytest.fixture
def member(make_user):
    return make_user("member")


def test_debug_is_off_here():
    assert settings.DEBUG is False


@pytest.mark.django_db
def test_a_missing_room_is_the_products_404_with_a_way_back_to_the_rooms(client, member):
    client.force_login(member)
    page = _assert_product_page(client.get("/rooms/no-such-room-xyz/"), 404, "404")
    assert "Page not found" in page
    assert "The room may have been deleted, or the link mistyped." in page
    assert _link(page, reverse("rooms:lobby"), "Back to rooms")
    assert "Log out" in page  # the site's own header, for the person who is logged in


@pytest.mark.django_db
def test_an_unknown_address_is_the_products_404(client, member):
    page = _assert_product_page(client.get("/no-such-page/"), 404, "404")
    assert _link(page, reverse("home"), "Go to the start page")
    client.force_login(member)
    page = _assert_product_page(client.get("/no-such-page/"), 404, "404")
    assert _link(page, reverse("rooms:lobby"), "Back to rooms")


@pytest.mark.django_db
def test_a_forbidden_action_is_the_products_403(client, member, make_user, make_room):
    room = make_room(make_user("owner"))
    client.force_login(member)
    page = _assert_product_page(client.get(reverse("rooms:edit", args=[room.slug])), 403, "403")
    assert "You can\u2019t do that" in page
    assert _link(page, reverse("rooms:lobby"), "Back to rooms")


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_gets_the_products_403(member):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("login"), {"username": "member", "password": "x"})
    page = _assert_product_page(response, 403, "403-csrf")
    assert "That form could not be sent" in page
    assert _link(page, reverse("home"), "Go to the start page")

    client.force_login(member)
    response = client.post(reverse("rooms:create"), {"name": "No token"})
    page = _assert_product_page(response, 403, "403-csrf")
    assert _link(page, reverse("rooms:lobby"), "Back to rooms")


@pytest.mark.django_db
def test_a_bad_request_is_the_products_400(client):
    # A Host header outside ALLOWED_HOSTS: Django answers 400 through the 400 handler.
    page = _assert_product_page(client.get("/", HTTP_HOST="not-allowed.example"), 400, "400")
    assert "The server could not understand that request" in page
    assert _link(page, reverse("home"), "Go to the start page")


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.urls_errors")
def test_a_failing_view_is_the_products_500(member):
    client = Client(raise_request_exception=False)
    client.force_login(member)
    page = _assert_product_page(client.get("/test-only/fail/"), 500, "500")
    assert "Something went wrong" in page
    assert "a view failed on purpose" not in page
    assert _link(page, reverse("home"), "Go to the start page")


def test_the_500_page_needs_no_request_and_no_database():
    """Django renders 500.html with an empty context; this test has no database access at all
    (pytest-django fails any query), so the page must ask nothing of the user or the database."""
    page = render_to_string("500.html")
    assert 'data-error="500"' in page
    assert "/static/css/app" in page
    assert 'href="/"' in page


@pytest.mark.parametrize("name", ERROR_TEMPLATES)
def test_every_visible_string_of_the_error_pages_is_translatable(name):
    """Everything a person reads is inside {% translate %} or {% blocktranslate %}, except the
    product's name, the status code and punctuation."""
    source = (TEMPLATES_DIR / name).read_text()
    for pattern in (
        r"{% comment %}.*?{% endcomment %}",
        r"{% blocktranslate.*?{% endblocktranslate %}",
        r"<(style|script)\b.*?</\1>",
        r"{%.*?%}",
        r"{{.*?}}",
        r"<[^>]*>",
    ):
        source = re.sub(pattern, " ", source, flags=re.DOTALL)
    left = set(source.split()) - {"Conference", "·", "400", "403", "404", "500"}
    assert not left, f"{name} shows text that is not marked for translation: {left}"
