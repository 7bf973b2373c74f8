"""BasicFetch: Sidekiq's BRPOP across the queues (`--fetch basic`). A fetched job is gone from Redis until it is
acknowledged by running or requeued, so a worker that dies leaves nothing for the master to recover.
Must not import the worker's process code (launcher, pool)."""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, ClassVar, Sequence

import redis

from ...core import keys
from .base import FETCH_TIMEOUT, QueueOrder, ThreadSlot, UnitOfWork, blocking
from .paused import PausedQueues
from ..config import QueueSpec

log = logging.getLogger("sidepunch.fetch")


class BasicFetch:
    """BRPOP across the queues; a fetched job is gone from Redis until it is requeued."""

    recovers_on_death: ClassVar[bool] = False

    def __init__(self, client: redis.Redis, specs: Sequence[QueueSpec], rng: random.Random) -> None:
        self._redis = client
        self._order = QueueOrder(specs, rng)
        self.paused = PausedQueues(client)  # the pool gives every thread of the process one shared instance
        self.lent: Callable[[], Sequence[UnitOfWork]] = list  # unused: nothing to reclaim after an outage

    @classmethod
    def for_thread(cls, client: redis.Redis, config: Any, identity: str, slot: ThreadSlot) -> "BasicFetch":
        return cls(client, config.queues, random.Random())

    def fetch(self) -> UnitOfWork | None:
        order = self.paused.select(self._order())
        if not order:  # every queue of this worker is paused
            self.paused.wait()
            return None
        reply = blocking(self._redis.brpop, [keys.queue(q) for q in order], FETCH_TIMEOUT)
        if reply is None:
            return None
        unit = UnitOfWork(keys.queue_name(reply[0]), reply[1])
        if unit.queue in self.paused.current():  # paused while this fetch blocked: back to the head, not run
            try:
                self.requeue([unit])
            except redis.RedisError as exc:  # the job lives only here now: run it rather than lose it
                log.warning("could not put back a job of the paused queue %s (%s): it runs", unit.queue, exc)
                return unit
            return None
        return unit

    def ack(self, unit: UnitOfWork, seconds: float = 0.0) -> bool:
        return False

    def pace(self, seconds: float) -> None:
        """Nothing to tune: basic fetch pops one job at a time."""

    def send_acks(self) -> None:
        pass

    def unfetch(self, unit: UnitOfWork) -> None:
        self.requeue([unit])

    @staticmethod
    def ack_into(pipe: redis.client.Pipeline, unit: UnitOfWork) -> None:
        pass

    def release(self) -> None:
        pass

    def buffered(self) -> list[UnitOfWork]:
        return []

    def requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Put jobs back at the head of their queues (RPUSH: next to be popped), unchanged."""
        if units:
            pipe = self._redis.pipeline(transaction=False)
            for unit in units:
                pipe.rpush(keys.queue(unit.queue), unit.payload)
            pipe.execute()
