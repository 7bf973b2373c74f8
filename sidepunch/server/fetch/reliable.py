"""ReliableFetch (the default, `--fetch reliable`): at-least-once delivery through per-thread working lists.

ReliableFetch moves a job atomically from queue:<q> into its thread's working list
working:queue:<q>:<identity>.<t>; acknowledging removes it, and a job still in a working
list when its process dies is put back by the master (recovery.py). Queue order is strict (the configured
order) unless a queue has a weight, then weighted random as Sidekiq does it.

While work is waiting, one Lua call per job acknowledges the previous job and takes the next in queue order.
When every queue is empty the thread blocks (BLMOVE, 2 s) on one "home" queue; homes are spread over the
queues so every queue has threads waiting on it and idle latency stays low everywhere. A queue key that holds
another type than a list is passed over like an empty queue; a move Redis refuses (out of memory...) raises
RedisRefused, an outage, after the acknowledgements it carried have landed. Paused queues (paused.py) are left
out of both the move and the blocking wait. Must not import the worker's
process code (launcher, pool).
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Callable, ClassVar, Sequence

import redis

from ...core import keys, scripts
from ...core.connection import refusal_or_error
from ..config import QueueSpec
from .base import FETCH_TIMEOUT, QueueOrder, ThreadSlot, UnitOfWork, blocking
from .paused import PausedQueues

#: Most jobs one reliable fetch takes from a deep queue (see fetch.lua for the fair-share cap).
BATCH = 10
#: A job that ran this long (wall time) is acknowledged at once instead of with the next fetch, and a thread
#: whose jobs average this long fetches one job at a time. Wall time includes waiting for the GIL: with ten
#: threads a job of one INCR takes 2-5 ms, so a 1 ms threshold sent every such job's ack in a round trip of
#: its own and turned batching off (docs/performance.md: 50 ms measured +24 % at INFO, +91 % at WARN).
ACK_NOW_AFTER = 0.05


class ReliableFetch:
    """Atomic move into this thread's working list. Acknowledgements are deferred into the next fetch's
    round trip; from a deep queue a fetch takes several jobs at once (each stays in the working list, so
    nothing is lost if the process dies), never more than its share of the queue."""

    recovers_on_death: ClassVar[bool] = True

    def __init__(self, client: redis.Redis, specs: Sequence[QueueSpec], rng: random.Random, identity: str,
                 thread: int, home: int, batch: int = BATCH, share: int = 1) -> None:
        self._redis = client
        self._order = QueueOrder(specs, rng)
        self.paused = PausedQueues(client)  # the pool gives every thread of the process one shared instance
        self._working = {s.name: keys.working(s.name, identity, thread) for s in specs}
        self._home = home
        self._batch = batch
        self._share = max(1, share)
        self._job_seconds = ACK_NOW_AFTER          # moving average of job time; batching starts once proven fast
        self._pending: list[UnitOfWork] = []      # finished, not yet acknowledged
        self._buffer: deque[UnitOfWork] = deque()  # fetched, not yet started
        self._in_doubt = False
        self.lent: Callable[[], Sequence[UnitOfWork]] = list  # jobs out on the event loop (set by the pool)
        self._fetch = scripts.load(client, "fetch")
        self._move = scripts.load(client, "move", uses=("dead",))

    @classmethod
    def for_thread(cls, client: redis.Redis, config: Any, identity: str, slot: ThreadSlot) -> "ReliableFetch":
        return cls(client, config.queues, random.Random(), identity, slot.index, slot.home(config.threads),
                   share=config.workers * config.threads)

    def fetch(self) -> UnitOfWork | None:
        if self._buffer:
            return self._buffer.popleft()
        try:
            if self._in_doubt and self._reclaim():
                return self._buffer.popleft()
            return self._fetch_next()
        except redis.RedisError:
            # Redis may have moved jobs into our working list and then lost the connection before replying.
            self._in_doubt = True
            raise

    def _reclaim(self) -> bool:
        """After a failed fetch: jobs in this thread's working lists that no one is running (neither waiting
        for their acknowledgement nor out on the event loop) were fetched for us but never delivered. Take them now rather than leaving them until this process dies."""
        for queue, working in self._working.items():
            jobs = self._redis.lrange(working, 0, -1)
            for unit in [*self._pending, *self.lent()]:
                if unit.working == working and unit.payload in jobs:
                    jobs.remove(unit.payload)
            self._buffer.extend(UnitOfWork(queue, job, working) for job in reversed(jobs))
        self._in_doubt = False
        return bool(self._buffer)

    def _fetch_next(self) -> UnitOfWork | None:
        order = self.paused.select(self._order())
        if not order:  # every queue of this worker is paused: acknowledge what ran, then wait for a change
            self.send_acks()
            self.paused.wait()
            return None
        acks = self._pending
        script_keys = [u.working for u in acks]
        for q in order:
            script_keys += [keys.queue(q), self._working[q]]
        batch = self._batch if self._job_seconds < ACK_NOW_AFTER else 1
        reply = self._fetch(keys=script_keys, args=[len(acks), batch, self._share, *(u.payload for u in acks)])
        self._pending = []
        if not reply:
            return self._block(order)
        if reply[0] == 0:  # the acknowledgements stand; Redis refused the move (e.g. out of memory)
            raise refusal_or_error(reply[1].decode("utf-8", "replace"))
        queue = order[int(reply[0]) - 1]
        working = self._working[queue]
        self._buffer.extend(UnitOfWork(queue, job, working) for job in reply[1])
        return self._buffer.popleft()

    def _block(self, unpaused: Sequence[str]) -> UnitOfWork | None:
        names = self._order.names if len(unpaused) == len(self._order.names) else unpaused
        queue = names[self._home % len(names)]
        # With more queues than threads, rotate so that no queue is left without a waiter for long.
        self._home += 1 if len(names) > 1 else 0
        working = self._working[queue]
        try:
            job = blocking(self._redis.blmove, keys.queue(queue), working, FETCH_TIMEOUT, "RIGHT", "LEFT")
        except redis.ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            time.sleep(FETCH_TIMEOUT)  # the key is not a list: nothing will come, as from an empty queue
            return None
        if job is None:
            return None
        unit = UnitOfWork(queue, job, working)
        if queue in self.paused.current():  # paused while this fetch blocked: back to the head, not run
            self.requeue([unit])
            return None
        return unit

    def ack(self, unit: UnitOfWork, seconds: float = 0.0) -> bool:
        """Note a finished job; returns True when `send_acks` should run now. For fast jobs the LREM rides on
        the next fetch; after a slow one it goes at once, since a round trip is then cheap and an unsent ack
        means a rerun if the process dies. Does no I/O, so a caller may retry `send_acks` alone."""
        self._pending.append(unit)
        self.pace(seconds)
        return seconds >= ACK_NOW_AFTER

    def pace(self, seconds: float) -> None:
        """Note how long this thread was busy with its last job (for an async job: handing it to the loop).
        Batches pay off only for fast jobs; slow ones are taken one at a time so the work spreads evenly over
        processes (a moving average, so one slow job among fast ones does not switch it off)."""
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds

    def unfetch(self, unit: UnitOfWork) -> None:
        """Hand back a job this thread will not start (it went quiet); `release` puts it back first."""
        self._buffer.appendleft(unit)

    @staticmethod
    def ack_into(pipe: redis.client.Pipeline, unit: UnitOfWork) -> None:
        pipe.lrem(unit.working, 1, unit.payload)

    def release(self) -> None:
        """Before going quiet or stopping: put fetched-but-unstarted jobs back, send deferred acks."""
        if self._buffer:
            self.requeue(list(self._buffer))
            self._buffer.clear()
        self.send_acks()

    def send_acks(self) -> None:
        if not self._pending:
            return
        if len(self._pending) == 1:
            self._redis.lrem(self._pending[0].working, 1, self._pending[0].payload)
        else:
            pipe = self._redis.pipeline(transaction=False)
            for unit in self._pending:
                pipe.lrem(unit.working, 1, unit.payload)
            pipe.execute()
        self._pending = []

    def buffered(self) -> list[UnitOfWork]:
        return list(self._buffer)

    def requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Move jobs from the working list back to the head of their queues, each only if still there."""
        if not units:
            return
        script_keys: list[str] = [keys.QUEUES, keys.DEAD, keys.DEAD_REASONS]
        args: list[object] = [0, 0, 1]  # the dead set's arguments: only dead entries read them
        # Last first, so that after the RPUSHes the first unit is at the head again.
        for unit in reversed(units):
            script_keys += [unit.working, keys.queue(unit.queue)]
            args += ["queue", unit.payload, unit.payload, ""]
        self._move(keys=script_keys, args=args)
