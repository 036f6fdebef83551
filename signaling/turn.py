"""ICE servers for browsers and the media server: STUN URLs, and TURN with per-session credentials.

The credentials follow the TURN REST API scheme that coturn implements with `use-auth-secret`:
the username is `<expiry as unix time>:<participant id>` and the password is
base64(HMAC-SHA1(secret, username)). coturn checks both with the same shared secret, so nothing
is stored; the secret never leaves the server; each participant gets its own credentials, which
expire after TURN_CREDENTIAL_TTL seconds (browsers get fresh ones before that).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings


@dataclass(frozen=True)
class TurnCredentials:
    username: str
    password: str
    expires_at: int  # unix time


def credentials_for(
    participant_id: int | None, *, now: float | None = None, ttl: int | None = None
) -> TurnCredentials:
    """Fresh TURN credentials (coturn's `use-auth-secret` scheme) for one participant, or,
    with `participant_id` None, with the bare expiry as username (the scheme allows it)."""
    secret = settings.TURN_SECRET
    if not secret:
        raise ValueError("TURN_SECRET is not set")
    ttl = settings.TURN_CREDENTIAL_TTL if ttl is None else ttl
    expires_at = int(time.time() if now is None else now) + ttl
    username = str(expires_at) if participant_id is None else f"{expires_at}:{participant_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode(), expires_at)


def turn_enabled() -> bool:
    return bool(settings.TURN_URLS and settings.TURN_SECRET)


def ice_servers_for(participant_id: int, *, now: float | None = None) -> dict[str, Any]:
    """What the browser puts in RTCPeerConnection's configuration, and when to ask again.

    `{"iceServers": [...], "iceTransportPolicy": "all" | "relay", "expiresAt": unix time | None}`
    """
    servers: list[dict[str, Any]] = []
    if settings.STUN_URLS:
        servers.append({"urls": list(settings.STUN_URLS)})
    expires_at = None
    if turn_enabled():
        credentials = credentials_for(participant_id, now=now)
        servers.append(
            {
                "urls": list(settings.TURN_URLS),
                "username": credentials.username,
                "credential": credentials.password,
            }
        )
        expires_at = credentials.expires_at
    return {
        "iceServers": servers,
        "iceTransportPolicy": settings.ICE_TRANSPORT_POLICY,
        "expiresAt": expires_at,
    }


def media_server_turn_url() -> str | None:
    """The `turnUrl` for new endpoints on the media server (KMS_USE_TURN), or None.

    Kurento takes `user:password@host:port[?transport=udp|tcp]`, one server, and its user may
    not contain a colon: the credentials carry the bare expiry as username. The first UDP (or,
    failing that, TCP) `turn:` URL of TURN_URLS is used, so that a media server behind NAT
    can relay too.
    """
    if not (turn_enabled() and settings.KMS_USE_TURN):
        return None
    credentials = credentials_for(None)
    for wanted in ("udp", "tcp"):
        for url in settings.TURN_URLS:
            host, port, transport = _parse_turn_url(url)
            if host and transport == wanted:
                user = f"{credentials.username}:{credentials.password}"
                return f"{user}@{host}:{port}?transport={transport}"
    return None


def _parse_turn_url(url: str) -> tuple[str | None, int, str]:
    """(host, port, transport) of a `turn:` URL; host None for `turns:` and other schemes."""
    scheme, _, rest = url.partition(":")
    if scheme != "turn":
        return None, 0, ""
    address, _, query = rest.partition("?")
    transport = "udp"
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "transport" and value in ("udp", "tcp"):
            transport = value
    parsed = urlsplit(f"//{address}")
    return parsed.hostname, parsed.port or 3478, transport
