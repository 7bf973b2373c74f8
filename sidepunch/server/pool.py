"""ProcessorPool: the processor threads of one worker process (Sidekiq's manager; `sidepunch.Manager` is another
thing, the embedded runner).

Duties: start one Processor per --threads, replace a thread that died, enforce job timeouts (record the job's
outcome from here and ask the launcher to retire the process, since a Python thread cannot be stopped), and
stop(deadline): wait for running jobs until the one deadline the launcher computed, then take back and requeue
what still runs together with what was prefetched. Must not handle signals, talk to the master or beat (the
launcher's), nor import the launcher or the master.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import redis

from ..core.connection import OUTAGE_ERRORS
from ..core.errors import JobTimeout
from .fetch import Fetcher, ThreadSlot, UnitOfWork
from .processor import Processor
from .state import ChildContext
from .stats import Work

log = logging.getLogger("sidepunch.child")

#: After the deadline, how long idle threads (inside a blocking fetch of at most 2 s) get to requeue what that
#: fetch returns; shared by all threads so the master's --grace is not outrun.
IDLE_JOIN = 3.0


class ProcessorPool:
    """The T processor threads of worker `number`, each with a fetcher of the configured strategy."""

    def __init__(self, ctx: ChildContext, fetcher: type[Fetcher], number: int,
                 retire: Callable[[str], None]) -> None:
        self.ctx = ctx
        self._fetcher = fetcher
        self._number = number
        self._retire = retire
        self.processors: list[Processor] = []

    def start(self) -> None:
        for index in range(self.ctx.config.threads):
            self.processors.append(self._new_processor(index))
            self.processors[-1].start()

    def _new_processor(self, index: int) -> Processor:
        ctx = self.ctx
        fetcher = self._fetcher.for_thread(ctx.redis, ctx.config, ctx.identity, ThreadSlot(self._number, index))
        return Processor(index, ctx, fetcher)

    def replace_dead(self) -> None:
        for i, proc in enumerate(self.processors):
            if proc.thread is not None and not proc.thread.is_alive() and not self.ctx.state.stopping:
                self.processors[i] = self._new_processor(proc.index)
                self.processors[i].start()

    def enforce_timeouts(self) -> None:
        now = time.monotonic()
        for proc in self.processors:
            if proc.deadline is not None and now >= proc.deadline:
                taken = proc.abandon()
                if taken is not None:
                    self._timed_out(*taken)

    def _timed_out(self, unit: UnitOfWork, instance: object, seconds: float) -> None:
        exc = JobTimeout(f"job ran longer than its {seconds:g}s timeout")
        self.ctx.counters.record(failed=True)
        try:  # one attempt: this is the main thread, which must keep answering signals
            outcome = self.ctx.retry.handle(unit, instance, exc)
        except OUTAGE_ERRORS as error:
            outcome = f"not recorded ({error}); it stays in the working list and is recovered"
        log.error("job %.200s timed out after %gs: %s", unit.payload.decode("utf-8", "replace"),
                  seconds, outcome or "not recorded")
        self._retire(f"a job outlived its {seconds:g}s timeout and its thread cannot be stopped")

    def jobs_by_thread(self) -> dict[int | None, Work | None]:
        """What each processor thread runs, by thread ident (for the TTIN dump)."""
        running = self.ctx.work.snapshot()
        return {p.thread.ident: running.get(p.tid) for p in self.processors if p.thread is not None}

    def stop(self, deadline: float) -> None:
        """Wait for running jobs until `deadline` (monotonic), then requeue what is left."""
        for proc in self.processors:
            if proc.thread is not None:
                proc.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = self._requeue_unfinished()
        # Idle threads are inside a blocking fetch and requeue whatever it returns: wait for them, so nothing
        # they fetch is left behind.
        end = time.monotonic() + IDLE_JOIN
        for proc in self.processors:
            if proc.thread is not None and proc not in stuck:
                proc.thread.join(max(0.0, end - time.monotonic()))

    def _requeue_unfinished(self) -> list[Processor]:
        """At the deadline: take back what threads still run (so they cannot also record it) and put it,
        with their prefetched jobs, back at the head of the queues. Returns the threads left running."""
        stuck = [p for p in self.processors if p.thread is not None and p.thread.is_alive() and p.current]
        held = []
        for proc in stuck:
            taken = proc.abandon()
            held.append((proc.fetcher, ([taken[0]] if taken else []) + proc.fetcher.buffered()))
        count = sum(len(units) for _, units in held)
        if count:
            log.warning("worker %d requeueing %d unfinished job(s)", self._number, count)
        for fetcher, units in held:
            try:
                fetcher.requeue(units)
            except redis.RedisError as exc:  # an outage or a refusal: the master recovers them when we exit
                log.error("could not requeue %d job(s) (%s); they stay in the working list for recovery",
                          len(units), exc)
        return stuck
