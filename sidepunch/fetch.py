"""Fetching jobs from queues: ReliableFetch (the default, at-least-once) and BasicFetch (Sidekiq's BRPOP).

Each processor thread owns one fetcher. ReliableFetch moves a job atomically from queue:<q> into this
process's working list working:queue:<q>:<identity>; acknowledging removes it, and a job still in a working
list when its process dies is put back by the master (recovery.py). Queue order is strict (the configured
order) unless a queue has a weight, then weighted random as Sidekiq does it.

While work is waiting, one Lua call per job acknowledges the previous job and takes the next in queue order.
When every queue is empty the thread blocks (BLMOVE, 2 s) on one "home" queue; homes are spread over the
queues so every queue has threads waiting on it and idle latency stays low everywhere.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import redis

from . import keys, scripts
from .config import QueueSpec
from .connection import OUTAGE_ERRORS, FailoverError

FETCH_TIMEOUT = 2.0


def _blocking(call, *args):
    """Run a blocking pop; a server that turns replica under it answers -UNBLOCKED, which is an outage."""
    try:
        return call(*args)
    except redis.ResponseError as exc:
        if str(exc).startswith("UNBLOCKED"):
            raise FailoverError(str(exc)) from exc
        raise


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


class BasicFetch:
    """BRPOP across the queues; a fetched job is gone from Redis until it is requeued."""

    def __init__(self, client: redis.Redis, specs: Sequence[QueueSpec], rng: random.Random) -> None:
        self._redis = client
        self._order = QueueOrder(specs, rng)

    def fetch(self) -> UnitOfWork | None:
        reply = _blocking(self._redis.brpop, [keys.queue(q) for q in self._order()], FETCH_TIMEOUT)
        if reply is None:
            return None
        return UnitOfWork(keys.queue_name(reply[0]), reply[1])

    def ack(self, unit: UnitOfWork) -> None:
        pass

    @staticmethod
    def ack_into(pipe: redis.client.Pipeline, unit: UnitOfWork) -> None:
        pass

    def flush(self) -> None:
        pass

    def requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Put jobs back at the head of their queues (RPUSH: next to be popped), unchanged."""
        if units:
            pipe = self._redis.pipeline(transaction=False)
            for unit in units:
                pipe.rpush(keys.queue(unit.queue), unit.payload)
            pipe.execute()


class ReliableFetch:
    """Atomic move into a working list; `ack` is deferred into the next fetch's round trip."""

    def __init__(self, client: redis.Redis, specs: Sequence[QueueSpec], rng: random.Random, identity: str,
                 thread: int, home: int) -> None:
        self._redis = client
        self._order = QueueOrder(specs, rng)
        self._working = {s.name: keys.working(s.name, identity, thread) for s in specs}
        self._home = home
        self._pending: UnitOfWork | None = None
        self._in_doubt = False
        self._fetch = scripts.load(client, "fetch")
        self._move = scripts.load(client, "move")

    def fetch(self) -> UnitOfWork | None:
        try:
            if self._in_doubt:
                unit = self._reclaim()
                if unit is not None:
                    return unit
            return self._fetch_next()
        except OUTAGE_ERRORS:
            # Redis may have moved a job into our working list and then lost the connection before replying.
            self._in_doubt = True
            raise

    def _reclaim(self) -> UnitOfWork | None:
        """After a failed fetch: a job in this thread's working list that no one is running was fetched for
        us but never delivered. Take it now rather than leaving it until this process dies."""
        for queue, working in self._working.items():
            jobs = self._redis.lrange(working, 0, -1)
            if self._pending is not None and self._pending.working == working and self._pending.payload in jobs:
                jobs.remove(self._pending.payload)
            if jobs:
                return UnitOfWork(queue, jobs[-1], working)
        self._in_doubt = False
        return None

    def _fetch_next(self) -> UnitOfWork | None:
        order = self._order()
        pending = self._pending
        script_keys = [pending.working if pending else "queues"]
        for q in order:
            script_keys += [keys.queue(q), self._working[q]]
        reply = self._fetch(keys=script_keys, args=[pending.payload if pending else ""])
        self._pending = None
        if reply:
            queue = order[int(reply[0]) - 1]
            return UnitOfWork(queue, reply[1], self._working[queue])
        return self._block()

    def _block(self) -> UnitOfWork | None:
        names = self._order.names
        queue = names[self._home % len(names)]
        # With more queues than threads, rotate so that no queue is left without a waiter for long.
        self._home += 1 if len(names) > 1 else 0
        working = self._working[queue]
        job = _blocking(self._redis.blmove, keys.queue(queue), working, FETCH_TIMEOUT, "RIGHT", "LEFT")
        return None if job is None else UnitOfWork(queue, job, working)

    def ack(self, unit: UnitOfWork) -> None:
        self.flush()
        self._pending = unit

    @staticmethod
    def ack_into(pipe: redis.client.Pipeline, unit: UnitOfWork) -> None:
        pipe.lrem(unit.working, 1, unit.payload)

    def flush(self) -> None:
        """Send a deferred acknowledgement now (before going quiet or stopping)."""
        if self._pending is not None:
            self._redis.lrem(self._pending.working, 1, self._pending.payload)
            self._pending = None

    def requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Move jobs from the working list back to the head of their queues, each only if still there."""
        if not units:
            return
        script_keys: list[str] = []
        args: list[object] = [0, 0, 1]
        for unit in units:
            script_keys += [unit.working, keys.queue(unit.queue)]
            args += ["queue", unit.payload, unit.payload]
        self._move(keys=script_keys, args=args)
