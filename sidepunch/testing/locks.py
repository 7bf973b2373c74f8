"""Unique jobs in fake mode: `MemoryLocks`, the locks of the jobs a `FakeJobs` keeps, held in memory.

A fake push of unique jobs (a client.unique.Locked list) is admitted as Redis would admit it: a job whose lock
is free (or lapsed: the same TTL, on `clock`) takes it and is kept; a duplicate is refused, so its push returns
None (`push_bulk`: None in its place) and the refusal is logged at debug, as in production. A lock goes when
its job leaves the fake store: when a drain starts it (`unique_until = "start"`) or when it has run (whether it
returned or raised, since a fake drain does not retry), or when `clear()` forgets it. A job a Reschedule puts
back keeps its lock. No Redis is involved; inline mode takes no locks (its jobs run at once).

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Sequence

from ..client.prepare import Entry
from ..client.unique import Locked
from ..core.middleware import Reschedule
from ..core.payload import PayloadError, decode
from ..core.unique import UNTIL

#: What a push does with one entry: keep it (its lock taken, or none needed), refuse it, or skip it because this
#: very job was kept by an earlier write of the same push (as the Redis script writes a retried push once).
_KEEP, _REFUSED, _KEPT_BEFORE = 1, 0, 2


class MemoryLocks:
    """The unique locks of one fake store: lock key -> (holder's value, deadline); payload -> its lock. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}
        self._of: dict[bytes, tuple[str, str, bool]] = {}  # payload -> (key, value, released when it starts)

    def admit(self, entries: Sequence[Entry]) -> Sequence[Entry]:
        """The entries to keep; a Locked push takes its locks here and records its refused entries."""
        if type(entries) is not Locked:
            return entries
        flags = []
        with self._mutex:
            now = self._clock()
            for (_, _, payload), lock in zip(entries, entries.locks):
                flags.append(_KEEP if lock is None else self._take(payload, lock, now))
        entries.settle([[0 if flag == _REFUSED else 1 for flag in flags]])
        return [entry for entry, flag in zip(entries, flags) if flag == _KEEP]

    def _take(self, payload: bytes, lock: tuple[str, str, int], now: float) -> int:
        key, value, ttl_ms = lock
        holder = self._held.get(key)
        if holder is not None and holder[1] > now:
            return _KEPT_BEFORE if holder[0] == value else _REFUSED  # the same push again: kept once
        self._held[key] = (value, now + ttl_ms / 1000)
        self._of[payload] = (key, value, _until_start(payload))
        return _KEEP

    def started(self, payload: bytes) -> None:
        """A drain is about to run this job: a lock held until the job starts goes now."""
        found = self._of.get(payload)
        if found is not None and found[2]:
            self.finished(payload)

    def finished(self, payload: bytes) -> None:
        """This job left the store (it ran, raised, or was cleared): its lock goes, if it still holds it."""
        with self._mutex:
            found = self._of.pop(payload, None)
            if found is not None and self._held.get(found[0], ("", 0.0))[0] == found[1]:
                del self._held[found[0]]

    def running(self, payload: bytes) -> "_Running":
        """`with locks.running(payload):` around a drain's run of one job (see the module docstring)."""
        return _Running(self, payload)

    def forget(self, payloads: Iterable[bytes]) -> None:
        """The jobs `clear()` removed."""
        for payload in payloads:
            self.finished(payload)


class _Running:
    """Releases a job's lock when it starts (if so asked) and when it has run, unless a Reschedule put it back."""

    def __init__(self, locks: MemoryLocks, payload: bytes) -> None:
        self.locks, self.payload = locks, payload

    def __enter__(self) -> None:
        self.locks.started(self.payload)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if not isinstance(exc, Reschedule):
            self.locks.finished(self.payload)


def _until_start(payload: bytes) -> bool:
    try:
        job: Any = decode(payload)
    except PayloadError:  # never: the client encoded it
        return False
    return job.get(UNTIL) == "start"
