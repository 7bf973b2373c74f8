"""ProcessorPool: the processor threads of one worker process (Sidekiq's manager; `sidepunch.Manager` is another
thing, the embedded runner).

Duties: start one Processor per --threads and the process's AsyncRunner (async jobs), replace a thread that
died, enforce job timeouts and cancel requests (`stop_job`: a sync job is interrupted in its thread, an async
one's task is cancelled; each is then recorded where it ran), escalate when a job does not stop within
--interrupt-grace (take it, ask the launcher to retire the process, record it once the other jobs are done, just
before the process exits), and stop(deadline): wait for running jobs until the one deadline the launcher
computed, then take back and requeue what still runs together with what was prefetched. Jobs requeued at the
deadline are not counted as interrupted. Must not handle signals, talk to the master or beat (the launcher's),
nor import the launcher or the master.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import redis

from .aio import AsyncRunner
from .fetch import Fetcher, PausedQueues, ThreadSlot
from .outcomes import Outcomes, PendingAcks, call_on_cancel, timeout_error
from .processor import Processor, Taken
from .state import ChildContext
from .stats import Work

log = logging.getLogger("sidepunch.child")

#: After the deadline, how long idle threads (inside a blocking fetch of at most 2 s) get to requeue what that
#: fetch returns; shared by all threads so the master's --grace is not outrun.
IDLE_JOIN = 3.0


class ProcessorPool:
    """The T processor threads of worker `number`, each with a fetcher of the configured strategy."""

    def __init__(self, ctx: ChildContext, fetcher: type[Fetcher], number: int,
                 retire: Callable[[str], None], async_chain: tuple = ()) -> None:
        self.ctx = ctx
        self._fetcher = fetcher
        self._number = number
        self._retire = retire
        self.processors: list[Processor] = []
        self.runner = AsyncRunner(ctx, ctx.config.async_concurrency, fetcher.ack_into, async_chain)
        self._held: list[Taken] = []  # jobs that would not stop: recorded just before the process exits
        self.paused = PausedQueues(ctx.redis)  # one read of the paused set per second for all the threads

    def start(self) -> None:
        for index in range(self.ctx.config.threads):
            self.processors.append(self._new_processor(index))
            self.processors[-1].start()

    def _new_processor(self, index: int) -> Processor:
        ctx = self.ctx
        fetcher = self._fetcher.for_thread(ctx.redis, ctx.config, ctx.identity, ThreadSlot(self._number, index))
        fetcher.lent = self._lent  # jobs of its working lists that run elsewhere: it must not take them back
        fetcher.paused = self.paused
        return Processor(index, ctx, fetcher, self.runner)

    def _lent(self) -> list:
        """The jobs that left their thread: out on the event loop, or held (they would not stop)."""
        return [*self.runner.units(), *(taken.unit for taken in self._held)]

    def replace_dead(self) -> None:
        for i, proc in enumerate(self.processors):
            if proc.thread is not None and not proc.thread.is_alive() and not self.ctx.state.stopping:
                self.processors[i] = self._new_processor(proc.index)
                self.processors[i].start()

    def enforce_timeouts(self) -> None:
        """Interrupt sync jobs past their deadline (async ones time out on the loop); take jobs that would not
        stop within --interrupt-grace and retire the process."""
        now, grace = time.monotonic(), self.ctx.config.interrupt_grace
        for proc in self.processors:
            if proc.deadline is not None and now >= proc.deadline:
                proc.request_stop("timeout", now)
            if proc.would_not_stop(now, grace):
                taken = proc.abandon()
                if taken is not None:
                    self._hold(taken, f"thread {proc.index}")
        for taken in self.runner.would_not_stop(now, grace):
            self._hold(taken, "the event loop (blocked by a sync call?)")

    def next_check(self, longest: float = 1.0) -> float:
        """Seconds until `enforce_timeouts` has something to do: the nearest sync job's deadline, at most
        `longest` (the caller's usual tick), so a timeout is acted on when it passes, not up to a tick later."""
        now, soonest = time.monotonic(), longest
        for proc in self.processors:
            deadline = proc.deadline
            if deadline is not None and proc.stop_reason is None:
                soonest = min(soonest, deadline - now)
        return max(0.005, soonest)

    def _hold(self, taken: Taken, where: str) -> None:
        self._held.append(taken)
        grace = self.ctx.config.interrupt_grace
        log.error("job %.200s did not stop within %gs of its %s in %s; it is recorded when this process exits",
                  taken.unit.payload.decode("utf-8", "replace"), grace, taken.reason or "stop", where)
        self._retire(f"a job did not stop within {grace:g}s of its {taken.reason} (blocked in a C call?)")

    def stop_job(self, jid: str) -> bool:
        """Cancel the running job with this jid (sync: interrupt; async: cancel its task); False if not here."""
        for proc in self.processors:
            job = proc.job
            if proc.current is not None and job is not None and job.get("jid") == jid:
                return proc.request_stop("cancel", time.monotonic(), job)
        return self.runner.cancel(jid)

    def running_jids(self) -> list[str]:
        jids = [proc.job.get("jid") for proc in self.processors if proc.current is not None and proc.job]
        return [j for j in jids + self.runner.jids() if type(j) is str and j]

    def _record_held(self) -> None:
        """Record the jobs that would not stop, once: their threads are abandoned and die with the process."""
        outcomes = Outcomes(self.ctx)
        for taken in self._held:
            job = taken.job or {"class": "?"}
            try:
                if taken.reason == "cancel":
                    acks = PendingAcks(self.ctx.redis, self._fetcher.ack_into)
                    outcomes.cancelled(taken.unit, job, taken.started, acks)
                    outcomes.persist(acks.send_acks, "acknowledge")
                    call_on_cancel(taken.instance, self.ctx.config.interrupt_grace)
                else:
                    outcomes.fail(taken.unit, job, timeout_error(taken.timeout), taken.started, taken.instance)
            except Exception:  # it stays in its working list and is recovered as interrupted
                log.exception("could not record a job that would not stop")
        self._held = []

    def jobs_by_thread(self) -> dict[int | None, Work | None]:
        """What each processor thread runs, by thread ident (for the TTIN dump)."""
        running = self.ctx.work.snapshot()
        return {p.thread.ident: running.get(p.tid) for p in self.processors if p.thread is not None}

    def stop(self, deadline: float) -> None:
        """Wait for running jobs until `deadline` (monotonic), then requeue what is left; record the jobs that
        would not stop last, just before the process exits."""
        self._wait_threads(deadline)
        self.runner.wait(deadline)
        stuck = self._requeue_unfinished()
        self.runner.close(max(1.0, IDLE_JOIN))
        self._record_held()
        # Idle threads are inside a blocking fetch and requeue whatever it returns: wait for them, so nothing
        # they fetch is left behind.
        end = time.monotonic() + IDLE_JOIN
        for proc in self.processors:
            if proc.thread is not None and proc not in stuck and not proc.abandoned:
                proc.thread.join(max(0.0, end - time.monotonic()))

    def _wait_threads(self, deadline: float) -> None:
        """Until `deadline`: wait for the threads to end (an abandoned one is left to its C call), still
        interrupting a job past its own timeout, so it is not requeued to run as long again."""
        while True:
            now = time.monotonic()
            busy = [p for p in self.processors if p.thread is not None and p.thread.is_alive() and not p.abandoned]
            if not busy or now >= deadline:
                return
            for proc in busy:
                if proc.deadline is not None and now >= proc.deadline:
                    proc.request_stop("timeout", now)
            busy[0].thread.join(min(0.1, deadline - now))

    def _requeue_unfinished(self) -> list[Processor]:
        """At the deadline: take back what threads still run (so they cannot also record it) and put it,
        with their prefetched jobs, back at the head of the queues. Returns the threads left running."""
        stuck = [p for p in self.processors if p.thread is not None and p.thread.is_alive() and p.current]
        held = []
        for proc in stuck:
            taken = proc.abandon()
            held.append((proc.fetcher, ([taken.unit] if taken else []) + proc.fetcher.buffered()))
            proc.request_stop("shutdown", time.monotonic())  # requeued: its side effects must stop here too
        if self.processors:
            held.append((self.processors[0].fetcher, self.runner.take_running()))
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
