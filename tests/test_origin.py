"""WebSocket origin validation through the real ASGI application: only the site's own origin
(scheme, host and port) and CSRF_TRUSTED_ORIGINS may open sockets, as for Django's forms."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import User
from rooms.models import Room
from signaling.origin import origin_allowed
from tests.conftest import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.fixture
def refusals(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The refusal messages logged. The `signaling` logger does not propagate to the root
    logger (where caplog listens), so caplog's handler goes onto the module's logger."""
    logger = logging.getLogger("signaling.origin")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


async def handshake(
    user: User,
    room: Room,
    *,
    host: str = "testserver",
    origin: str | None = "http://testserver",
    scheme: str = "ws",
    headers: tuple[tuple[str, str], ...] = (),
) -> bool:
    """Whether a logged-in client's handshake is accepted, with a scope as daphne builds it."""
    from conference.asgi import application

    raw = [(b"host", host.encode())]
    if origin is not None:
        raw.append((b"origin", origin.encode()))
    raw += [(name.encode(), value.encode()) for name, value in headers]
    cookie = await sync_to_async(session_cookie)(user)
    raw.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, f"/ws/rooms/{room.slug}/", headers=raw)
    communicator.scope.update(scheme=scheme, server=("127.0.0.1", 8000))
    connected, _ = await communicator.connect(timeout=5)
    # What the consumer does after accepting is for its own tests (as in the room_client fixture).
    with contextlib.suppress(Exception):
        await communicator.disconnect()
    return connected


async def test_same_origin_is_accepted(room_client, room, ada):
    client = await room_client(ada, room)
    assert client.accepted is True


async def test_same_origin_with_a_port_is_accepted(room, ada):
    assert await handshake(ada, room, host="127.0.0.1:8000", origin="http://127.0.0.1:8000")


async def test_another_port_of_the_same_host_is_refused(room_client, room, ada, refusals):
    # The regression: channels' AllowedHostsOriginValidator looked at the origin's host only.
    assert not await handshake(ada, room, host="127.0.0.1:8000", origin="http://127.0.0.1:9")
    client = await room_client(ada, room, origin="http://testserver:9")
    assert client.accepted is False
    assert any("'http://testserver:9'" in message for message in refusals.messages)


async def test_another_scheme_is_refused(room_client, room, ada):
    client = await room_client(ada, room, origin="https://testserver")
    assert client.accepted is False


async def test_another_allowed_host_is_refused(room_client, room, ada):
    # localhost is in ALLOWED_HOSTS too, but a page there is not this site's origin.
    client = await room_client(ada, room, origin="http://localhost")
    assert client.accepted is False


async def test_a_foreign_host_is_refused(room_client, room, ada, refusals):
    client = await room_client(ada, room, origin="https://evil.example")
    assert client.accepted is False
    assert any("'https://evil.example'" in message for message in refusals.messages)


async def test_a_missing_origin_is_refused(room, ada, refusals):
    assert not await handshake(ada, room, origin=None)
    assert any("no Origin header" in message for message in refusals.messages)


async def test_a_null_origin_is_refused(room_client, room, ada):
    # Sandboxed iframes and file:// pages send "null".
    client = await room_client(ada, room, origin="null")
    assert client.accepted is False


async def test_a_trusted_origin_is_accepted(room_client, room, ada, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.org"]
    client = await room_client(ada, room, origin="https://app.example.org")
    assert client.accepted is True
    refused = await room_client(ada, room, origin="https://app.example.org:8443")
    assert refused.accepted is False


async def test_a_wildcard_trusted_origin_covers_subdomains_under_its_scheme(
    room_client, room, ada, settings
):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    assert (await room_client(ada, room, origin="https://meet.example.org")).accepted is True
    assert (await room_client(ada, room, origin="https://a.b.example.org")).accepted is True
    assert (await room_client(ada, room, origin="http://meet.example.org")).accepted is False
    assert (await room_client(ada, room, origin="https://example.org.evil")).accepted is False


async def test_behind_a_tls_proxy_the_origin_must_be_https(room, ada, settings):
    settings.SECURE_PROXY_SSL_HEADER = PROXY_SSL_HEADER
    secure = (("x-forwarded-proto", "https"),)
    assert await handshake(ada, room, origin="https://testserver", headers=secure)
    assert not await handshake(ada, room, origin="http://testserver", headers=secure)
    # The proxy's verdict wins over the scope's scheme, either way.
    plain = (("x-forwarded-proto", "http"),)
    assert not await handshake(ada, room, origin="https://testserver", scheme="wss", headers=plain)
    # Without the header, the connection's own scheme decides.
    assert await handshake(ada, room, origin="http://testserver")


async def test_a_wss_connection_requires_an_https_origin(room, ada):
    assert await handshake(ada, room, origin="https://testserver", scheme="wss")
    assert not await handshake(ada, room, origin="http://testserver", scheme="wss")


async def test_default_ports_are_the_same_origin(room, ada):
    assert await handshake(ada, room, host="testserver:80", origin="http://testserver")
    assert await handshake(ada, room, host="testserver", origin="http://testserver:80")
    assert await handshake(
        ada, room, host="testserver:443", origin="https://testserver", scheme="wss"
    )
    assert not await handshake(ada, room, host="testserver:443", origin="http://testserver")


async def test_a_host_not_in_allowed_hosts_is_refused(room, ada, settings, refusals):
    assert not await handshake(ada, room, host="evil.example", origin="http://evil.example")
    assert any("ALLOWED_HOSTS" in message for message in refusals.messages)
    # Not even with an origin that is trusted: the Host itself is what is wrong.
    settings.CSRF_TRUSTED_ORIGINS = ["http://testserver"]
    assert not await handshake(ada, room, host="evil.example", origin="http://testserver")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://testserver", True),
        ("HTTP://TestServer", True),  # host names and schemes are not case-sensitive
        ("http://testserver/", False),  # an Origin is never a URL with a path
        ("http://user@testserver", False),
        ("http://testserver:8O", False),
        ("testserver", False),
        ("", False),
        ("http://testserver,http://testserver", False),  # two Origin headers
    ],
)
def test_only_a_serialized_same_origin_passes(origin: str, allowed: bool) -> None:
    scope = {
        "type": "websocket",
        "path": "/ws/rooms/x/",
        "scheme": "ws",
        "headers": [(b"host", b"testserver"), (b"origin", origin.encode())],
    }
    assert origin_allowed(scope) is allowed
