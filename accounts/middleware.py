"""The language and time zone pages are shown in: a logged-in user's saved language, and the time
zone the browser reports (static/js/timezone.js sets the `timezone` cookie)."""

import zoneinfo
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation

TIMEZONE_COOKIE_NAME = "timezone"


def _known_language(code: str) -> bool:
    return code in dict(settings.LANGUAGES)


class UserLanguageMiddleware:
    """A logged-in user's saved language wins over the language cookie, and replaces it.

    So the choice follows the account to a new browser: log in anywhere and the pages are in
    the language you last picked. Runs after AuthenticationMiddleware (it needs request.user)
    and after LocaleMiddleware (it overrides what that one activated).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        saved = user.language if user.is_authenticated else ""
        cookie = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
        apply = bool(saved) and saved != cookie and _known_language(saved)
        if apply:
            translation.activate(saved)
            request.LANGUAGE_CODE = saved
        response = self.get_response(request)
        # A response that sets the cookie itself (the language switcher) has the last word.
        if apply and settings.LANGUAGE_COOKIE_NAME not in response.cookies:
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                saved,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
            response.headers["Content-Language"] = saved
        return response


def timezone_from_name(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA time zone of that name, or None for anything else (the cookie is untrusted)."""
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


class TimezoneMiddleware:
    """Dates and times on the page in the browser's time zone; TIME_ZONE when it is unknown."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = timezone_from_name(request.COOKIES.get(TIMEZONE_COOKIE_NAME, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return self.get_response(request)
