"""The exporter's Redis queries: queue sizes and latency, retry / scheduled / dead set sizes, and whether Redis
answers (for /healthz). One thread of the exporter process polls every POLL_EVERY seconds into the
MetricsState, so a scrape reads a cached snapshot and never waits on Redis.

Queue names come from the daemon's -q queues and the `queues` set (at most MAX_QUEUES in all: the label set
stays bounded whatever Redis holds). Names are bytes of any kind: keys are built from the bytes, labels are
the names decoded with undecodable bytes escaped. A queue whose oldest payload cannot be read has latency 0.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import redis

from ...core import keys
from ...core.connection import make_client

log = logging.getLogger("sidepunch.metrics")

POLL_EVERY = 1.0
MAX_QUEUES = 200
MAX_NAME = 200


class RedisPoller:
    """Polls Redis into `state` (a collect.MetricsState) until the process exits."""

    def __init__(self, config: Any, state: Any, stop: threading.Event | None = None) -> None:
        self.config = config
        self.state = state
        self.stop = stop or threading.Event()

    def run(self) -> None:
        client = make_client(self.config.redis_url, max_connections=2)
        while not self.stop.is_set():
            self.poll(client)
            self.stop.wait(POLL_EVERY)

    def poll(self, client: Any) -> None:
        try:
            snapshot = query(client, [q.name for q in self.config.queues])
        except redis.RedisError as exc:
            with self.state.lock:
                self.state.redis_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                self.state.redis = {**self.state.redis, "up": False}
            return
        with self.state.lock:
            self.state.redis, self.state.redis_ok_at, self.state.redis_error = snapshot, time.monotonic(), ""


def query(client: Any, configured: list[str]) -> dict[str, Any]:
    """One snapshot: {"up", "queues": {label: (size, latency)}, "retry", "scheduled", "dead"}."""
    names: list[bytes] = [name.encode("utf-8", "surrogateescape") for name in configured]
    known = set(names)
    try:
        members = client.smembers(keys.QUEUES)
    except redis.ResponseError:  # another type under `queues`: Redis answers; only the configured are measured
        members = set()
    for name in sorted(members):
        if len(names) >= MAX_QUEUES:
            break
        if name not in known:
            names.append(name)
            known.add(name)
    pipe = client.pipeline(transaction=False)
    for name in names:
        key = keys.queue(name)
        pipe.llen(key)
        pipe.lindex(key, -1)
    pipe.zcard(keys.RETRY)
    pipe.zcard(keys.SCHEDULE)
    pipe.zcard(keys.DEAD)
    replies = pipe.execute(raise_on_error=False)  # a key of another type answers an error: counted as empty
    for reply in replies:
        if isinstance(reply, redis.ConnectionError):
            raise reply
    now = time.time()
    queues = {}
    for index, name in enumerate(names):
        size, oldest = replies[2 * index], replies[2 * index + 1]
        label = keys.printable(name)[:MAX_NAME]
        queues[label] = (size if type(size) is int else 0, latency(oldest, now))
    retry, scheduled, dead = (n if type(n) is int else 0 for n in replies[-3:])
    return {"up": True, "queues": queues, "retry": retry, "scheduled": scheduled, "dead": dead}


def latency(payload: Any, now: float) -> float:
    """Seconds since the payload's enqueued_at (0 if it has none that makes sense)."""
    if type(payload) is not bytes:
        return 0.0
    try:
        enqueued = json.loads(payload).get("enqueued_at")
    except (ValueError, AttributeError, RecursionError):
        return 0.0
    if type(enqueued) not in (int, float):
        return 0.0
    try:
        enqueued = float(enqueued)
    except OverflowError:
        return 0.0
    if not math.isfinite(enqueued):
        return 0.0
    if enqueued > 1e11:  # Sidekiq 7 writes milliseconds
        enqueued /= 1000.0
    return max(0.0, now - enqueued)
