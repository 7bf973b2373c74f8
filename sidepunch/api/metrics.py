"""Per-class execution metrics over a recent window, for the admin API and the dashboard's /metrics pages.

Owns reading what the heartbeat flushes into `sidepunch:metrics:*` (keys.py): per job class, runs, failures
and total execution time per slot, and an execution-time histogram. Windows of up to 8 hours read the minute
slots, longer ones the 10-minute slots; a window is the current (partial) slot and the slots before it. A job
is counted in the slot of the heartbeat that flushed it (at most ~5 s after it ended). Redis data is hostile
input: a key of another type, a field not of our shape or a count that is not a whole number reads as nothing.
Reading never writes.

Must not import: sidepunch.server or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import redis

from ..core import keys
from .records import jsonable, name_key, name_of

#: The windows offered, in hours (Sidekiq 7's choices).
WINDOWS = (1, 2, 4, 8, 24, 48, 72)
#: Windows up to this many hours read minute slots; longer ones 10-minute slots.
MINUTE_HOURS = 8
_KINDS = {b"p": 0, b"f": 1, b"ms": 2}


def _count(raw: Any) -> int:
    """A counter written by HINCRBY; anything else (not a whole number, over 30 digits) is 0."""
    text = raw.strip() if isinstance(raw, bytes) else b""
    return int(text) if text.isdigit() and len(text) <= 30 else 0


@dataclass(frozen=True)
class Totals:
    """Runs (failed ones included), failures and total execution time (ms) of one class, or one slot."""

    processed: int = 0
    failed: int = 0
    total_ms: int = 0

    @property
    def avg_ms(self) -> float | None:
        return self.total_ms / self.processed if self.processed else None

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(self.processed + other.processed, self.failed + other.failed, self.total_ms + other.total_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"processed": self.processed, "failed": self.failed, "total_ms": self.total_ms,
                "avg_ms": self.avg_ms}


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"class": self.name, **self.totals.to_dict()})


@dataclass(frozen=True)
class Bucket:
    """One histogram bar: executions that took at least `low_ms` and less than `high_ms` (None: no bound)."""

    low_ms: float
    high_ms: float | None
    count: int

    @property
    def label(self) -> str:
        def fmt(ms: float) -> str:
            return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"
        return f"≥ {fmt(self.low_ms)}" if self.high_ms is None else f"< {fmt(self.high_ms)}"


@dataclass(frozen=True)
class ClassReport:
    """One class over a window: its totals, a time series (slot start epoch, Totals) and its histogram."""

    name: str
    hours: int
    step: int
    totals: Totals
    series: list[tuple[float, Totals]]
    histogram: list[Bucket]

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"class": self.name, "hours": self.hours, "step": self.step, **self.totals.to_dict(),
                         "series": [{"start": s, **t.to_dict()} for s, t in self.series],
                         "histogram": [{"low_ms": b.low_ms, "high_ms": b.high_ms, "count": b.count}
                                       for b in self.histogram]})


def check_window(hours: int) -> int:
    if hours not in WINDOWS:
        raise ValueError(f"a metrics window is one of {', '.join(map(str, WINDOWS))} hours, not {hours!r}")
    return hours


class Metrics:
    """Reads the metrics keys; `classes(hours)` for the overview, `job_class(name, hours)` for one class."""

    def __init__(self, redis: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock

    def slots(self, hours: int) -> tuple[int, list[tuple[float, str]]]:
        """(slot length in seconds, [(slot start epoch, slot stamp)] oldest first, ending with the current)."""
        step = 60 if check_window(hours) <= MINUTE_HOURS else 600
        current = self.clock() // step * step
        starts = [current - i * step for i in range(hours * 3600 // step - 1, -1, -1)]
        return step, [(start, keys.metrics_slot(start, step)) for start in starts]

    def classes(self, hours: int) -> list[ClassMetrics]:
        """Every class that ran in the window, the most total execution time first (then by name)."""
        step, slots = self.slots(hours)
        pipe = self.redis.pipeline(transaction=False)
        for _, slot in slots:
            pipe.hgetall(keys.metrics_jobs(step, slot))
        sums: dict[bytes, list[int]] = {}
        for reply in pipe.execute(raise_on_error=False):
            if not isinstance(reply, dict):  # no such key reads as {}; an error reply is a key of another type
                continue
            for field, value in reply.items():
                name, bar, kind = field.rpartition(b"|")
                if bar and kind in _KINDS:
                    sums.setdefault(name, [0, 0, 0])[_KINDS[kind]] += _count(value)
        rows = [ClassMetrics(name_of(name), Totals(*v)) for name, v in sums.items() if v[0] or v[1] or v[2]]
        return sorted(rows, key=lambda m: (-m.totals.total_ms, m.name))

    def job_class(self, name: str, hours: int) -> ClassReport:
        """One class (a name as `classes` gives it) over the window: totals, series and histogram."""
        step, slots = self.slots(hours)
        raw = name_key(name)
        pipe = self.redis.pipeline(transaction=False)
        for _, slot in slots:
            pipe.hmget(keys.metrics_jobs(step, slot), [raw + b"|p", raw + b"|f", raw + b"|ms"])
            pipe.hgetall(keys.metrics_histogram(step, slot, raw))
        replies = pipe.execute(raise_on_error=False)
        series, counts = [], [0] * (len(keys.METRICS_BUCKET_BOUNDS) + 1)
        for i, (start, _) in enumerate(slots):
            row, hist = replies[2 * i], replies[2 * i + 1]
            row = row if isinstance(row, list) else [None] * 3
            series.append((start, Totals(*map(_count, row))))
            if isinstance(hist, dict):
                _add_histogram(counts, hist)
        totals = sum((t for _, t in series), Totals())
        return ClassReport(name, hours, step, totals, series, histogram(counts))


def _add_histogram(counts: list[int], hist: dict[bytes, bytes]) -> None:
    """Add one slot's histogram hash; a field that is not a bucket index of ours is ignored."""
    for bucket, value in hist.items():
        index = bucket.strip()
        if index.isdigit() and len(index) < 4 and int(index) < len(counts):
            counts[int(index)] += _count(value)


def histogram(counts: list[int]) -> list[Bucket]:
    bounds = [b * 1000 for b in keys.METRICS_BUCKET_BOUNDS]
    lows = [0.0] + bounds
    highs: list[float | None] = [*bounds, None]
    return [Bucket(low, high, n) for low, high, n in zip(lows, highs, counts)]
