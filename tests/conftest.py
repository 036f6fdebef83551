"""Shared fixtures: users, rooms, logged-in WebSocket clients, and the rule for missing components.

Under CI=true a test whose real component (PostgreSQL, Redis, Chromium...) is missing fails;
elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.services import user_create
from rooms.models import Participant, Room
from rooms.services import room_create

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when a real component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture(autouse=True)
def _playwright_loop_aside(request: pytest.FixtureRequest) -> Iterator[None]:
    """Playwright's sync API (the session's Chromium) leaves its event loop marked as running in
    the main thread; an async test needs that mark cleared to run its own loop."""
    loop = asyncio.events._get_running_loop()
    if loop is None or not inspect.iscoroutinefunction(getattr(request, "function", None)):
        yield
        return
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)


@pytest.fixture(scope="session", autouse=True)
def _compiled_translations() -> None:
    """The .mo files are built, not committed: a bare `pytest` compiles them as `make` does."""
    from pathlib import Path

    from django.utils.translation import trans_real

    from accounts.management.commands.compile_translations import compile_catalogs

    if compile_catalogs([Path(path) for path in settings.LOCALE_PATHS]):
        trans_real._translations = {}  # catalogs loaded before this was built are stale
        trans_real._default = None


@pytest.fixture(scope="session", autouse=True)
def _close_database_pools(django_db_setup) -> Iterator[None]:
    """PostgreSQL's connection pool (the production setting) holds connections open; close it
    before pytest-django drops the test database, or the drop finds the database in use."""
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """A new layer instance per test: each test has its own event loop, and channels-redis
    binds its locks and pools to the loop that first used them (Redis keys are isolated by a
    per-run prefix; the in-memory layer starts empty)."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def recordings_dir(settings, tmp_path) -> Path:
    """RECORDINGS_DIR (and the media server's view of it) in the test's own directory."""
    settings.RECORDINGS_DIR = tmp_path / "recordings"
    settings.RECORDINGS_MEDIA_DIR = str(settings.RECORDINGS_DIR)
    return settings.RECORDINGS_DIR


@pytest.fixture
def make_user(django_db_blocker) -> Callable[..., User]:
    counter = iter(range(1, 10_000))

    def make(name: str | None = None, **extra: Any) -> User:
        username = name or f"user{next(counter)}"
        with django_db_blocker.unblock():
            return user_create(
                username=username,
                password="correct horse battery staple",
                display_name=extra.pop("display_name", username.title()),
                **extra,
            )

    return make


@pytest.fixture
def make_room(django_db_blocker) -> Callable[..., Room]:
    def make(owner: User, name: str = "Weekly sync", **fields: Any) -> Room:
        with django_db_blocker.unblock():
            return room_create(owner=owner, name=name, **fields)

    return make


@pytest.fixture
def ada(make_user) -> User:
    return make_user("ada", display_name="Ada Lovelace")


@pytest.fixture
def grace(make_user) -> User:
    return make_user("grace", display_name="Grace Hopper")


@pytest.fixture
def alan(make_user) -> User:
    return make_user("alan", display_name="Alan Turing")


@pytest.fixture
def edsger(make_user) -> User:
    return make_user("edsger", display_name="Edsger Dijkstra")


@pytest.fixture
def room(make_room, ada) -> Room:
    return make_room(ada, "Weekly sync")


def record_participant(
    room: Room, user: User, *, seen_ago: float = 0, state: str = "connected", name: str = ""
) -> Participant:
    """A participant row written directly, as a worker that has since died would have left it."""
    return Participant.objects.create(
        room=room,
        user=user,
        display_name=name or user.shown_name,
        connection_id=f"specific.dead-worker!{secrets.token_hex(4)}",
        state=state,
        last_seen_at=timezone.now() - timedelta(seconds=seen_ago),
    )


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class RoomClient:
    """A logged-in WebSocket client of the real ASGI application (auth, origin check, routing)."""

    def __init__(self, communicator: WebsocketCommunicator, accepted: bool) -> None:
        self.communicator = communicator
        self.accepted = accepted
        self.closed_with: int | None = None

    async def send(self, payload: dict[str, Any]) -> None:
        await self.communicator.send_json_to(payload)

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 3) -> dict[str, Any]:
        return await self.communicator.receive_json_from(timeout=timeout)

    async def receive_until(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """Skip messages until one of the given type arrives."""
        while True:
            message = await self.receive(timeout=timeout)
            if message.get("type") == kind:
                return message

    async def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a request; its reply (a success or an error) with the same id. Whatever comes
        before it is skipped."""
        await self.send(payload)
        while True:
            reply = await self.receive()
            if reply.get("id") == payload["id"]:
                return reply

    async def expect_close(self, timeout: float = 3) -> int:
        event = await self.communicator.receive_output(timeout=timeout)
        while event["type"] == "websocket.send":
            event = await self.communicator.receive_output(timeout=timeout)
        assert event["type"] == "websocket.close", event
        self.closed_with = event.get("code")
        return self.closed_with

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        """Close the socket, as the browser would; once only, and quietly if the application
        already ended (the communicator cancels an application slow to finish)."""
        if self.communicator.future.done():
            return
        await self.communicator.disconnect()


async def enter_room(room_client, user: User, room: Room) -> tuple[RoomClient, dict]:
    """Open a room client for that user and read its first message, the room's snapshot."""
    client = await room_client(user, room)
    snapshot = await client.receive()
    assert snapshot["type"] == "snapshot", snapshot
    return client, snapshot


@pytest.fixture
async def room_client() -> AsyncIterator[Callable[..., Any]]:
    from asgiref.sync import sync_to_async

    from conference.asgi import application

    clients: list[RoomClient] = []

    async def connect(
        user: User | None,
        room: Room | str,
        *,
        invite: str | None = None,
        origin: str = "http://testserver",
    ) -> RoomClient:
        # A string may carry a query of its own: "slug/?resume=12".
        target = room if isinstance(room, str) else f"{room.slug}/"
        path = f"/ws/rooms/{target.rstrip('/')}/" if "?" not in target else f"/ws/rooms/{target}"
        if invite:
            path += ("&" if "?" in path else "?") + f"invite={invite}"
        headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
        if user is not None:
            cookie = await sync_to_async(session_cookie)(user)
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        client = RoomClient(communicator, connected)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        with contextlib.suppress(Exception, asyncio.CancelledError):  # already closed
            await client.close()


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium (Playwright's sync API); fails under CI when Chromium is missing."""
    from tests.browser import CHROMIUM, CHROMIUM_ARGS, chromium_available

    require(chromium_available(), "Chromium (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """The product served by daphne on a free loopback port, with its own database."""
    from tests.live import ProductServer

    server = ProductServer(tmp_path_factory.mktemp("product")).start()
    yield server
    server.stop()


@pytest.fixture
def callers_on(chromium):
    """Chromium callers (tests.browser.Caller) on a product or worker of the test's choosing:
    `callers_on(product, username, display_name)`. At the end their pages are unloaded and
    must have had no JavaScript error."""
    from tests.browser import WAIT_MS, Caller

    made: list[Caller] = []

    def make(product, username: str, display_name: str) -> Caller:
        made.append(Caller(chromium, product, username, display_name))
        return made[-1]

    yield make
    errors = {p.name: p.errors for p in made if p.errors}
    for person in made:
        # Unload the page first, within a time limit: its calls and sockets end there, and
        # closing the context then has nothing left to wait for.
        with contextlib.suppress(Exception):
            person.page.goto("about:blank", timeout=WAIT_MS)
        person.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"
