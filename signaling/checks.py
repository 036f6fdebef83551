"""System checks (`manage.py check`) for settings that contradict each other or defeat the product.

Each of these configurations starts without complaint and fails later, quietly: TURN switched off
by a missing secret, presence reaping live connections, browsers told to relay through a TURN
server that does not exist. `manage.py check` and `migrate` run these checks and stop on an
Error, so the operator hears of the mistake before the first call. Settings are read with
getattr() and a default: a settings module without one of them (an older one, a test's) must
not crash the check.

| id | level | what |
|---|---|---|
| conference.E001 | Error | TURN_URLS without TURN_SECRET |
| conference.W001 | Warning | TURN_SECRET without TURN_URLS |
| conference.E002 | Error | ICE_TRANSPORT_POLICY "relay" without TURN |
| conference.E003 | Error | KMS_USE_TURN without TURN |
| conference.W002 | Warning | KMS_USE_TURN, but no `turn:` URL in TURN_URLS for the media server |
| conference.E004 | Error | a TURN_URLS entry that is not a `turn:`/`turns:` URL |
| conference.E005 | Error | a STUN_URLS entry that is not a `stun:`/`stuns:` URL |
| conference.E006 | Error | KMS_URLS empty (or not set) |
| conference.E007 | Error | a KMS_URLS entry that is not a `ws://`/`wss://` URL |
| conference.W003 | Warning | the same media server twice in KMS_URLS |
| conference.E008 | Error | PRESENCE_HEARTBEAT_SECONDS not positive |
| conference.E009 | Error | PRESENCE_STALE_SECONDS not above 2 x PRESENCE_HEARTBEAT_SECONDS |
| conference.E010 | Error | TURN_CREDENTIAL_TTL not positive |
| conference.W004 | Warning | TURN_CREDENTIAL_TTL under 10 minutes |
| conference.E011 | Error | SIGNALING_RATE_BURST below 1 |
| conference.E012 | Error | SIGNALING_RATE_PER_SECOND not positive |
| conference.W005 | Warning | SIGNALING_MAX_MESSAGE_BYTES under 16 KiB |
| conference.E013 | Error | KMS_CONNECT_TIMEOUT or KMS_REQUEST_TIMEOUT not positive |
| conference.E014 | Error | ROOM_MAX_PARTICIPANTS_LIMIT below 2 |
| conference.W006 | Warning | ROOM_DEFAULT_MAX_PARTICIPANTS outside 2..ROOM_MAX_PARTICIPANTS_LIMIT |
| conference.E015 | Error | one of the numeric settings above is not a number |
| conference.E016 | Error | KMS_FAILOVER_SECONDS not positive |
| conference.E017 | Error | SIGNALING_INBOUND_BUFFER_BYTES below SIGNALING_MAX_MESSAGE_BYTES |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

TAG = "conference"

# Shorter-lived TURN credentials have every connection sent new ones every few minutes, and
# leave little time for slow ICE (or an ICE restart) to finish before they expire.
MIN_TURN_CREDENTIAL_TTL = 10 * 60
# A browser's SDP offer for audio and video takes several KiB, more with simulcast, many codecs
# or many candidates; an offer over the limit is refused, and its sender cannot publish.
MIN_SIGNALING_MESSAGE_BYTES = 16 * 1024


def _get(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _turn_enabled() -> bool:
    # As signaling.turn.turn_enabled(), without assuming the settings exist.
    return bool(_get("TURN_URLS", []) and _get("TURN_SECRET", ""))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_a_number(name: str, value: Any) -> Error:
    return Error(
        f"{name} is {value!r}, not a number.",
        hint=f"Set {name} to a number (the environment variable of the same name).",
        id="conference.E015",
    )


def _numbers(*names_and_defaults: tuple[str, float]) -> tuple[list[CheckMessage], list[Any]]:
    """The settings' values, and an E015 for each that is not a number (its value is None)."""
    errors: list[CheckMessage] = []
    values: list[Any] = []
    for name, default in names_and_defaults:
        value = _get(name, default)
        if _is_number(value):
            values.append(value)
        else:
            errors.append(_not_a_number(name, value))
            values.append(None)
    return errors, values


def _url_list(name: str, check_id: str) -> tuple[list[CheckMessage], list[str]]:
    """The entries of a list-of-URLs setting; a bare string is an error of its own: the
    product iterates the setting, and would take each character for a URL."""
    value = _get(name, [])
    if value is None:
        return [], []
    if isinstance(value, str) or not isinstance(value, Iterable):
        error = Error(
            f"{name} is {value!r}, not a list of URLs.",
            hint=f"Write {name} as a list of strings in a settings module; in the environment, "
            "separate the URLs with commas.",
            id=check_id,
        )
        return [error], []
    return [], [str(entry) for entry in value]


def _ice_url_ok(url: str, schemes: tuple[str, ...]) -> bool:
    """`scheme:host[:port][?query]` (RFC 7064, RFC 7065): no `//`, a host, a valid port."""
    scheme, colon, rest = url.partition(":")
    address = rest.partition("?")[0]
    if not colon or scheme.lower() not in schemes or not address or address.startswith("/"):
        return False
    try:
        parsed = urlsplit(f"//{address}")
        parsed.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return False
    return bool(parsed.hostname) and parsed.username is None


def check_turn(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """TURN_URLS and TURN_SECRET go together; relay-only ICE and KMS_USE_TURN need both."""
    messages: list[CheckMessage] = []
    turn_urls = _get("TURN_URLS", [])
    turn_secret = _get("TURN_SECRET", "")
    if turn_urls and not turn_secret:
        messages.append(
            Error(
                "TURN_URLS is set but TURN_SECRET is empty: TURN is off, and browsers behind "
                "symmetric NAT or restrictive firewalls cannot connect.",
                hint="Set TURN_SECRET to coturn's static-auth-secret (use-auth-secret), or "
                "empty TURN_URLS if you mean to run without TURN.",
                id="conference.E001",
            )
        )
    if turn_secret and not turn_urls:
        messages.append(
            Warning(
                "TURN_SECRET is set but TURN_URLS is empty: TURN is off.",
                hint="Set TURN_URLS to the TURN server's turn:/turns: URLs, or remove "
                "TURN_SECRET if you mean to run without TURN.",
                id="conference.W001",
            )
        )
    if _get("ICE_TRANSPORT_POLICY", "all") == "relay" and not _turn_enabled():
        messages.append(
            Error(
                'ICE_TRANSPORT_POLICY is "relay" but TURN is not configured: browsers may use '
                "TURN relays only, and there are none, so nobody can connect.",
                hint='Set both TURN_URLS and TURN_SECRET, or set ICE_TRANSPORT_POLICY to "all".',
                id="conference.E002",
            )
        )
    if _get("KMS_USE_TURN", False):
        if not _turn_enabled():
            messages.append(
                Error(
                    "KMS_USE_TURN is on but TURN is not configured: the media server gets no "
                    "relay, and if it is behind NAT browsers cannot reach it.",
                    hint="Set both TURN_URLS and TURN_SECRET, or turn KMS_USE_TURN off.",
                    id="conference.E003",
                )
            )
        # signaling.turn.media_server_turn_url() hands the media server a `turn:` URL only
        # (UDP, else TCP); without one it quietly hands it none.
        elif not any(url.partition(":")[0] == "turn" for url in _url_list("TURN_URLS", "")[1]):
            messages.append(
                Warning(
                    "KMS_USE_TURN is on but TURN_URLS has no turn: URL: the media server's "
                    "turnUrl is made from a turn: URL (UDP or TCP) only, so it gets no relay.",
                    hint="Add a turn: URL (UDP or TCP) of the same TURN server to TURN_URLS.",
                    id="conference.W002",
                )
            )
    return messages


def check_ice_urls(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Every TURN_URLS entry is a turn:/turns: URL, every STUN_URLS entry a stun:/stuns: one."""
    messages: list[CheckMessage] = []
    for name, schemes, check_id, example in (
        ("TURN_URLS", ("turn", "turns"), "conference.E004", "turn:turn.example.org:3478"),
        ("STUN_URLS", ("stun", "stuns"), "conference.E005", "stun:stun.example.org:3478"),
    ):
        errors, urls = _url_list(name, check_id)
        messages += errors
        messages += [
            Error(
                f"{name} entry {url!r} is not a {' or '.join(f'{s}:' for s in schemes)} URL; "
                "browsers reject the whole ICE configuration for it.",
                hint=f"Write entries as {example} (no //); separate entries with commas.",
                id=check_id,
            )
            for url in urls
            if not _ice_url_ok(url, schemes)
        ]
    return messages


def check_media_servers(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """KMS_URLS lists at least one media server, each once, each a ws:// or wss:// URL."""
    messages, urls = _url_list("KMS_URLS", "conference.E007")
    if not urls and not messages:
        messages.append(
            Error(
                "KMS_URLS is empty or not set: no room can get a media pipeline, so nobody "
                "can publish or receive audio and video.",
                hint="Set KMS_URLS (or KMS_URL) to the media server's Kurento Protocol "
                "endpoint, e.g. ws://127.0.0.1:8888/kurento.",
                id="conference.E006",
            )
        )
    for url in urls:
        try:
            parsed = urlsplit(url)
            parsed.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("ws", "wss") or not parsed.hostname:
            messages.append(
                Error(
                    f"KMS_URLS entry {url!r} is not a ws:// or wss:// URL.",
                    hint="Write media servers as ws://host:8888/kurento (or wss://), "
                    "separated by commas.",
                    id="conference.E007",
                )
            )
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            messages.append(
                Warning(
                    f"KMS_URLS lists {url!r} more than once: it is still one media server, "
                    "only probed once per entry for every new room.",
                    hint="List each media server once in KMS_URLS; check whether a second "
                    "server's URL was meant.",
                    id="conference.W003",
                )
            )
        seen.add(url)
    return messages


def check_presence(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """A connection refreshes its presence every heartbeat; one silent for the stale time is
    reaped. Two heartbeats of slack keep one slow refresh from reaping a live connection."""
    messages, (heartbeat, stale) = _numbers(
        ("PRESENCE_HEARTBEAT_SECONDS", 15.0), ("PRESENCE_STALE_SECONDS", 60.0)
    )
    if heartbeat is not None and heartbeat <= 0:
        messages.append(
            Error(
                f"PRESENCE_HEARTBEAT_SECONDS is {heartbeat}: every connection would refresh "
                "its presence in the database without pause.",
                hint="Set PRESENCE_HEARTBEAT_SECONDS to a positive number of seconds (default 15).",
                id="conference.E008",
            )
        )
    elif heartbeat is not None and stale is not None and stale <= 2 * heartbeat:
        messages.append(
            Error(
                f"PRESENCE_STALE_SECONDS ({stale}) is not greater than twice "
                f"PRESENCE_HEARTBEAT_SECONDS ({heartbeat}): live connections whose refresh "
                "is a little late would be reaped as gone.",
                hint=f"Set PRESENCE_STALE_SECONDS above {2 * heartbeat:g} (default 60 with a "
                "15 s heartbeat), or lower PRESENCE_HEARTBEAT_SECONDS.",
                id="conference.E009",
            )
        )
    return messages


def check_turn_credentials(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """TURN credentials must outlive the ICE exchange comfortably."""
    messages, (ttl,) = _numbers(("TURN_CREDENTIAL_TTL", 6 * 3600))
    if ttl is None:
        return messages
    if ttl <= 0:
        messages.append(
            Error(
                f"TURN_CREDENTIAL_TTL is {ttl}: TURN credentials would be expired when "
                "browsers get them.",
                hint=f"Set TURN_CREDENTIAL_TTL to a lifetime in seconds of at least "
                f"{MIN_TURN_CREDENTIAL_TTL} (default 21600).",
                id="conference.E010",
            )
        )
    elif ttl < MIN_TURN_CREDENTIAL_TTL:
        messages.append(
            Warning(
                f"TURN_CREDENTIAL_TTL is {ttl} s, under {MIN_TURN_CREDENTIAL_TTL // 60} "
                "minutes: browsers must fetch new credentials very often, and relayed "
                "connections that restart ICE after expiry fail.",
                hint=f"Set TURN_CREDENTIAL_TTL to at least {MIN_TURN_CREDENTIAL_TTL} "
                "(default 21600, 6 hours).",
                id="conference.W004",
            )
        )
    return messages


def check_signaling_limits(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The per-connection rate limit and message size must let a call be set up."""
    messages, (burst, rate, max_bytes, buffer_bytes) = _numbers(
        ("SIGNALING_RATE_BURST", 300),
        ("SIGNALING_RATE_PER_SECOND", 50.0),
        ("SIGNALING_MAX_MESSAGE_BYTES", 64 * 1024),
        ("SIGNALING_INBOUND_BUFFER_BYTES", 1024 * 1024),
    )
    if max_bytes is not None and buffer_bytes is not None and buffer_bytes < max_bytes:
        messages.append(
            Error(
                f"SIGNALING_INBOUND_BUFFER_BYTES ({buffer_bytes}) is smaller than "
                f"SIGNALING_MAX_MESSAGE_BYTES ({max_bytes}): a message of allowed size could "
                "never wait for the server, and would be dropped as 'busy'.",
                hint="Set SIGNALING_INBOUND_BUFFER_BYTES to several times "
                "SIGNALING_MAX_MESSAGE_BYTES (default 1 MiB).",
                id="conference.E017",
            )
        )
    if burst is not None and burst < 1:
        messages.append(
            Error(
                f"SIGNALING_RATE_BURST is {burst}: every signaling message would be refused "
                "as over the rate limit.",
                hint="Set SIGNALING_RATE_BURST well above 10 x the room size (default 300).",
                id="conference.E011",
            )
        )
    if rate is not None and rate <= 0:
        messages.append(
            Error(
                f"SIGNALING_RATE_PER_SECOND is {rate}: once its burst is spent, a connection "
                "could never send again.",
                hint="Set SIGNALING_RATE_PER_SECOND to a positive rate (default 50).",
                id="conference.E012",
            )
        )
    if max_bytes is not None and max_bytes < MIN_SIGNALING_MESSAGE_BYTES:
        messages.append(
            Warning(
                f"SIGNALING_MAX_MESSAGE_BYTES is {max_bytes}: browsers' SDP offers can be "
                "larger, and such participants could not publish.",
                hint=f"Set SIGNALING_MAX_MESSAGE_BYTES to at least {MIN_SIGNALING_MESSAGE_BYTES} "
                "(default 65536).",
                id="conference.W005",
            )
        )
    return messages


def check_media_server_timeouts(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Waiting zero seconds, or a negative time, for the media server fails every call."""
    defaults = {"KMS_CONNECT_TIMEOUT": 3.0, "KMS_REQUEST_TIMEOUT": 10.0}
    messages, values = _numbers(*defaults.items(), ("KMS_FAILOVER_SECONDS", 5.0))
    failover = values.pop()
    if failover is not None and failover <= 0:
        messages.append(
            Error(
                f"KMS_FAILOVER_SECONDS is {failover}: rooms would leave their media server at "
                "the first dropped connection, even one that is back a moment later.",
                hint="Set KMS_FAILOVER_SECONDS to a few seconds (default 5).",
                id="conference.E016",
            )
        )
    for (name, default), value in zip(defaults.items(), values, strict=True):
        if value is not None and value <= 0:
            messages.append(
                Error(
                    f"{name} is {value}: every request to the media server would time out at once.",
                    hint=f"Set {name} to a positive number of seconds (default {default:g}).",
                    id="conference.E013",
                )
            )
    return messages


def check_room_capacity(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Rooms hold at least two people, and the capacity offered must be one an owner may set."""
    messages, (limit, default) = _numbers(
        ("ROOM_MAX_PARTICIPANTS_LIMIT", 50), ("ROOM_DEFAULT_MAX_PARTICIPANTS", 10)
    )
    if limit is not None and limit < 2:
        messages.append(
            Error(
                f"ROOM_MAX_PARTICIPANTS_LIMIT is {limit}: no room could be created (rooms "
                "hold at least 2 people).",
                hint="Set ROOM_MAX_PARTICIPANTS_LIMIT to 2 or more (default 50).",
                id="conference.E014",
            )
        )
    elif limit is not None and default is not None and not 2 <= default <= limit:
        messages.append(
            Warning(
                f"ROOM_DEFAULT_MAX_PARTICIPANTS ({default}) is outside 2 to "
                f"ROOM_MAX_PARTICIPANTS_LIMIT ({limit}): the room form would offer a capacity "
                "it then refuses.",
                hint="Set ROOM_DEFAULT_MAX_PARTICIPANTS between 2 and ROOM_MAX_PARTICIPANTS_LIMIT.",
                id="conference.W006",
            )
        )
    return messages


CHECKS: Sequence[Callable[..., list[CheckMessage]]] = (
    check_turn,
    check_ice_urls,
    check_media_servers,
    check_presence,
    check_turn_credentials,
    check_signaling_limits,
    check_media_server_timeouts,
    check_room_capacity,
)


def register_checks() -> None:
    """Register every check of this module under the `conference` tag (run by plain
    `manage.py check`, and alone with `manage.py check --tag conference`)."""
    for check in CHECKS:
        register(check, TAG)
