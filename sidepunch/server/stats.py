"""In-memory job counters, per-class execution metrics and the table of running jobs, all read by the heartbeat.

Processor threads (and the async recorder) count here instead of writing to Redis per job; the heartbeat
flushes the counts and the metrics. Recording a job is one lock acquisition and a few dict/list operations.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from ..core.keys import METRICS_BUCKET_BOUNDS

BUCKET_BOUNDS = METRICS_BUCKET_BOUNDS
BUCKETS = len(BUCKET_BOUNDS) + 1
#: Distinct class names one process tallies in its life; more are counted under OTHER_CLASSES, so a flood of
#: made-up class names (jobs of unknown classes still run, and fail) cannot grow the worker's memory or the
#: metrics hashes without bound.
MAX_CLASSES = 1000
OTHER_CLASSES = "(other classes)"
MAX_CLASS_CHARS = 200


def class_label(klass: Any) -> str:
    """The name a job is tallied under: its class (a str, at most MAX_CLASS_CHARS) or a marker."""
    if type(klass) is not str:
        return "(not a string)"
    return klass if len(klass) <= MAX_CLASS_CHARS else klass[:MAX_CLASS_CHARS] + "..."


#: class -> [executions, failures, seconds, histogram counts (BUCKETS ints)]
Tallies = dict[str, list[Any]]


def merge_tallies(into: Tallies, more: Tallies) -> None:
    """Add `more` into `into`, keeping to MAX_CLASSES names (the rest go to OTHER_CLASSES)."""
    for klass, (count, failed, seconds, hist) in more.items():
        if klass not in into and len(into) >= MAX_CLASSES:
            klass = OTHER_CLASSES
        row = into.get(klass)
        if row is None:
            into[klass] = [count, failed, seconds, list(hist)]
            continue
        row[0] += count
        row[1] += failed
        row[2] += seconds
        row[3] = [a + b for a, b in zip(row[3], hist)]


class Counters:
    """processed counts every execution, failed only failures (Sidekiq's rule); with a class, the execution
    is also tallied per class (count, failures, time and its histogram bucket) for the metrics flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed = 0
        self.failed = 0
        self.events: dict[str, int] = {}  # kind (a key of keys.STAT_EVENTS) -> count since the last flush
        self.total_processed = 0  # all-time counts of this process, never handed to the flusher
        self.total_failed = 0
        self._tallies: Tallies = {}
        self._known: set[str] = set()  # class names tallied so far (at most MAX_CLASSES)

    def record(self, failed: bool, cancelled: bool = False, klass: Any = None, seconds: float = 0.0,
               queue: str | None = None) -> None:
        """Count one execution; `queue` is for the metrics' MeteredCounters (observe/tally.py) only."""
        if klass is not None and (type(klass) is not str or len(klass) > MAX_CLASS_CHARS):
            klass = class_label(klass)
        with self._lock:
            self.processed += 1
            self.total_processed += 1
            if failed:
                self.failed += 1
                self.total_failed += 1
            if cancelled:
                self.events["cancelled"] = self.events.get("cancelled", 0) + 1
            if klass is not None:
                row = self._tallies.get(klass) or self._new_row(klass)
                row[0] += 1
                if failed:
                    row[1] += 1
                row[2] += seconds
                row[3][bisect_right(BUCKET_BOUNDS, seconds)] += 1

    def _new_row(self, klass: str) -> list[Any]:
        """Called under the lock, once per class and flush."""
        if klass not in self._known:
            if len(self._known) >= MAX_CLASSES:
                klass = OTHER_CLASSES
                if klass in self._tallies:
                    return self._tallies[klass]
            else:
                self._known.add(klass)
        row = self._tallies[klass] = [0, 0, 0.0, [0] * BUCKETS]
        return row

    def take_tallies(self) -> Tallies:
        """Hand the per-class tallies to the flusher; `give_back_tallies` if the flush fails."""
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        return tallies

    def give_back_tallies(self, tallies: Tallies) -> None:
        with self._lock:
            merge_tallies(self._tallies, tallies)

    def event(self, kind: str) -> None:
        """Count a job that ended in a way of its own (a key of keys.STAT_EVENTS: "expired", "rate_limited";
        "cancelled" comes through record), without an execution: flushed to its stat key."""
        with self._lock:
            self.events[kind] = self.events.get(kind, 0) + 1

    def take(self) -> tuple[int, int, dict[str, int]]:
        """Hand the counts (processed, failed, events by kind) to the flusher; `give_back` if the flush fails."""
        with self._lock:
            counts = (self.processed, self.failed, self.events)
            self.processed = self.failed = 0
            self.events = {}
        return counts

    def give_back(self, processed: int, failed: int, events: dict[str, int] | None = None) -> None:
        with self._lock:
            self.processed += processed
            self.failed += failed
            for kind, n in (events or {}).items():
                self.events[kind] = self.events.get(kind, 0) + n


@dataclass(frozen=True)
class Work:
    queue: str
    payload: bytes
    run_at: int


class WorkTable:
    """tid -> the job running under that name: a processor thread's `p<n>`, or an async job's `a<n>`. Dict
    operations are atomic under the GIL. A start stores a plain tuple (queue, payload, time); the `Work`
    records are built only when the heartbeat or a dump asks, not once per job."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[str, bytes, float]] = {}

    def start(self, tid: str, queue: str, payload: bytes) -> None:
        self._running[tid] = (queue, payload, time.time())

    def finish(self, tid: str) -> None:
        self._running.pop(tid, None)

    def snapshot(self) -> dict[str, Work]:
        return {tid: Work(queue, payload, int(at)) for tid, (queue, payload, at) in dict(self._running).items()}

    def __len__(self) -> int:
        return len(self._running)
