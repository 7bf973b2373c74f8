"""PausedQueues: which queues are paused (keys.PAUSED, a Redis SET written by sidepunch.api), as one worker process
last read it, and the queue selection that leaves them out.

One instance is shared by every processor thread of a process (the pool hands it to each fetcher), and it reads
Redis at most once per REFRESH seconds, whichever thread asks first: the fetch of a job never pays a round trip
for it, only a clock read. A blocking fetch that was already waiting when the queue was paused looks again when
it returns a job, and puts that job back at the head of its queue: so a pause reaches every daemon within REFRESH
(a second, inside the fetch timeout), and an unpause too. Threads whose queues are all paused sleep until the next refresh instead of
spinning. Must not import the worker's process code (launcher, pool).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

import redis

from ...core import keys

log = logging.getLogger("sidepunch.fetch")

#: Seconds between two reads of the paused set by one process.
REFRESH = 1.0
#: The shortest sleep of a thread whose queues are all paused (the refresh may be due already).
MIN_WAIT = 0.05


class PausedQueues:
    """The paused queue names one process knows; `current()` refreshes them when REFRESH has passed."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic,
                 refresh: float = REFRESH) -> None:
        self._redis = client
        self._clock = clock
        self._refresh_every = refresh
        self._names: frozenset[str] = frozenset()
        self._due = 0.0  # the first call reads Redis
        self._lock = threading.Lock()
        self._odd_key = False  # a paused key of another type was logged once
        self._known = False  # a read has succeeded

    def current(self) -> frozenset[str]:
        """The paused names, read again from Redis once they are REFRESH old: one thread reads, and the threads
        that ask meanwhile wait for its answer rather than take the old one into a blocking fetch (which would
        stretch a pause's delay by another FETCH_TIMEOUT). Costs a clock read when not due."""
        if self._clock() >= self._due:
            with self._lock:
                if self._clock() >= self._due:  # another thread may have read it while this one waited
                    self._read()
        return self._names

    def _read(self) -> None:
        """Read the set (under the lock). `_due` moves only once the answer is in, so a thread that asks during
        the read waits for it on the lock instead of using the old names."""
        try:
            members = self._redis.smembers(keys.PAUSED)
        except redis.ResponseError as exc:  # another type under the key: nothing is paused, said once
            if not self._odd_key:
                log.warning("%s is not a set of queue names (%s): no queue counts as paused", keys.PAUSED, exc)
                self._odd_key = True
            members = set()
        except redis.RedisError:
            if not self._known:
                raise  # never read: fetching now could take from a paused queue; the thread treats it as an outage
            self._due = self._clock() + self._refresh_every
            return  # an outage: keep the last read; the fetch itself meets the outage and reports it
        else:
            self._odd_key = False
        self._names = frozenset(_text(m) for m in members)
        self._known = True
        self._due = self._clock() + self._refresh_every

    def select(self, order: Sequence[str]) -> Sequence[str]:
        """`order` without the paused queues (the same list when none is paused: the common case costs nothing)."""
        paused = self.current()
        if not paused:
            return order
        return [q for q in order if q not in paused]

    def wait(self) -> None:
        """Every queue of this thread is paused: sleep until the next refresh is due (at most REFRESH)."""
        time.sleep(min(self._refresh_every, max(MIN_WAIT, self._due - self._clock())))


def _text(member: Any) -> str:
    """A set member as a queue name: bytes that are not UTF-8 become surrogates, which match no configured name."""
    return member if isinstance(member, str) else bytes(member).decode("utf-8", "surrogateescape")
