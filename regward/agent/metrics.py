"""The agent's Prometheus metrics, on `regward agent run --metrics-listen HOST:PORT` (off by
default; keep it on loopback or a monitoring network: the figures name registries' owners'
organization and revision, nothing secret, but nothing for the world either).

    regward_agent_decisions_total{point,result}          point: authz, proxy (and any later
                                                         enforcement point); result: allowed,
                                                         denied
    regward_agent_decision_duration_seconds{point}       time to decide, histogram
    regward_agent_policy_revision                        the revision enforced (0: none)
    regward_agent_seconds_since_last_sync                since the server last answered a sync
                                                         (absent until it has)
    regward_agent_proxy_connections_open                 the egress proxy's open connections
    regward_agent_proxy_bytes_relayed_total{direction}   upstream (client to registry),
                                                         downstream (registry to client)
    regward_agent_denial_reports_queued                  denials waiting to be reported
    regward_agent_denial_reports_dropped_total           denials dropped from a full queue

prometheus_client's own HTTP server serves them from a thread of its own, so a scrape never
waits for the event loop, nor the loop for a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from regward.agent.guard import Guard
from regward.errors import ConfigError

# A decision is a few dictionary lookups: microseconds, unless something is wrong.
BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1.0)


@dataclass
class Sources:
    """Where the figures read at each scrape come from (None: that part is not running)."""

    guard: Guard
    last_sync: Callable[[], float | None]  # time.time() of the last successful sync
    proxy: Callable[[], Any] = lambda: None  # the ProxyServer, when it runs


class AgentMetrics:
    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "regward_agent_decisions",
            "Decisions by enforcement point and result",
            ["point", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "regward_agent_decision_duration_seconds",
            "Time to decide, by enforcement point",
            ["point"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Figures(sources))
        sources.guard.observer = self.decided
        self._server: Any = None

    def decided(self, point: str, allowed: bool, seconds: float) -> None:
        self.decisions.labels(point, "allowed" if allowed else "denied").inc()
        self.duration.labels(point).observe(seconds)

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics on host:port from a thread; returns the address bound."""
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise ConfigError(
                f"--metrics-listen {host}:{port}: cannot listen ({error.strerror}); "
                "pick another address"
            ) from None
        bound: tuple[str, int] = self._server.server_address[:2]
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Figures(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        guard = self.sources.guard
        policy = guard.enforcement.policy
        yield GaugeMetricFamily(
            "regward_agent_policy_revision",
            "The policy revision enforced (0: none)",
            value=policy.revision if policy else 0,
        )
        last_sync = self.sources.last_sync()
        if last_sync is not None:
            yield GaugeMetricFamily(
                "regward_agent_seconds_since_last_sync",
                "Seconds since the server last answered a policy sync",
                value=max(0.0, time.time() - last_sync),
            )
        proxy = self.sources.proxy()
        if proxy is not None:
            yield GaugeMetricFamily(
                "regward_agent_proxy_connections_open",
                "Open connections of the egress proxy",
                value=proxy.connections,
            )
            relayed = CounterMetricFamily(
                "regward_agent_proxy_bytes_relayed",
                "Bytes the egress proxy relayed",
                labels=["direction"],
            )
            up, down = proxy.bytes_relayed()
            relayed.add_metric(["upstream"], up)
            relayed.add_metric(["downstream"], down)
            yield relayed
        yield GaugeMetricFamily(
            "regward_agent_denial_reports_queued",
            "Denial reports waiting to be sent",
            value=len(guard.denials),
        )
        yield CounterMetricFamily(
            "regward_agent_denial_reports_dropped",
            "Denial reports dropped because the queue was full",
            value=guard.denials.dropped,
        )
