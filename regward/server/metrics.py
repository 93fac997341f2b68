"""The server's Prometheus metrics, at `GET /metrics` for whoever bears REGWARD_METRICS_TOKEN.

Without the setting, or without the token as `Authorization: Bearer TOKEN`, /metrics is 404:
the figures name every organization, so they are not for the world.

    regward_http_requests_total{method,route,status}     requests answered, by route template
    regward_http_request_duration_seconds{method,route}  time to the end of the answer
                                                         (a long-poll counts its hold)
    regward_feed_long_polls_held{organization}           feed requests this process holds now
    regward_policy_revision{organization}                the newest applied revision
    regward_policy_applies_total{organization}           Save & Apply count
    regward_devices{organization,state}                  current, outdated, refused, unprotected
    regward_denial_reports_total{organization}           blocked pulls agents reported
    regward_sign_in_failures_total                       wrong passwords (this process)
    regward_database_errors_total{kind}                  `unavailable` (503) or `error` (500)

Per organization figures come from the database at each scrape, so every server process on
one PostgreSQL reports the same; request, long-poll, sign-in and error figures are per process.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.exc import DBAPIError

from regward.server.runtime import Server, server_of
from regward.server.services import overview

log = logging.getLogger(__name__)
router = APIRouter()

# Seconds: quick API answers up to long-polls held for the longest wait (REGWARD_MAX_WAIT).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """One process's metrics, in a registry of its own (kept on `app.state.metrics`)."""

    def __init__(self, server: Server, sign_in_failures: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "regward_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "regward_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.database_errors = Counter(
            "regward_database_errors",
            "Database errors: unavailable (answered 503) or error (500)",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(_Figures(self, server, sign_in_failures))

    def observe(self, method: str, route: str, status: int, durations: list[float]) -> None:
        """Count requests answered alike, each taking one of `durations` (seconds)."""
        self.requests.labels(method, route, str(status)).inc(len(durations))
        histogram = self.duration.labels(method, route)
        for seconds in durations:
            histogram.observe(seconds)

    def database_error(self, unavailable: bool) -> None:
        self.database_errors.labels("unavailable" if unavailable else "error").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Figures(Collector):
    """Figures read when scraped: the database's, the notifier's, the sign-in limiter's."""

    def __init__(
        self, metrics: ServerMetrics, server: Server, sign_in_failures: Callable[[], int]
    ) -> None:
        self.metrics = metrics
        self.server = server
        self.sign_in_failures = sign_in_failures

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "regward_sign_in_failures", "Sign-ins refused for a wrong password (this process)"
        )
        failures.add_metric([], self.sign_in_failures())
        yield failures
        try:
            with self.server.database.session() as session:
                figures = overview.organizations(session)
        except DBAPIError as error:
            log.warning("metrics: the database did not answer: %s", error.orig)
            self.metrics.database_error(unavailable=True)
            return
        held = GaugeMetricFamily(
            "regward_feed_long_polls_held",
            "Feed long-polls this process holds now",
            labels=["organization"],
        )
        revision = GaugeMetricFamily(
            "regward_policy_revision", "The newest applied revision", labels=["organization"]
        )
        applies = CounterMetricFamily(
            "regward_policy_applies", "Save & Apply count", labels=["organization"]
        )
        devices = GaugeMetricFamily(
            "regward_devices",
            "Devices by compliance: current, outdated, refused, unprotected",
            labels=["organization", "state"],
        )
        denials = CounterMetricFamily(
            "regward_denial_reports",
            "Blocked pulls and pushes reported by agents",
            labels=["organization"],
        )
        for org in figures:
            held.add_metric([org.name], self.server.notifier.waiting(org.name))
            revision.add_metric([org.name], org.revision)
            applies.add_metric([org.name], org.applies)
            denials.add_metric([org.name], org.denial_reports)
            for state, count in sorted(org.devices.items()):
                devices.add_metric([org.name, state], count)
        yield from (held, revision, applies, devices, denials)


_NOT_FOUND = {"detail": "Not Found"}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    expected = server_of(request).settings.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), expected.encode())
    ):
        return JSONResponse(_NOT_FOUND, status_code=404)
    registry: ServerMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
