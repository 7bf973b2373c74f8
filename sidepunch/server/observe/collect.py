"""The exporter's view of the daemon (`MetricsState`, fed by the master and the Redis poller), the Prometheus
metrics made from it (`render`; the names and labels are a contract, see docs/observability.md) and the health
verdict (`health`). Imported only in the exporter process: prometheus_client is imported here.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ..stats import BUCKET_BOUNDS
from .tally import EVENTS, Totals

#: /healthz fails when the master has sent nothing for this long (it sends twice a second).
MASTER_SILENT = 5.0


class MetricsState:
    """What the exporter knows; the feed reader and the Redis poller write it, HTTP threads read it."""

    def __init__(self, started: float, redis_grace: float = 5.0) -> None:
        self.lock = threading.Lock()
        self.redis_grace = redis_grace
        self.totals = Totals()
        self.master: dict[str, Any] = {}
        self.master_at: float | None = None
        self.redis: dict[str, Any] = {}        # RedisPoller's last snapshot
        self.redis_ok_at = started             # monotonic time of the last answer (start counts as one)
        self.redis_error = ""
        self.registry: CollectorRegistry | None = None

    def apply(self, kind: str, body: bytes) -> None:
        """One line from the master: "tally <json>" or "state <json>" (anything else is ignored)."""
        with self.lock:
            if kind == "tally":
                self.totals.add_line(body)
            elif kind == "state":
                try:
                    state = json.loads(body)
                except ValueError:
                    return
                if isinstance(state, dict):
                    self.master, self.master_at = state, time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"rows": {k: [v[0], v[1], v[2], dict(v[3])] for k, v in self.totals.rows.items()},
                    "events": dict(self.totals.events), "master": dict(self.master),
                    "redis": {**self.redis, "up": time.monotonic() - self.redis_ok_at <= self.redis_grace
                              and self.redis.get("up", False)}}


def health(state: MetricsState, now: float, config: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for /healthz: 200 while the master supervises, a worker heartbeats and Redis
    answers; else 503 with the reasons."""
    with state.lock:
        master, master_at = dict(state.master), state.master_at
        redis_ok_at, redis_error = state.redis_ok_at, state.redis_error
    reasons = []
    if master_at is None or now - master_at > MASTER_SILENT:
        reasons.append("the master is not supervising (no word from it)")
    elif master.get("stopping"):
        reasons.append("the daemon is stopping")
    elif not master.get("beating"):
        reasons.append(f"no worker is alive and heartbeating ({master.get('workers', 0)} worker process(es))")
    silent = now - redis_ok_at
    if silent > config.healthz_redis_grace:
        reasons.append(f"Redis has not answered for {silent:.0f}s: {redis_error}"[:500])
    body = {"status": "unhealthy" if reasons else "ok", "workers": master.get("workers", 0),
            "heartbeating": master.get("beating", 0)}
    if reasons:
        body.update(reason=reasons[0], reasons=reasons)
        return 503, body
    return 200, body


def render(state: MetricsState, accept: str | None) -> tuple[bytes, str]:
    """The metrics in the format the scraper accepts (Prometheus text, or OpenMetrics), and its content type."""
    if state.registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(state))
        state.registry = registry
    encoder, kind = choose_encoder(accept or "")
    return encoder(state.registry), kind


class _Collector:
    """Builds every metric family from one snapshot of the state, at each scrape."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        snap = self.state.snapshot()
        yield from _job_metrics(snap["rows"], snap["events"])
        yield from _master_metrics(snap["master"])
        yield from _redis_metrics(snap["redis"])


def _job_metrics(rows: dict[tuple[str, str], list[Any]], events: dict[str, int]) -> Iterator[Metric]:
    processed = CounterMetricFamily("sidepunch_jobs_processed", "Job executions (failures included), as "
                                    "Sidekiq's stat:processed counts them", labels=["class", "queue"])
    failed = CounterMetricFamily("sidepunch_jobs_failed", "Job executions that failed", labels=["class", "queue"])
    by_class: dict[str, list[Any]] = {}
    for (klass, queue), (count, fails, seconds, buckets) in sorted(rows.items()):
        processed.add_metric([klass, queue], count)
        failed.add_metric([klass, queue], fails)
        row = by_class.setdefault(klass, [0.0, [0] * (len(BUCKET_BOUNDS) + 1)])
        row[0] += seconds
        for index, n in buckets.items():
            row[1][index] += n
    yield processed
    yield failed
    for kind in EVENTS:
        yield CounterMetricFamily(f"sidepunch_jobs_{kind}", f"Jobs {kind.replace('_', '-')}",
                                  value=events.get(kind, 0))
    duration = HistogramMetricFamily("sidepunch_job_duration_seconds", "Job execution time", labels=["class"])
    for klass, (seconds, counts) in by_class.items():
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKET_BOUNDS, counts):
            cumulative += n
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", cumulative + counts[-1]))
        duration.add_metric([klass], buckets, sum_value=seconds)
    yield duration


def _master_metrics(master: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily("sidepunch_jobs_in_flight", "Jobs running now", value=_number(master.get("busy")))
    yield GaugeMetricFamily("sidepunch_workers", "Worker processes alive", value=_number(master.get("workers")))
    restarts = CounterMetricFamily("sidepunch_worker_restarts", "Worker processes replaced, by reason",
                                   labels=["reason"])
    for reason, n in sorted((master.get("restarts") or {}).items()):
        restarts.add_metric([str(reason)], _number(n))
    yield restarts


def _redis_metrics(redis: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily("sidepunch_redis_up", "1 if Redis answered within --healthz-redis-grace seconds",
                            value=1 if redis.get("up") else 0)
    size = GaugeMetricFamily("sidepunch_queue_size", "Jobs waiting in the queue", labels=["queue"])
    latency = GaugeMetricFamily("sidepunch_queue_latency_seconds", "Age of the oldest job in the queue",
                                labels=["queue"])
    for name, (length, age) in sorted((redis.get("queues") or {}).items()):
        size.add_metric([name], length)
        latency.add_metric([name], age)
    yield size
    yield latency
    for key, what in (("retry", "retry set"), ("scheduled", "schedule"), ("dead", "dead set")):
        if key in redis:
            yield GaugeMetricFamily(f"sidepunch_{key}_set_size", f"Jobs in the {what}", value=redis[key])


def _number(value: Any) -> float:
    return value if type(value) in (int, float) else 0
