"""What a broker tells Prometheus (``GET /metrics``): counters the service and monitor move,
and gauges (sessions by phase, quota used and held) read from the database at each scrape.

One registry per broker app, not prometheus-client's global one, so several apps in one
process (tests) count separately. No label carries a user or a session id: their number is
unbounded. NO answers are counted by the field their reason names (``cores``, ``start``...).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASON = re.compile(r"^([a-z_]+)(?:\[\d+\])?(?:\.[a-z_]+)*(?:\[\d+\])?\s*:")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_START_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def reason_label(reason: str) -> str:
    """The field a NO's reason is about, e.g. ``cores`` or ``data``; ``other`` if it names none."""
    found = _REASON.match(reason)
    return found.group(1) if found else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.offers = Counter(
            "execbroker_offers", "Offers, by what became of them", ["event"], registry=r
        )
        self.answers = Counter(
            "execbroker_answers", "Answers to requests, YES or NO", ["result"], registry=r
        )
        self.refusals = Counter(
            "execbroker_no_reasons",
            "Reasons given in NO answers, by the field they name",
            ["reason"],
            registry=r,
        )
        self.sessions_ended = Counter(
            "execbroker_sessions_ended",
            "Sessions that reached a final phase",
            ["phase"],
            registry=r,
        )
        self.platform_errors = Counter(
            "execbroker_platform_errors",
            "Calls to a platform that failed",
            ["platform", "operation"],
            registry=r,
        )
        self.accept_to_running = Histogram(
            "execbroker_accept_to_running_seconds",
            "From accept (or the granted start, if later) to running or available",
            buckets=_START_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "execbroker_http_request_seconds",
            "Time to answer an HTTP request, by route",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for event in ("made", "accepted", "rejected", "expired"):
            self.offers.labels(event)  # present (at 0) from the start, so rates have a base
        for result in ("YES", "NO"):
            self.answers.labels(result)
        # monotonic time of each accept in this process; read (and dropped) once it runs
        self._accepted: dict[str, float] = {}

    # -- events ---------------------------------------------------------------------------

    def answered(self, result: str, offers: int, reasons: Iterable[str]) -> None:
        self.answers.labels(result).inc()
        if offers:
            self.offers.labels("made").inc(offers)
        for reason in reasons:
            self.refusals.labels(reason_label(reason)).inc()

    def accepted(self, uuid: str, siblings_rejected: int) -> None:
        self.offers.labels("accepted").inc()
        if siblings_rejected:
            self.offers.labels("rejected").inc(siblings_rejected)
        self._accepted[uuid] = time.monotonic()

    def rejected(self) -> None:
        self.offers.labels("rejected").inc()

    def expired(self, count: int) -> None:
        if count:
            self.offers.labels("expired").inc(count)

    def running(self, uuid: str, waited: float | None = None) -> None:
        """A session reached RUNNING or AVAILABLE; ``waited`` counts from a later granted start."""
        accepted = self._accepted.pop(uuid, None)
        if accepted is None:
            return  # accepted before this process started: no honest figure
        seconds = time.monotonic() - accepted
        self.accept_to_running.observe(seconds if waited is None else min(seconds, waited))

    def ended(self, uuid: str, phase: str) -> None:
        self._accepted.pop(uuid, None)
        self.sessions_ended.labels(phase).inc()

    def platform_error(self, platform: str, operation: str) -> None:
        self.platform_errors.labels(platform, operation).inc()

    def add_gauges(self, read: Callable[[], dict[str, Any]]) -> None:
        """Gauges read at scrape time: ``read()`` gives phases, used, held and limit."""
        self.registry.register(_StateCollector(read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # read lazily: never query the database at registration

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        phases = GaugeMetricFamily(
            "execbroker_sessions", "Sessions (and offers) by phase now", labels=["phase"]
        )
        for phase, count in sorted(state["phases"].items()):
            phases.add_metric([phase], count)
        yield phases
        for name, help_text in (
            ("used", "Quota booked by accepted and running sessions now"),
            ("held", "Quota held by open offers now"),
            ("limit", "The broker's quota"),
        ):
            family = GaugeMetricFamily(f"execbroker_quota_{name}", help_text, labels=["resource"])
            for resource, amount in state[name].items():
                family.add_metric([resource], amount)
            yield family
