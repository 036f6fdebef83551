"""Origin validation for WebSocket handshakes, as strict as Django's CSRF check is for forms.

A browser sends its cookies with a WebSocket handshake to any site, whichever page opened the
socket; only the Origin header tells the server who did. Channels' AllowedHostsOriginValidator
compares the Origin's host alone with ALLOWED_HOSTS, so a page on another port or scheme of the
same host could open sockets with a visitor's session. `SameOriginValidator` accepts a handshake
only when its Origin is the site's own origin (scheme, host and port), computed the way
CsrfViewMiddleware computes it for forms, or is trusted by CSRF_TRUSTED_ORIGINS.
"""

from __future__ import annotations

import io
import logging
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import is_same_domain

logger = logging.getLogger(__name__)

Scope = dict[str, Any]

_DEFAULT_PORTS = {"http": "80", "https": "443"}


class _Handshake(ASGIRequest):
    """The handshake as Django reads an HTTP request: META is built from the headers by the very
    code that serves the forms, so get_host() (ALLOWED_HOSTS, USE_X_FORWARDED_HOST, the DEBUG
    localhost fallback) and is_secure() (SECURE_PROXY_SSL_HEADER) judge it the same way."""

    def __init__(self, scope: Scope) -> None:
        # ASGIRequest wants an HTTP method; a handshake is a GET.
        super().__init__({**scope, "method": "GET"}, io.BytesIO())

    def _get_scheme(self) -> str:
        # ASGIRequest would return the scope's "ws"/"wss", which is_secure() takes for http.
        return "https" if self.scope.get("scheme") == "wss" else "http"


def _without_default_port(scheme: str, netloc: str) -> str:
    """`host:443` under https (`host:80` under http) is the same origin as `host`: browsers
    leave the default port out of Origin, while a client may put it into Host."""
    default = _DEFAULT_PORTS.get(scheme.lower())
    return netloc.removesuffix(f":{default}") if default else netloc


def _is_same_origin(origin: str, request: _Handshake, host: str) -> bool:
    # CsrfViewMiddleware compares `origin == f"{scheme}://{get_host()}"`; likewise here, except
    # that a default port counts as none and host names are compared case-insensitively.
    scheme = "https" if request.is_secure() else "http"
    good_origin = f"{scheme}://{_without_default_port(scheme, host)}"
    origin_scheme, separator, netloc = origin.partition("://")
    if not separator:
        return False
    candidate = f"{origin_scheme}://{_without_default_port(origin_scheme, netloc)}"
    return candidate.lower() == good_origin.lower()


def _is_trusted(origin: str) -> bool:
    """CSRF_TRUSTED_ORIGINS with Django's semantics: exact origins, and `scheme://*.domain` for
    the subdomains of a domain under that scheme."""
    # Built per call: the middleware caches the parsed setting, which tests change.
    csrf = CsrfViewMiddleware(lambda request: None)
    if origin in csrf.allowed_origins_exact:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, host)
        for host in csrf.allowed_origin_subdomains.get(parsed.scheme, ())
    )


def origin_allowed(scope: Scope) -> bool:
    """Whether a WebSocket handshake may go on: its Host is one of ALLOWED_HOSTS and its Origin is
    the site's own origin or a trusted one. Refusals are logged at INFO with the reason."""
    request = _Handshake(scope)
    origin = request.META.get("HTTP_ORIGIN")
    path = scope.get("path", "")
    try:
        host = request.get_host()
    except DisallowedHost as error:
        # %r throughout: these headers are the client's, and must not forge log lines (Django's
        # message quotes the host the same way).
        logger.info("WebSocket refused: %s (origin %r, path %r)", error, origin, path)
        return False
    if origin is None:
        logger.info("WebSocket refused: no Origin header (host %r, path %r)", host, path)
        return False
    if _is_same_origin(origin, request, host) or _is_trusted(origin):
        return True
    logger.info(
        "WebSocket refused: origin %r is neither this site's nor in CSRF_TRUSTED_ORIGINS "
        "(host %r, %s, path %r)",
        origin,
        host,
        "secure" if request.is_secure() else "not secure",
        path,
    )
    return False


class SameOriginValidator:
    """ASGI middleware for the "websocket" route: passes allowed handshakes to `application`
    and denies the others before accept (the client sees HTTP 403), as channels'
    OriginValidator does."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards WebSocket connections")
        if origin_allowed(scope):
            await self.application(scope, receive, send)
            return
        message = await receive()
        # The client may have gone already (websocket.disconnect): then there is nobody to deny.
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close"})
