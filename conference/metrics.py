"""`/metrics`: Prometheus metrics of this web worker and of the product as a whole.

Two kinds of metrics, in the Prometheus text exposition format:

- Per-process counters and histograms (`JOINS`, `JOIN_SECONDS`, ...), defined here for the rest
  of the code to increment, plus prometheus_client's process and platform collectors. Each
  daphne worker counts only what it did itself, so Prometheus scrapes every worker and sums.
- Gauges read from the database at scrape time by `DatabaseCollector` (rooms, connected
  participants, pipelines and endpoints per media server). Every worker reads the same rows, so
  every worker reports the same, true numbers: aggregate them with max(), not sum().

All of them live in the dedicated `REGISTRY`, not in prometheus_client's global default one, so
that importing this module twice (tests, reloads) or another library registering its own
metrics cannot clash with them.

Prometheus scrapes each worker directly, by its address and over plain HTTP, like a load
balancer probes `/healthz`: `MetricsMiddleware` answers `/metrics` right after
`HealthCheckMiddleware`, before ALLOWED_HOSTS is enforced and before the HTTPS redirect. It
builds no URLs from the Host header, so skipping that check opens nothing. When the
`METRICS_TOKEN` setting is set, the scraper must send `Authorization: Bearer <token>`;
otherwise restrict `/metrics` at the proxy. docs/operations.md describes the metrics for
operators.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import Error as DatabaseError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conference.early import EarlyAnswerMiddleware

logger = logging.getLogger(__name__)

PATH = "/metrics"

REGISTRY = CollectorRegistry()

# --- Per-process metrics, for the rest of the code to update ----------------------------------
# Latencies of a join or a negotiation: tens of milliseconds normally, seconds when the database
# or the media server is slow.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

JOINS = Counter("conference_joins", "Room joins by outcome", ["outcome"], registry=REGISTRY)
JOIN_SECONDS = Histogram(
    "conference_join_seconds",
    "Time from WebSocket connect to the room snapshot sent",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
NEGOTIATION_SECONDS = Histogram(
    "conference_negotiation_seconds",
    "publish/subscribe request to SDP answer",
    ["kind"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
MEDIA_SERVER_RECONNECTS = Counter(
    "conference_media_server_reconnects",
    "Reconnections of this worker to a media server",
    ["server"],
    registry=REGISTRY,
)
MEDIA_SERVER_SESSIONS_LOST = Counter(
    "conference_media_server_sessions_lost",
    "Media server sessions found gone on reconnect (server restarted)",
    ["server"],
    registry=REGISTRY,
)
ROOM_MEDIA_REBUILDS = Counter(
    "conference_room_media_rebuilds",
    "Rooms whose media was rebuilt",
    ["reason"],
    registry=REGISTRY,
)
SIGNALING_ERRORS = Counter(
    "conference_signaling_errors", "Error replies sent to browsers", ["code"], registry=REGISTRY
)
SIGNALING_MESSAGES_DROPPED = Counter(
    "conference_signaling_messages_dropped",
    "Inbound messages dropped on arrival",
    ["reason"],
    registry=REGISTRY,
)
CONSUMER_CRASHES = Counter(
    "conference_consumer_crashes",
    "Unexpected exceptions caught in a signaling consumer (room or connection test)",
    registry=REGISTRY,
)

# What the default registry has too: process (CPU, memory, file descriptors, start time) and
# platform (Python version). New instances, registered on REGISTRY only.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


# --- Gauges read from the database at scrape time --------------------------------------------
@dataclass
class DatabaseSnapshot:
    """What the database says at one instant (three aggregate queries)."""

    rooms: int = 0
    rooms_open: int = 0
    rooms_in_call: int = 0
    participants_connected: int = 0
    # Media server URL -> count.
    pipelines: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, int] = field(default_factory=dict)


def read_database() -> DatabaseSnapshot:
    """Count rooms, participants, pipelines and endpoints. Sync: call it from a thread."""
    # Imported here, not at the top: any module may import this one for its counters, including
    # while Django loads the apps, before models can be imported.
    from rooms.models import Participant, Room
    from signaling.models import RoomPipeline

    rooms = Room.objects.aggregate(
        total=Count("pk"),
        open=Count("pk", filter=Q(closed_at__isnull=True)),
        # One pipeline per room at most (one-to-one), so the join does not multiply rows.
        in_call=Count("pipeline"),
    )
    participants = Participant.objects.filter(state=Participant.State.CONNECTED).count()
    # Pipelines of deleted rooms (room unset) count too: they live on the media server until
    # swept. The endpoint join multiplies pipeline rows, hence the distinct count.
    per_server = (
        RoomPipeline.objects.order_by()
        .values("server_url")
        .annotate(pipelines=Count("pk", distinct=True), endpoints=Count("endpoints"))
    )
    snapshot = DatabaseSnapshot(
        rooms=rooms["total"],
        rooms_open=rooms["open"],
        rooms_in_call=rooms["in_call"],
        participants_connected=participants,
    )
    # Configured servers without a pipeline report 0, so their series exist from the start.
    for url in settings.KMS_URLS:
        snapshot.pipelines[url] = 0
        snapshot.endpoints[url] = 0
    for row in per_server:
        snapshot.pipelines[row["server_url"]] = row["pipelines"]
        snapshot.endpoints[row["server_url"]] = row["endpoints"]
    return snapshot


class DatabaseCollector(Collector):
    """Gauges from the database, read on each scrape. When the database fails the scrape still
    answers: without these gauges, and with `conference_metrics_database_up 0`."""

    def _families(
        self, snapshot: DatabaseSnapshot | None
    ) -> tuple[GaugeMetricFamily, list[GaugeMetricFamily]]:
        up = GaugeMetricFamily(
            "conference_metrics_database_up",
            "Whether this scrape could read the database (1) or not (0)",
        )
        rooms = GaugeMetricFamily("conference_rooms", "Rooms, closed or not")
        rooms_open = GaugeMetricFamily("conference_rooms_open", "Rooms not closed")
        rooms_in_call = GaugeMetricFamily(
            "conference_rooms_in_call", "Rooms with a live call (a media pipeline)"
        )
        participants = GaugeMetricFamily(
            "conference_participants_connected", "Participants in the connected state"
        )
        pipelines = GaugeMetricFamily(
            "conference_media_pipelines", "Media pipelines per media server", labels=["server"]
        )
        endpoints = GaugeMetricFamily(
            "conference_media_endpoints",
            "WebRTC endpoints per media server (publishing and receiving)",
            labels=["server"],
        )
        data = [rooms, rooms_open, rooms_in_call, participants, pipelines, endpoints]
        if snapshot is not None:
            rooms.add_metric([], snapshot.rooms)
            rooms_open.add_metric([], snapshot.rooms_open)
            rooms_in_call.add_metric([], snapshot.rooms_in_call)
            participants.add_metric([], snapshot.participants_connected)
            for url, count in sorted(snapshot.pipelines.items()):
                pipelines.add_metric([url], count)
            for url, count in sorted(snapshot.endpoints.items()):
                endpoints.add_metric([url], count)
        return up, data

    def describe(self) -> Iterable[Metric]:
        # Names only, for the registry's duplicate check: no database access at registration.
        up, data = self._families(None)
        return [up, *data]

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = read_database()
        except DatabaseError as exc:
            # Logged at each failing scrape (every scrape interval): the database is down, which
            # other logs and /healthz report too.
            logger.warning("metrics: cannot read the database: %s: %s", type(exc).__name__, exc)
            up, _ = self._families(None)
            up.add_metric([], 0)
            return [up]
        up, data = self._families(snapshot)
        up.add_metric([], 1)
        return [up, *data]


REGISTRY.register(DatabaseCollector())


# --- The endpoint ----------------------------------------------------------------------------
def _authorized(request: HttpRequest) -> bool:
    """No token configured: open. Otherwise `Authorization: Bearer <token>` must match."""
    token: str = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return True
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Bytes: compare_digest refuses non-ASCII str, and a header may carry any (Latin-1) text.
    return secrets.compare_digest(credentials.strip().encode(), token.encode())


def render() -> bytes:
    """The text exposition of REGISTRY. Sync (the database collector queries): call from a
    thread."""
    return generate_latest(REGISTRY)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    elif not _authorized(request):
        response = HttpResponse(
            "Unauthorized\n",
            status=401,
            content_type="text/plain; charset=utf-8",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    else:
        # The request's own database thread (thread-sensitive), so that Django closes (or
        # returns to the pool) the connection when the request finishes, as for views.
        body = await sync_to_async(render)()
        response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    add_never_cache_headers(response)
    return response


class MetricsMiddleware(EarlyAnswerMiddleware):
    """Answers `/metrics` ahead of the rest of the middleware (see the module docstring)."""

    path = PATH

    async def answer(self, request: HttpRequest) -> HttpResponse:
        return await metrics_view(request)
