"""Two daphne workers serving one product, as in production: channels-redis and PostgreSQL shared,
one media server process, headless Chromium users connected to one worker or the other.

- People on different workers in one room see each other arrive and see each other's video.
- Two people joining a new room at the same moment through different workers get one pipeline.
- When a worker is killed (SIGKILL: no disconnect handler runs), the other worker's heartbeat
  reaps its participants: the others see them go and their media objects are released. The room's
  pipeline survives even after the media server has dropped the dead worker's session (the
  pipeline was made by the dead worker), and the people who were on it rejoin through the
  surviving worker and see and are seen again.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, no password) and Redis on 127.0.0.1:6379: it
creates a database of its own and drops it afterwards, and uses a Redis key prefix of its own.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import WAIT_MS, Caller, wait_until
from tests.browser import media_server_objects as media_server_pipelines
from tests.conftest import require
from tests.live import ProductServer

pytestmark = pytest.mark.browser

POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
HEARTBEAT_SECONDS = 1
STALE_SECONDS = 4
# The media server drops a disconnected session (and what only it held) after this long, as
# KMS's collector does after 240 s: short, so the test sees what happens to a dead worker's session.
SESSION_GRACE_SECONDS = 3


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Database:
    """A PostgreSQL database of this test's own, read directly to check what the workers wrote."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"conference_workers_{secrets.token_hex(4)}"
        self.url = f"{POSTGRES}/{self.name}"
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')

    def query(self, sql: str, *params: Any) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def room_pipelines(self, slug: str) -> list[str]:
        return [
            row[0]
            for row in self.query(
                "SELECT p.pipeline_id FROM signaling_roompipeline p"
                " JOIN rooms_room r ON r.id = p.room_id WHERE r.slug = %s",
                slug,
            )
        ]

    def room_endpoints(self, slug: str) -> int:
        return self.query(
            "SELECT count(*) FROM signaling_mediaendpoint e"
            " JOIN signaling_roompipeline p ON p.id = e.pipeline_id"
            " JOIN rooms_room r ON r.id = p.room_id WHERE r.slug = %s",
            slug,
        )[0][0]

    def participant_state(self, participant_id: str) -> str:
        (row,) = self.query(
            "SELECT state FROM rooms_participant WHERE id = %s", int(participant_id)
        )
        return row[0]

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[tuple[ProductServer, ProductServer, Database]]:
    """Two daphne workers on PostgreSQL and channels-redis, and one media server process."""
    require(reachable(5432), "PostgreSQL on 127.0.0.1:5432")
    require(reachable(6379), "Redis on 127.0.0.1:6379")
    database = Database()
    prefix = f"conference-workers-{secrets.token_hex(4)}"
    first = second = None
    try:
        first = ProductServer(
            tmp_path_factory.mktemp("workers"),
            {
                "DATABASE_URL": database.url,
                "REDIS_URL": REDIS_URL,
                "CHANNEL_LAYER_PREFIX": prefix,
                "PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
                "PRESENCE_STALE_SECONDS": str(STALE_SECONDS),
                "MEDIASERVER_SESSION_GRACE": str(SESSION_GRACE_SECONDS),
            },
        ).start()
        second = first.worker().serve()
        yield first, second, database
    finally:
        for server in (second, first):
            if server is not None:
                server.stop()
        database.drop()
        delete_redis_keys(prefix)


def on(worker: ProductServer, room_url: str) -> str:
    """The same room page, served by `worker`."""
    return re.sub(r"^http://[^/]+", worker.url, room_url)


def slug_of(room_url: str) -> str:
    return room_url.rstrip("/").rsplit("/", 1)[-1]


def connected_to(person: Caller, worker: ProductServer) -> None:
    assert person.page.url.startswith(worker.url + "/"), person.page.url
    person.wait_connected()


def leave_all(media_url: str, *people: Caller) -> None:
    for person in people:
        if person.page.locator("#leave-button").count():
            person.page.click("#leave-button")
    wait_until("every pipeline released", lambda: media_server_pipelines(media_url) == {})


def healthz(worker: ProductServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{worker.url}/healthz", timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def test_both_workers_report_healthy_on_the_shared_parts(workers):
    first, second, _ = workers
    for worker in (first, second):
        report = healthz(worker)
        assert report["status"] == "ok", report
        checks = report["checks"]
        assert checks["database"]["vendor"] == "postgresql"
        assert checks["channel_layer"]["backend"] == "RedisChannelLayer"
        assert [s["url"] for s in checks["media_servers"]] == [first.media_url]


def test_people_on_different_workers_see_and_hear_each_other(callers_on, workers):
    first, second, database = workers
    ada = callers_on(first, "wada", "Ada Lovelace")
    room_url = ada.create_room("Across workers")
    grace = callers_on(second, "wgrace", "Grace Hopper")
    grace.open(on(second, room_url))
    connected_to(ada, first)
    connected_to(grace, second)

    # Presence crosses workers through Redis: each sees the other arrive.
    ada.wait_sees("Grace Hopper")
    grace.wait_sees("Ada Lovelace")
    # Media too: each decodes the other's moving picture, with the ICE candidates of each
    # endpoint relayed to the worker that holds its participant's socket.
    assert ada.wait_video_from(grace)["width"] >= 320
    assert grace.wait_video_from(ada)["width"] >= 320
    (pipeline,) = database.room_pipelines(slug_of(room_url))
    assert list(media_server_pipelines(first.media_url)) == [pipeline]

    # Leaving through one worker takes the tile away on the other.
    grace_id = grace.participant_id
    grace.page.click("#leave-button")
    ada.wait_tile_gone(grace_id)
    ada.wait_not_sees("Grace Hopper")
    leave_all(first.media_url, ada)


def test_concurrent_first_joins_on_both_workers_make_one_pipeline(callers_on, workers):
    first, second, database = workers
    ada = callers_on(first, "cada", "Ada Lovelace")
    grace = callers_on(second, "cgrace", "Grace Hopper")
    room_url = ada.new_room("Joined at once")
    slug = slug_of(room_url)
    grace.page.goto(on(second, room_url))
    for person in (ada, grace):
        person.page.wait_for_selector("#join-button:not([disabled])", timeout=WAIT_MS)
    assert database.room_pipelines(slug) == []

    # Both click Join within a few milliseconds: both workers ask for the room's pipeline at once.
    click = "() => document.querySelector('#join-button').click()"
    ada.page.evaluate(click)
    grace.page.evaluate(click)
    connected_to(ada, first)
    connected_to(grace, second)
    ada.wait_video_from(grace)
    grace.wait_video_from(ada)

    (pipeline,) = database.room_pipelines(slug)
    on_server = media_server_pipelines(first.media_url)
    assert list(on_server) == [pipeline]
    # Both publish into it and each receives the other: four endpoints, all in that pipeline.
    assert len(on_server[pipeline]) == 4 == database.room_endpoints(slug)
    leave_all(first.media_url, ada, grace)


def test_a_killed_worker_is_cleaned_up_and_its_people_rejoin_through_the_other(callers_on, workers):
    first, second, database = workers
    # Ada joins first, through the worker that will die: that worker makes the room's pipeline.
    ada = callers_on(first, "kada", "Ada Lovelace")
    room_url = ada.create_room("Survives a crash")
    slug = slug_of(room_url)
    alan = callers_on(first, "kalan", "Alan Turing")
    grace = callers_on(second, "kgrace", "Grace Hopper")
    alan.open(room_url)
    grace.open(on(second, room_url))
    trio = (ada, alan, grace)
    for person in trio:
        for other in trio:
            if other is not person:
                person.wait_video_from(other)
    (pipeline,) = database.room_pipelines(slug)
    # Three publishing endpoints and six receiving ones.
    assert len(media_server_pipelines(first.media_url)[pipeline]) == 9
    assert database.room_endpoints(slug) == 9
    dead = {ada.participant_id: "Ada Lovelace", alan.participant_id: "Alan Turing"}

    first.crash()
    killed_at = time.monotonic()
    # Grace's worker reaps them on its heartbeat once they are stale, and tells her page.
    for participant_id, name in dead.items():
        grace.wait_tile_gone(participant_id)
        grace.wait_not_sees(name)
        assert database.participant_state(participant_id) == "dropped"
    assert time.monotonic() - killed_at >= STALE_SECONDS - 1  # reaped for being stale, not sooner
    # Everything they held, and what Grace held to receive them, is released: only Grace's
    # publishing endpoint is left in the pipeline.
    wait_until(
        "the dead worker's endpoints released",
        lambda: (
            database.room_endpoints(slug) == 1
            and len(media_server_pipelines(first.media_url).get(pipeline, [])) == 1
        ),
    )

    # The media server forgets the dead worker's session after its grace period. The pipeline
    # that session made is still in use by the living worker: it must stay.
    time.sleep(max(0.0, killed_at + SESSION_GRACE_SECONDS + 2 - time.monotonic()))
    assert database.room_pipelines(slug) == [pipeline]
    assert len(media_server_pipelines(first.media_url).get(pipeline, [])) == 1

    # Ada and Alan come back through the surviving worker: everyone sees everyone again.
    for person in (ada, alan):
        person.open(on(second, room_url))
        connected_to(person, second)
    for person in trio:
        for other in trio:
            if other is not person:
                person.wait_video_from(other)
    assert database.room_pipelines(slug) == [pipeline]
    assert len(media_server_pipelines(first.media_url)[pipeline]) == 9
    leave_all(first.media_url, *trio)


def test_the_waiting_room_across_workers_and_a_restart(callers_on, workers):
    """Ada runs the meeting on one worker; Grace and Alan ask to join through the other. The
    queue is in PostgreSQL and the decisions cross on Redis; Grace's worker restarting under her
    does not lose her place."""
    first, second, database = workers
    for worker in (first, second):  # an earlier test may have killed one
        if worker.process is not None and worker.process.poll() is not None:
            worker.serve()
    ada = callers_on(first, "wrada", "Ada Lovelace")
    room_url = ada.create_room("Knock first")
    database.query(
        "UPDATE rooms_room SET ask_to_join = true WHERE slug = %s RETURNING id", slug_of(room_url)
    )
    grace = callers_on(second, "wrgrace", "Grace Hopper")
    grace.open(on(second, room_url))
    grace.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
    assert grace.page.is_visible("#waiting-card") and grace.page.is_visible(".tile--local video")
    assert "let you in" in grace.page.inner_text("#waiting-message")
    # Ada hears of her (a count on People, a notice) and sees her in the list.
    ada.page.wait_for_selector("#waiting-count:not([hidden]):text-is('1')", timeout=WAIT_MS)
    ada.page.click("#people-button")
    ada.page.wait_for_selector("#waiting-list li:has-text('Grace Hopper')", timeout=WAIT_MS)

    # Grace's worker restarts: her page asks again by itself and keeps its place.
    second.crash()
    second.serve()
    grace.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
    wait_until(
        "Grace waiting again after the restart",
        lambda: (
            database.query(
                "SELECT count(*) FROM rooms_joinrequest WHERE state = 'waiting'"
                " AND last_seen_at > now() - interval '3 seconds'"
            )[0][0]
            == 1
        ),
        timeout=20,
    )
    ada.page.wait_for_selector("#waiting-list li:has-text('Grace Hopper')", timeout=WAIT_MS)

    # Let in: she joins on her open connection, and they see each other.
    ada.page.click("button[aria-label='Let Grace Hopper in']")
    connected_to(grace, second)
    ada.wait_video_from(grace)
    grace.wait_video_from(ada)
    ada.page.wait_for_selector("#waiting-count", state="hidden", timeout=WAIT_MS)

    # Alan is turned away: his page says so, and offers to ask again.
    alan = callers_on(second, "wralan", "Alan Turing")
    alan.open(on(second, room_url))
    alan.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
    ada.page.click("button[aria-label='Turn Alan Turing away']", timeout=WAIT_MS)
    alan.page.wait_for_selector("#ended-message:has-text('did not let you in')", timeout=WAIT_MS)
    assert alan.page.is_visible("#retry-button")
    assert database.query(
        "SELECT state FROM rooms_joinrequest WHERE display_name = 'Alan Turing'"
    ) == [("denied",)]
    leave_all(first.media_url, ada, grace)
