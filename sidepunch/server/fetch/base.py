"""The fetcher protocol every fetch strategy implements, and what they share: UnitOfWork and QueueOrder.

A `Fetcher` belongs to one processor thread: fetch, ack (deferred) and send_acks, unfetch (a job this thread
will not start), release (before going quiet or stopping), buffered and requeue (at the stop deadline). Its class
also says what the rest of the daemon needs to know without running it: `ack_into` (how the retry writer
acknowledges inside its own MULTI) and `recovers_on_death` (whether a worker that died can have left jobs in
Redis for the master to put back; the recovery itself lives in recovery.py and recoverer.py). Must not import
the worker's process code (launcher, pool): fetchers know nothing of threads or signals.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence

import redis

from ...core.connection import FailoverError
from ..config import QueueSpec

FETCH_TIMEOUT = 2.0


@dataclass(frozen=True)
class UnitOfWork:
    queue: str
    payload: bytes
    working: str | None = None  # the working list holding it (reliable fetch only)


class QueueOrder:
    """The queue names to try, in order, for one fetch."""

    def __init__(self, specs: Sequence[QueueSpec], rng: random.Random) -> None:
        self.names = [s.name for s in specs]
        self._weighted = any(s.weight > 0 for s in specs)
        self._expanded = [s.name for s in specs for _ in range(max(s.weight, 1))]
        self._rng = rng

    def __call__(self) -> list[str]:
        if not self._weighted:
            return self.names
        shuffled = self._expanded[:]
        self._rng.shuffle(shuffled)
        return list(dict.fromkeys(shuffled))


class Fetcher(Protocol):
    """One processor thread's access to the queues."""

    #: True if jobs a worker held when it died are still in Redis (so the master has something to recover).
    recovers_on_death: ClassVar[bool]
    #: The jobs this fetcher fetched that are out on the event loop (async jobs); the pool sets it.
    lent: Callable[[], Sequence[UnitOfWork]]
    #: The paused queues it leaves out (paused.PausedQueues); the pool gives all its threads one instance.
    paused: Any

    @classmethod
    def for_thread(cls, client: redis.Redis, config: Any, identity: str, slot: "ThreadSlot") -> "Fetcher":
        """The fetcher of one processor thread of one worker process."""

    @staticmethod
    def ack_into(pipe: redis.client.Pipeline, unit: UnitOfWork) -> None:
        """Queue the acknowledgement of `unit` on `pipe` (the retry writer's MULTI)."""

    def fetch(self) -> UnitOfWork | None:
        """The next job, or None after a short blocking wait (so the thread notices quiet and stop)."""

    def ack(self, unit: UnitOfWork, seconds: float = 0.0) -> bool:
        """Note a finished job (no I/O); True when `send_acks` should run now."""

    def pace(self, seconds: float) -> None:
        """Note how long the thread was busy with its last job without acknowledging it (an async job handed
        to the event loop), so that fetching adapts to the thread's pace as `ack` does."""

    def send_acks(self) -> None:
        """Send the acknowledgements noted so far."""

    def unfetch(self, unit: UnitOfWork) -> None:
        """Hand back a job this thread will not start."""

    def release(self) -> None:
        """Before going quiet or stopping: put back fetched-but-unstarted jobs, send deferred acks."""

    def buffered(self) -> list[UnitOfWork]:
        """Jobs fetched and not yet started."""

    def requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Put jobs back at the head of their queues, unchanged."""


@dataclass(frozen=True)
class ThreadSlot:
    """Where a processor thread sits in the daemon: thread `index` of worker `number` (1-based)."""
    number: int
    index: int

    def home(self, threads: int) -> int:
        """A number unique to this thread across the daemon's workers, to spread blocking waits over queues."""
        return (self.number - 1) * threads + self.index


def blocking(call: Any, *args: Any) -> Any:
    """Run a blocking pop; a server that turns replica under it answers -UNBLOCKED, which is an outage."""
    try:
        return call(*args)
    except redis.ResponseError as exc:
        if str(exc).startswith("UNBLOCKED"):
            raise FailoverError(str(exc)) from exc
        raise
