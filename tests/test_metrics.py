"""/metrics (conference/metrics.py): what Prometheus scrapes from each daphne worker.

The database gauges are checked against real rows, read both through Django's test client and
through the ASGI application daphne serves (another thread, so another database connection:
hence transactional tests). The database failure is made at the connection, as in
tests/test_health.py, so the collector's real query path meets it.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conference import metrics
from rooms.models import Room
from signaling.models import MediaEndpoint, RoomPipeline
from tests.conftest import record_participant

pytestmark = pytest.mark.django_db(transaction=True)

KMS_A = "ws://kms-a.internal:8888/kurento"
KMS_B = "ws://kms-b.internal:8888/kurento"
KMS_IDLE = "ws://kms-c.internal:8888/kurento"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _no_token_unless_the_test_sets_one(settings) -> None:
    """A METRICS_TOKEN from the environment running the suite must not turn scrapes into 401s."""
    settings.METRICS_TOKEN = ""


def parse(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(client: Client, **headers: str) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == metrics.CONTENT_TYPE_LATEST
    assert response["Content-Type"].startswith("text/plain")
    assert "no-store" in response["Cache-Control"]
    return parse(response.content.decode())


def make_population(make_user: Callable, make_room: Callable) -> None:
    """Three rooms (one closed), three connected participants and one who left; a call in two
    rooms on two media servers, and a deleted room's pipeline still on the first server."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    standup = make_room(alice, "Standup")
    review = make_room(bob, "Review")
    closed = make_room(carol, "Old one")
    Room.objects.filter(pk=closed.pk).update(closed_at=timezone.now())

    a1 = record_participant(standup, alice)
    a2 = record_participant(standup, bob)
    record_participant(standup, carol, state="left")
    b1 = record_participant(review, carol)

    on_a = RoomPipeline.objects.create(room=standup, server_url=KMS_A, pipeline_id="pa")
    on_b = RoomPipeline.objects.create(room=review, server_url=KMS_B, pipeline_id="pb")
    RoomPipeline.objects.create(room=None, server_url=KMS_A, pipeline_id="orphan")
    # Standup: both publish and each receives the other (4 endpoints); review: one publisher.
    for owner, publisher, endpoint in [
        (a1, None, "a1"),
        (a2, None, "a2"),
        (a1, a2, "a1<-a2"),
        (a2, a1, "a2<-a1"),
    ]:
        MediaEndpoint.objects.create(
            pipeline=on_a, owner=owner, publisher=publisher, endpoint_id=endpoint
        )
    MediaEndpoint.objects.create(pipeline=on_b, owner=b1, endpoint_id="b1")


def assert_population(samples: Samples) -> None:
    assert value(samples, "conference_metrics_database_up") == 1
    assert value(samples, "conference_rooms") == 3
    assert value(samples, "conference_rooms_open") == 2
    assert value(samples, "conference_rooms_in_call") == 2
    assert value(samples, "conference_participants_connected") == 3
    assert value(samples, "conference_media_pipelines", server=KMS_A) == 2
    assert value(samples, "conference_media_pipelines", server=KMS_B) == 1
    assert value(samples, "conference_media_endpoints", server=KMS_A) == 4
    assert value(samples, "conference_media_endpoints", server=KMS_B) == 1
    # A configured media server without pipelines still has its series, at 0.
    assert value(samples, "conference_media_pipelines", server=KMS_IDLE) == 0
    assert value(samples, "conference_media_endpoints", server=KMS_IDLE) == 0


def test_database_gauges_count_the_real_rows(
    client, settings, make_user, make_room, django_assert_max_num_queries
):
    settings.KMS_URLS = [KMS_A, KMS_IDLE]
    empty = scrape(client)
    assert value(empty, "conference_rooms") == 0
    assert value(empty, "conference_participants_connected") == 0
    assert value(empty, "conference_media_pipelines", server=KMS_A) == 0

    make_population(make_user, make_room)
    # Aggregates only: the cost of a scrape does not grow with the number of rooms.
    with django_assert_max_num_queries(3):
        samples = scrape(client)
    assert_population(samples)
    # The default process and platform collectors are on the dedicated registry too.
    assert value(samples, "process_cpu_seconds_total") is not None
    assert any(name == "python_info" for name, _ in samples)


@pytest.mark.topology
async def test_served_by_the_asgi_application(settings, make_user, make_room):
    """Through the application daphne serves: the collector runs in the request's sync thread."""
    from conference.asgi import application

    settings.KMS_URLS = [KMS_A, KMS_IDLE]
    await sync_to_async(make_population)(make_user, make_room)
    communicator = HttpCommunicator(
        application, "GET", "/metrics", headers=[(b"host", b"testserver")]
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 200
    headers = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    assert headers["content-type"] == metrics.CONTENT_TYPE_LATEST
    assert_population(parse(response["body"].decode()))


def test_counters_and_histograms_appear_once_used(client):
    # Counters are per process and other tests may have moved them: compare before and after.
    before = scrape(client)
    assert value(before, "conference_consumer_crashes_total") is not None  # no labels: from 0

    metrics.JOINS.labels(outcome="joined").inc()
    metrics.JOINS.labels(outcome="room_full").inc(2)
    metrics.JOIN_SECONDS.observe(0.07)
    metrics.NEGOTIATION_SECONDS.labels(kind="publish").observe(0.3)
    metrics.MEDIA_SERVER_RECONNECTS.labels(server=KMS_A).inc()
    metrics.MEDIA_SERVER_SESSIONS_LOST.labels(server=KMS_A).inc()
    metrics.ROOM_MEDIA_REBUILDS.labels(reason="session_lost").inc()
    metrics.SIGNALING_ERRORS.labels(code="media_unavailable").inc()
    metrics.SIGNALING_MESSAGES_DROPPED.labels(reason="rate").inc()
    metrics.CONSUMER_CRASHES.inc()
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - (value(before, name, **labels) or 0)

    assert delta("conference_joins_total", outcome="joined") == 1
    assert delta("conference_joins_total", outcome="room_full") == 2
    assert delta("conference_join_seconds_count") == 1
    assert delta("conference_join_seconds_bucket", le="0.1") == 1
    assert delta("conference_join_seconds_bucket", le="0.05") == 0
    assert delta("conference_negotiation_seconds_count", kind="publish") == 1
    assert delta("conference_negotiation_seconds_bucket", kind="publish", le="0.5") == 1
    assert delta("conference_media_server_reconnects_total", server=KMS_A) == 1
    assert delta("conference_media_server_sessions_lost_total", server=KMS_A) == 1
    assert delta("conference_room_media_rebuilds_total", reason="session_lost") == 1
    assert delta("conference_signaling_errors_total", code="media_unavailable") == 1
    assert delta("conference_signaling_messages_dropped_total", reason="rate") == 1
    assert delta("conference_consumer_crashes_total") == 1


def test_token_is_required_when_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    for headers in (
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong-token"},
        {"HTTP_AUTHORIZATION": "Bearer s3cret-token-and-more"},
        {"HTTP_AUTHORIZATION": "Basic s3cret-token"},
        {"HTTP_AUTHORIZATION": "s3cret-token"},
        {"HTTP_AUTHORIZATION": "Bearer "},
    ):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401, headers
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"conference_" not in response.content
    samples = scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert value(samples, "conference_metrics_database_up") == 1
    # The scheme is case-insensitive (RFC 7235).
    assert client.get("/metrics", HTTP_AUTHORIZATION="bearer s3cret-token").status_code == 200


def test_open_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200
    # A token sent to a worker that wants none does no harm.
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 200


def test_prometheus_reaches_it_by_address_over_plain_http(client, settings):
    """A scrape by IP address, over HTTP, on a production configuration: no 400 for the Host,
    no redirect to HTTPS; other pages keep both rules. Only GET and HEAD are answered."""
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["meet.example.org"]
    scrape(client, HTTP_HOST="10.0.0.7:8000")
    assert client.head("/metrics", HTTP_HOST="10.0.0.7:8000").status_code == 200
    response = client.post("/metrics", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    assert client.get("/", HTTP_HOST="10.0.0.7:8000").status_code == 400
    assert client.get("/", HTTP_HOST="meet.example.org").status_code == 301
    # The token still applies there.
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", HTTP_HOST="10.0.0.7:8000").status_code == 401


def test_database_down_still_answers(client, settings):
    settings.KMS_URLS = [KMS_A]
    metrics.CONSUMER_CRASHES.inc()
    refused = OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", side_effect=refused):
        samples = scrape(client)
    assert value(samples, "conference_metrics_database_up") == 0
    names = {name for name, _ in samples}
    for gauge in (
        "conference_rooms",
        "conference_rooms_open",
        "conference_rooms_in_call",
        "conference_participants_connected",
        "conference_media_pipelines",
        "conference_media_endpoints",
    ):
        assert gauge not in names
    # The rest of the scrape is there: the per-process counters and the process collector.
    assert value(samples, "conference_consumer_crashes_total") >= 1
    assert value(samples, "process_cpu_seconds_total") is not None
    # And the next scrape, with the database back, reads it again.
    assert value(scrape(client), "conference_metrics_database_up") == 1


def test_registry_is_separate_from_the_default_one():
    from prometheus_client import REGISTRY as DEFAULT_REGISTRY

    assert metrics.REGISTRY is not DEFAULT_REGISTRY
    assert DEFAULT_REGISTRY.get_sample_value("conference_consumer_crashes_total") is None
    assert metrics.REGISTRY.get_sample_value("conference_consumer_crashes_total") is not None
