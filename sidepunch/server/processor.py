"""Processor: one thread that fetches a job, runs it, and records the outcome, over and over.

`process(unit)` is synchronous so tests can call it against a real Redis. Whatever the job raises (any
BaseException: SystemExit, CancelledError, GeneratorExit...) is a failure and goes to RetryPolicy, unless the
worker itself took the job away (timeout, shutdown: `abandon`); a payload that cannot be parsed goes to the dead
set untouched. A server middleware may end a job with `Reschedule(seconds)` (raised or returned): the job goes back
to the schedule, unchanged, and counts as processed, not failed. Every path returns an `Outcome`. A write that fails because Redis is down or refusing commands is retried until it lands or the
child's hard deadline passes (reliable fetch then still holds the job).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from ..core.middleware import Outcome, Reschedule, run_server_chain
from ..core.payload import decode
from .fetch import UnitOfWork
from .forks import ForkGuard
from .interrupt import Interrupted, clear, interrupt, release_logging_locks
from .logs import job_line
from .outcomes import Outcomes, call_on_cancel, job_log, log
from .state import ChildContext
#: A job's `timeout` beyond this many seconds (about 31 years) means no practical limit; capped so that the
#: deadline stays a float whatever integer the payload holds.
MAX_TIMEOUT = 10 ** 9


class BadJob(Exception):
    """The payload parses but cannot be run as given (e.g. args is not a list)."""


@dataclass(frozen=True)
class Taken:
    """A running job taken away from its thread (it would not stop, or the worker is stopping)."""
    unit: UnitOfWork
    job: dict | None
    instance: Any
    started: float
    timeout: float
    reason: str | None  # why it was being stopped: "timeout", "cancel", or None (shutdown)


class Processor:
    """Duties: fetch while the worker is fetching, run each job, acknowledge or hand it to retry."""

    def __init__(self, index: int, ctx: ChildContext, fetcher: Any, runner: Any = None) -> None:
        self.index = index
        self.ctx = ctx
        self.fetcher = fetcher
        self.runner = runner  # the worker's AsyncRunner; None: async jobs fail with a clear error
        self.outcomes = Outcomes(ctx)
        self.tid = f"p{index}"
        self.current: UnitOfWork | None = None
        self.job: dict | None = None
        self.instance: Any = None
        self.started = 0.0
        self.deadline: float | None = None   # monotonic time by which the current job must end
        self.timeout = 0.0
        self.stop_reason: str | None = None  # set (once per job) when the job is interrupted
        self.stop_at: float | None = None
        self.abandoned = False
        self.thread: threading.Thread | None = None
        self._in_job = False
        self._lock = threading.Lock()
        self._forks = ForkGuard()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"processor-{self.index}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.exception("processor %d died; it will be replaced", self.index)
            current = self.current
            if current is not None:
                self.fetcher.unfetch(current)
            # its prefetched jobs too, not only the current one
            self.outcomes.persist(self.fetcher.release, "requeue")

    def _loop(self) -> None:
        state, outage = self.ctx.state, self.ctx.outage
        while not state.stopping:
            if not state.fetching:
                self.outcomes.persist(self.fetcher.release, "requeue of prefetched jobs")
                state.wait_until_fetching(1.0)
                continue
            try:
                unit = self.fetcher.fetch()
                outage.ok()
            except redis.RedisError as exc:  # an outage, or a refusal of another kind: one log line either way,
                time.sleep(outage.failed(exc))  # not a thread that dies and is replaced every second
                continue
            if unit is None:
                continue
            if not state.fetching:
                self.fetcher.unfetch(unit)  # released ahead of the rest of its batch, in order
                continue
            self.process(unit)
            if self.abandoned:
                return  # the job would not stop; this thread is left to it and the process is retiring
        self.outcomes.persist(self.fetcher.release, "requeue of prefetched jobs")

    def request_stop(self, reason: str, now: float, job: dict | None = None) -> bool:
        """Interrupt the running sync job ("timeout", "cancel", or "shutdown": it was requeued at the stop
        deadline); False if none runs or one was already sent.
        A cancel also sets the job's `cancelled` flag, for code that looks before the interrupt lands.

        The caller looked at this thread a moment ago; the job it saw may have ended and the next one begun
        since. So, under the lock: a timeout stops only a job past its own deadline, and a stop aimed at `job`
        (the dict the caller saw) only that job."""
        with self._lock:
            if not self._in_job or self.stop_reason is not None or self.thread is None:
                return False
            if job is not None and self.job is not job:
                return False
            if reason == "timeout" and (self.deadline is None or now < self.deadline):
                return False
            if reason == "cancel":
                self.instance._sidepunch_cancelled = True
            self.stop_reason, self.stop_at = reason, now
            interrupt(self.thread.ident)  # type: ignore[arg-type]
            return True

    def would_not_stop(self, now: float, grace: float) -> bool:
        """True if the job was interrupted `grace` seconds ago and still runs (blocked in a C call)."""
        stop_at = self.stop_at
        return stop_at is not None and self.current is not None and now >= stop_at + grace

    def abandon(self) -> Taken | None:
        """Take the current job away from this thread; its outcome is then recorded by the caller, and
        whatever the thread does later is ignored."""
        with self._lock:
            unit, self.current, self.deadline = self.current, None, None
            if unit is None:
                return None
            self.abandoned = True
            return Taken(unit, self.job, self.instance, self.started, self.timeout, self.stop_reason)

    def _release(self, unit: UnitOfWork) -> bool:
        """True if this thread still owns `unit` (it was not abandoned) and may record its outcome."""
        with self._lock:
            if self.current is not unit:
                return False
            self.current, self.deadline = None, None
            return True

    def process(self, unit: UnitOfWork) -> Outcome:
        """Run one job; returns how it ended (ABANDONED: the worker took it away; SUBMITTED: an async job, now
        the event loop's)."""
        ctx = self.ctx
        self.current, self.job, self.instance, self.stop_reason, self.stop_at = unit, None, None, None, None
        ctx.work.start(self.tid, unit.queue, unit.payload)
        self.started = started = time.monotonic()
        try:
            try:
                self.job = job = decode(unit.payload)
            except BaseException as problem:  # PayloadError, or MemoryError for a huge one: never rerun it
                self._release(unit)
                ctx.retry.kill_unparseable(unit, problem,
                                           persist=lambda w: self.outcomes.persist(w, "dead-set write"))
                return Outcome.DEAD
            if job_log.isEnabledFor(logging.INFO):
                job_line(job_log, logging.INFO, "start %.200s jid=%.100s queue=%s", job["class"], job.get("jid"),
                         unit.queue)
            try:
                self.instance = ctx.resolver.resolve(job["class"])()
                self.instance.jid = job.get("jid", "")
            except BaseException as exc:  # an unknown class, or its __init__ raised: a failure like any other
                return self._ended(unit, job, None, exc, None)
            if self.runner is not None and self.runner.is_async(self.instance):
                return self._submit(unit, job)
            self._arm_timeout(job, started)
            result, failure, reason = self._guarded(self._perform, self.instance, job, unit.queue)
            return self._ended(unit, job, result, failure, reason)
        finally:
            ctx.work.finish(self.tid)

    def _guarded(self, call: Any, *args: Any) -> tuple[Any, BaseException | None, str | None]:
        """Run `call(*args)` (the job) where an interrupt may stop it: (its result, what it raised, why it was
        interrupted).

        At most one Interrupted is ever sent per job, so after one was caught here none can follow; one that
        arrives just after the job ended is caught by the outer try, and the job's own ending stands."""
        result: Any = None
        failure: BaseException | None = None
        ran = finished = False
        while True:
            try:
                if not ran:
                    ran = True
                    try:
                        self._in_job = True
                        result = call(*args)
                        finished = True
                    except BaseException as exc:
                        failure = exc
                return result, failure, self._leave_job()
            except Interrupted as late:
                if failure is None and not finished:
                    failure = late

    def _leave_job(self) -> str | None:
        with self._lock:
            self._in_job = False
            if self.stop_reason is None:
                return None
            clear(threading.get_ident())  # an interrupt sent but not raised yet must not hit our own code
        if release_logging_locks():  # it landed inside a logging call: the other threads must go on logging
            log.warning("an interrupt stopped a job inside a logging call; its logging locks were released")
        return self.stop_reason

    def _ended(self, unit: UnitOfWork, job: dict, result: Any, failure: BaseException | None,
               reason: str | None) -> Outcome:
        self._forks.check("a job", 0 if failure is None else 1)
        if not self._release(unit):
            return Outcome.ABANDONED  # the worker took it away (it would not stop), not the exception
        outcome = self.outcomes.ended(unit, job, self.started, self.fetcher, self.instance, result, failure, reason,
                                      self.timeout)
        if outcome is Outcome.CANCELLED:  # once recorded: a hook that hangs cannot bring the job back
            call_on_cancel(self.instance, self.ctx.config.interrupt_grace)
        return outcome

    def _submit(self, unit: UnitOfWork, job: dict) -> Outcome:
        """Hand an async job to the event loop (waiting while --async-concurrency jobs are in flight)."""
        if not self._release(unit):
            return Outcome.ABANDONED
        if self.runner.submit(unit, job, self.instance, self.started, self.fetcher):
            self.fetcher.pace(time.monotonic() - self.started)
            return Outcome.SUBMITTED
        self.fetcher.unfetch(unit)  # the worker is stopping: it goes back with the prefetched jobs
        return Outcome.ABANDONED

    def _perform(self, instance: Any, job: dict, queue: str) -> Any:
        args = job.get("args")
        if type(args) is not list:
            raise BadJob(f"job args must be a JSON array, got {type(args).__name__}")
        chain = self.ctx.features.for_run("around_perform", instance, job, self.ctx.server_middleware)
        if chain:
            result = run_server_chain(chain, instance, job, queue,
                                      lambda: _ran(instance.perform(*args)))
            if isinstance(result, Reschedule):
                raise result
            return result
        return _ran(instance.perform(*args))

    def _arm_timeout(self, job: dict, started: float) -> None:
        self.timeout = job_timeout(job, self.ctx.config.job_timeout)
        if self.timeout > 0:
            self.deadline = started + self.timeout


def job_timeout(job: dict, default: float) -> float:
    """A job's `timeout` option in seconds (0: none), else the daemon's --job-timeout."""
    timeout = job.get("timeout")
    if type(timeout) not in (int, float) or timeout <= 0:
        return default
    return min(timeout, MAX_TIMEOUT)


def _ran(result: Any) -> Any:
    """perform's return value (kept only for classes with keep_result); a coroutine, generator or other awaitable
    from a plain `def perform` means its body never ran: a clear failure, never a silent "done"."""
    if result is None:  # most jobs: nothing to look at
        return None
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()  # never started: closing it runs nothing and avoids "never awaited" warnings
    elif not (inspect.isasyncgen(result) or inspect.isawaitable(result)):
        return result
    raise BadJob(f"perform returned a {type(result).__name__} instead of running: a plain def perform must do "
                 "its work itself (make it an async def to have it awaited); a generator perform is never run")
