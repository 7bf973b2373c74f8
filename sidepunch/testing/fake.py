"""Fake mode: `with sidepunch.testing.fake() as jobs:` collects every push of the process in memory.

`FakeJobs` is the mode the write seam hands entries to (client/modes.py): while it is active, every push (sync
or async, single, bulk, scheduled, from any client and any thread) is validated and passed through the client
middleware as in production, and its encoded entries are kept here instead of being written to Redis. Then:

- `jobs(job=None, queue=None)`: the payloads, in push order, each a dict decoded from the exact bytes a push
  would have written; a scheduled one also carries its `at` (the epoch time it is due), as Sidekiq's fake
  jobs do. `entries(...)`: the same as (queue, at, payload bytes) tuples.
- `drain(until=None)`: runs every job due now (first pushed, first run), including those the jobs push, in
  this process, until none is left; with `until` (an aware datetime or an epoch number) also the scheduled
  jobs due by then, in the order they are due. Retries are off: what a job raises propagates, and that job is
  gone from the store (the rest stay). A Reschedule puts the job back among the scheduled ones, due `seconds`
  from now, and the same drain does not run it again. `adrain()` is the same, awaited: async jobs run on the
  caller's event loop.
- `clear(job=None, queue=None)`: forget the jobs kept.

Unique jobs are unique here too (locks.py): a duplicate of a unique job kept or running is refused, its push
returns None, until the first has run or is cleared; without Redis.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import collections
import datetime as _dt
import heapq
import itertools
import math
import threading
import time
from typing import Any, Sequence

from ..client import modes
from ..client.job import job_class_of
from ..client.prepare import Entry
from ..core.middleware import Reschedule
from ..core.payload import decode
from .locks import MemoryLocks
from .runner import Loops, Performer


class FakeJobs:
    """The jobs pushed while this fake mode is active. A context manager: entering it turns the mode on."""

    def __init__(self, server_middleware: Sequence[Any] | None = None) -> None:
        self._performer = Performer(server_middleware)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._now: collections.deque[tuple[int, Entry]] = collections.deque()  # due now, in push order
        self._later: dict[int, Entry] = {}  # scheduled, by push number
        self._heap: list[tuple[float, int]] = []  # (at, push number) of the scheduled; stale ones skipped
        self._active = False
        self._locks = MemoryLocks()  # unique jobs' locks (locks.py)

    def __enter__(self) -> "FakeJobs":
        modes.enter(self)
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False
        modes.leave(self)

    def __repr__(self) -> str:
        return f"<sidepunch.testing.fake: {len(self)} job(s){'' if self._active else ', inactive'}>"

    def __len__(self) -> int:
        with self._lock:
            return len(self._now) + len(self._later)

    # The write seam's side (client/modes.py).
    def write(self, entries: Sequence[Entry]) -> None:
        entries = self._locks.admit(entries)  # a duplicate of a unique job kept here is refused
        with self._lock:
            for entry in entries:
                seq = next(self._seq)
                if entry[1] is None:
                    self._now.append((seq, entry))
                else:
                    self._later[seq] = entry
                    heapq.heappush(self._heap, (entry[1], seq))

    async def awrite(self, entries: Sequence[Entry]) -> None:
        self.write(entries)

    # What a test reads.
    def entries(self, job: Any = None, queue: str | None = None) -> list[Entry]:
        """The kept entries (queue, at, payload bytes), in push order; `job` and `queue` filter as in jobs()."""
        name = _filters(job, queue)
        with self._lock:
            kept = sorted([*self._now, *self._later.items()], key=lambda pair: pair[0])
        return [entry for _, entry in kept if _matches(entry, name, queue)]

    def jobs(self, job: Any = None, queue: str | None = None) -> list[dict[str, Any]]:
        """The payloads kept, in push order, as dicts (fresh copies); a scheduled one with its `at`. `job`: a Job
        class, a @job function or a class name; `queue`: a queue name."""
        found = []
        for _, at, payload in self.entries(job, queue):
            one = decode(payload)
            if at is not None:
                one["at"] = at
            found.append(one)
        return found

    def clear(self, job: Any = None, queue: str | None = None) -> int:
        """Forget the jobs kept (those that match, if `job` or `queue` is given); returns how many."""
        name = _filters(job, queue)
        with self._lock:
            gone = [e for _, e in self._now if _matches(e, name, queue)]
            gone += [e for e in self._later.values() if _matches(e, name, queue)]
            self._now = collections.deque(p for p in self._now if not _matches(p[1], name, queue))
            self._later = {s: e for s, e in self._later.items() if not _matches(e, name, queue)}
            self._heap = [(e[1], s) for s, e in self._later.items()]
            heapq.heapify(self._heap)
        self._locks.forget(entry[2] for entry in gone)  # their unique locks go with them
        return len(gone)

    # Running them.
    def drain(self, until: Any = None) -> int:
        """Run the jobs due now, and those they push, until none is left (see the module docstring); with
        `until`, also the scheduled jobs due by then. Returns how many jobs ran."""
        limit = self._start("drain", until)
        ran, later = 0, []
        with Loops() as loops:
            try:
                while (entry := self._take(limit)) is not None:
                    ran += 1
                    try:
                        with self._locks.running(entry[2]):
                            self._performer.run(entry[2], entry[0], loops)
                    except Reschedule as again:
                        later.append((entry[0], time.time() + again.seconds, entry[2]))
            finally:
                self.write(later)
        return ran

    async def adrain(self, until: Any = None) -> int:
        """drain(), awaited: async jobs run on the running event loop (sync ones are called in it)."""
        limit = self._start("adrain", until)
        ran, later = 0, []
        try:
            while (entry := self._take(limit)) is not None:
                ran += 1
                try:
                    with self._locks.running(entry[2]):
                        await self._performer.arun(entry[2], entry[0])
                except Reschedule as again:
                    later.append((entry[0], time.time() + again.seconds, entry[2]))
        finally:
            self.write(later)
        return ran

    def _start(self, what: str, until: Any) -> float | None:
        if not self._active:
            raise RuntimeError(f"{what}() runs jobs that may push jobs: call it inside the `with fake()` block")
        return _epoch(until)

    def _take(self, limit: float | None) -> Entry | None:
        """The next job to run: the first due now, else the scheduled one due first if due by `limit`."""
        with self._lock:
            if self._now:
                return self._now.popleft()[1]
            while limit is not None and self._heap and self._heap[0][0] <= limit:
                entry = self._later.pop(heapq.heappop(self._heap)[1], None)
                if entry is not None:
                    return entry
            return None


def _filters(job: Any, queue: Any) -> str | None:
    """The class name on the wire that `job` stands for (a Job class, a @job function or a name), or None;
    TypeError if `job` or `queue` is neither None nor what it should be."""
    if queue is not None and not isinstance(queue, str):
        raise TypeError(f"queue= takes a queue name, got {type(queue).__name__}")
    if job is None or isinstance(job, str):
        return job
    found = job_class_of(job)
    if found is None:
        raise TypeError(f"job= takes a Job class, a @job function or a class name, got {job!r}")
    return found.job_name()


def _matches(entry: Entry, name: str | None, queue: str | None) -> bool:
    if queue is not None and entry[0] != queue:
        return False
    return name is None or decode(entry[2]).get("class") == name


def _epoch(until: Any) -> float | None:
    """`until` (None, an aware datetime or an epoch number) as epoch seconds; TypeError or ValueError if bad."""
    if until is None:
        return None
    if isinstance(until, _dt.datetime):
        if until.tzinfo is None:
            raise ValueError("drain(until=...) needs an aware datetime (naive times are ambiguous); pass tzinfo "
                             "or an epoch number")
        return until.timestamp()
    if type(until) not in (int, float):
        raise TypeError(f"drain(until=...) takes an aware datetime or an epoch number, got {until!r}")
    try:
        seconds = float(until)
    except OverflowError:
        raise ValueError(f"drain(until=...) is {until!r}, too large for a float") from None
    if not math.isfinite(seconds):
        raise ValueError(f"drain(until=...) must be finite, got {until!r}")
    return seconds
