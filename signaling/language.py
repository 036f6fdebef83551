"""The language a room socket speaks: what people read in refusals, closed rooms and media
errors follows the pages' language, as Django's LocaleMiddleware chooses it for HTTP."""

from typing import Any

from django.conf import settings
from django.utils import translation
from django.utils.translation.trans_real import get_language_from_request


class _ScopeRequest:
    """The two things get_language_from_request reads from a request, taken from a scope."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.COOKIES = scope.get("cookies", {})
        self.META = {
            "HTTP_ACCEPT_LANGUAGE": dict(scope.get("headers", ()))
            .get(b"accept-language", b"")
            .decode("latin-1")
        }


def connection_language(scope: dict[str, Any]) -> str:
    """The language cookie (set by the switcher, or from the account at log-in), else the
    browser's Accept-Language, else LANGUAGE_CODE."""
    return get_language_from_request(_ScopeRequest(scope)) or settings.LANGUAGE_CODE


class ConnectionLanguage:
    """ASGI middleware: the whole connection runs with its language active. Inside
    AuthMiddlewareStack, which parses the cookies into the scope."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        with translation.override(connection_language(scope)):
            return await self.inner(scope, receive, send)
