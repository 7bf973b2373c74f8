"""Job counts for the metrics: what a worker tallies per (class, queue) and how it travels to the master.

A worker's `MeteredCounters` (a stats.Counters that also keeps a pending tally) is drained into "tally" lines
written to the master's status pipe (`flush`), which acks.py calls just before each acknowledgement is sent:
a job is counted by the master before Redis forgets it. Each line is JSON, shorter than PIPE_BUF (so a write to
the pipe is whole or nothing); a line the pipe cannot take now stays pending. `Totals` is the master's (and
the exporter's) sum of every line heard; labels are bounded (MAX_CLASSES classes, MAX_QUEUES queues).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import threading
from bisect import bisect_right
from typing import Any, Callable, Iterator

from ..stats import BUCKET_BOUNDS, BUCKETS, MAX_CLASS_CHARS, MAX_CLASSES, OTHER_CLASSES, Counters, class_label

#: Queue label values kept; more are summed under OTHER_QUEUES (workers only report their own -q queues).
MAX_QUEUES = 200
OTHER_QUEUES = "(other queues)"
#: Events counted without a label (job endings that are not executions, and where failures went).
EVENTS = ("retried", "dead", "expired", "rate_limited", "cancelled")
#: A line stays under PIPE_BUF (4096 on Linux): writes up to it are atomic on a pipe.
MAX_LINE = 3800
#: (class, queue) -> [executions, failures, seconds, {bucket index: count}]
Rows = dict[tuple[str, str], list[Any]]


def _add_row(rows: Rows, key: tuple[str, str], count: int, failed: int, seconds: float,
             buckets: dict[int, int]) -> None:
    row = rows.get(key)
    if row is None:
        rows[key] = [count, failed, seconds, dict(buckets)]
        return
    row[0] += count
    row[1] += failed
    row[2] += seconds
    for index, n in buckets.items():
        row[3][index] = row[3].get(index, 0) + n


def encode(rows: Rows, events: dict[str, int]) -> Iterator[bytes]:
    """The tally as "tally <json>" lines, each under MAX_LINE bytes. A row's size is bounded from above (names
    at most ~200 characters, each escaped in at most 12 bytes: a surrogate pair), so one dumps per line suffices."""
    batch: list[Any] = []
    size = 0
    for (klass, queue), (count, failed, seconds, buckets) in rows.items():
        bound = 12 * (len(klass) + len(queue)) + 80 + 16 * len(buckets)
        if batch and size + bound > MAX_LINE - 100:
            yield _line(batch, {})
            batch, size = [], 0
        batch.append([klass, queue, count, failed, round(seconds, 6), [[i, n] for i, n in buckets.items()]])
        size += bound
    if batch or events:
        yield _line(batch, events)


def _line(batch: list[Any], events: dict[str, int]) -> bytes:
    return b"tally " + json.dumps({"r": batch, "e": events}, separators=(",", ":")).encode() + b"\n"


class MeteredCounters(Counters):
    """Counters that also keep, per (class, queue), what has not yet been written to the master."""

    def __init__(self) -> None:
        super().__init__()
        self._meter_lock = threading.Lock()
        self._rows: Rows = {}
        self._events: dict[str, int] = {}
        self._classes: set[str] = set()
        self._unsent: list[bytes] = []
        #: Writes one line to the master; False if it could not now (set by the launcher).
        self.report: Callable[[bytes], bool] | None = None

    def record(self, failed: bool, cancelled: bool = False, klass: Any = None, seconds: float = 0.0,
               queue: str | None = None) -> None:
        super().record(failed, cancelled, klass, seconds, queue)
        label = klass if type(klass) is str and len(klass) <= MAX_CLASS_CHARS else class_label(klass)
        bucket = bisect_right(BUCKET_BOUNDS, seconds)
        with self._meter_lock:
            if label not in self._classes:
                if len(self._classes) >= MAX_CLASSES:
                    label = OTHER_CLASSES
                else:
                    self._classes.add(label)
            _add_row(self._rows, (label, queue or ""), 1, int(failed), seconds, {bucket: 1})
            if cancelled:
                self._events["cancelled"] = self._events.get("cancelled", 0) + 1

    def event(self, kind: str) -> None:
        super().event(kind)
        self.note(kind)

    def note(self, kind: str) -> None:
        """Count an event for the metrics only (no Redis stat key): "retried", "dead"."""
        with self._meter_lock:
            self._events[kind] = self._events.get(kind, 0) + 1

    def flush(self) -> None:
        """Write what is pending to the master (called just before acknowledgements are sent). Lines the pipe
        cannot take now are kept for the next flush; meanwhile new counts add up in the (bounded) rows."""
        with self._meter_lock:
            if not self._unsent and (self._rows or self._events):
                self._unsent = list(encode(self._rows, self._events))
                self._rows, self._events = {}, {}
            report = self.report
            if report is None:  # no master to tell (an embedded Manager)
                self._unsent = []
            while self._unsent and report is not None and report(self._unsent[0]):
                del self._unsent[0]


class Totals:
    """The sum of every tally line heard: by (class, queue), events, and by class for the histogram."""

    def __init__(self) -> None:
        self.rows: Rows = {}
        self.events: dict[str, int] = {}
        self._classes: set[str] = set()
        self._queues: set[str] = set()

    def add_line(self, text: str | bytes) -> bool:
        """Add one line's JSON (what follows "tally "); False (nothing added) if it is not a valid tally."""
        try:
            data = json.loads(text)
            rows = [_checked_row(item) for item in data["r"]]
            events = {k: int(v) for k, v in data["e"].items() if k in EVENTS and type(v) is int and v >= 0}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return False
        for klass, queue, count, failed, seconds, buckets in rows:
            _add_row(self.rows, (self._bound(klass, self._classes, MAX_CLASSES, OTHER_CLASSES),
                                 self._bound(queue, self._queues, MAX_QUEUES, OTHER_QUEUES)),
                     count, failed, seconds, buckets)
        for kind, n in events.items():
            self.events[kind] = self.events.get(kind, 0) + n
        return True

    @staticmethod
    def _bound(name: str, seen: set[str], most: int, other: str) -> str:
        if name in seen:
            return name
        if len(seen) >= most:
            return other
        seen.add(name)
        return name

    def lines(self) -> list[bytes]:
        """Everything as tally lines (from zero): what a new exporter is fed first."""
        return list(encode(self.rows, self.events))


def _checked_row(item: Any) -> tuple[str, str, int, int, float, dict[int, int]]:
    """One row of a line, type-checked (a worker runs app code: its lines are parsed, never trusted)."""
    klass, queue, count, failed, seconds, buckets = item
    numbers = (count, failed)
    if type(klass) is not str or type(queue) is not str or any(type(n) is not int or n < 0 for n in numbers):
        raise ValueError("bad row")
    hist = {int(i): int(n) for i, n in buckets if 0 <= int(i) < BUCKETS and int(n) >= 0}
    return klass[:MAX_CLASS_CHARS + 3], queue[:MAX_CLASS_CHARS], count, failed, max(0.0, float(seconds)), hist
