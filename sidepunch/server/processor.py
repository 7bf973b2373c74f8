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
from typing import Any, Callable

import redis

from ..core.connection import OUTAGE_ERRORS
from .fetch import UnitOfWork
from .forks import ForkGuard
from ..core.middleware import Outcome, Reschedule, check_delay, run_server_chain
from ..core.payload import decode
from .retry import error_class_name, error_message
from .state import ChildContext

log = logging.getLogger("sidepunch.processor")
#: One line per job start and finish; `--log-jobs off` (or a level above INFO) silences it.
job_log = logging.getLogger("sidepunch.job")
#: A job's `timeout` beyond this many seconds (about 31 years) means no practical limit; capped so that the
#: deadline stays a float whatever integer the payload holds.
MAX_TIMEOUT = 10 ** 9


class BadJob(Exception):
    """The payload parses but cannot be run as given (e.g. args is not a list)."""


class Processor:
    """Duties: fetch while the child is fetching, run each job, acknowledge or hand it to retry."""

    def __init__(self, index: int, ctx: ChildContext, fetcher: Any) -> None:
        self.index = index
        self.ctx = ctx
        self.fetcher = fetcher
        self.tid = f"p{index}"
        self.current: UnitOfWork | None = None
        self.instance: Any = None
        self.deadline: float | None = None   # monotonic time by which the current job must end
        self.timeout = 0.0
        self.abandoned = False
        self.thread: threading.Thread | None = None
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
            self._persist(self.fetcher.release, "requeue")  # its prefetched jobs too, not only the current one

    def _loop(self) -> None:
        state, outage = self.ctx.state, self.ctx.outage
        while not state.stopping:
            if not state.fetching:
                self._persist(self.fetcher.release, "requeue of prefetched jobs")
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
                return  # the job outlived its timeout; this thread is left to it and the process is retiring
        self._persist(self.fetcher.release, "requeue of prefetched jobs")

    def abandon(self) -> tuple[UnitOfWork, Any, float] | None:
        """Take the current job away from this thread (it timed out); its outcome is then recorded by the
        caller, and whatever the thread does later is ignored."""
        with self._lock:
            unit, self.current, self.deadline = self.current, None, None
            if unit is None:
                return None
            self.abandoned = True
            return unit, self.instance, self.timeout

    def _release(self, unit: UnitOfWork) -> bool:
        """True if this thread still owns `unit` (it was not abandoned) and may record its outcome."""
        with self._lock:
            if self.current is not unit:
                return False
            self.current, self.deadline = None, None
            return True

    def process(self, unit: UnitOfWork) -> Outcome:
        """Run one job; returns how it ended (ABANDONED: the worker took it away, e.g. it timed out)."""
        ctx = self.ctx
        self.current, self.instance = unit, None
        ctx.work.start(self.tid, unit.queue, unit.payload)
        started = time.monotonic()
        try:
            try:
                job = decode(unit.payload)
            except BaseException as problem:  # PayloadError, or MemoryError for a huge one: never rerun it
                self._release(unit)
                ctx.retry.kill_unparseable(unit, problem, persist=lambda w: self._persist(w, "dead-set write"))
                return Outcome.DEAD
            try:
                self._arm_timeout(job, started)
                if job_log.isEnabledFor(logging.INFO):
                    job_log.info("start %.200s jid=%.100s queue=%s", job["class"], job.get("jid"), unit.queue)
                self.instance = ctx.resolver.resolve(job["class"])()
                self.instance.jid = job.get("jid", "")
                self._perform(self.instance, job, unit.queue)
            except BaseException as exc:  # whatever it raised, SystemExit and CancelledError included, it failed
                self._forks.check("a job", 1)
                if not self._release(unit):
                    return Outcome.ABANDONED  # the worker took it away (timeout, shutdown), not the exception
                if isinstance(exc, Reschedule):
                    return self._reschedule(unit, job, exc, started)
                return self._fail(unit, job, exc, started)
            self._forks.check("a job")
            if not self._release(unit):
                return Outcome.ABANDONED
            return self._done(unit, job, started)
        finally:
            ctx.work.finish(self.tid)

    def _done(self, unit: UnitOfWork, job: dict, started: float) -> Outcome:
        ctx = self.ctx
        ctx.counters.record(failed=False)
        elapsed = time.monotonic() - started
        if self.fetcher.ack(unit, elapsed):
            self._persist(self.fetcher.send_acks, "acknowledge")
        if ctx.config.max_jobs and ctx.counters.total_processed >= ctx.config.max_jobs:
            ctx.state.go_quiet()  # the child asks the master for its replacement on its next tick
        if job_log.isEnabledFor(logging.INFO):
            job_log.info("done %.200s jid=%.100s queue=%s %.3fs", job["class"], job.get("jid"), unit.queue, elapsed)
        return Outcome.DONE

    def _reschedule(self, unit: UnitOfWork, job: dict, exc: Reschedule, started: float) -> Outcome:
        """Back to the schedule, not a failure; a Reschedule whose delay was tampered with is a failure."""
        try:
            seconds = check_delay(exc.seconds)
        except BaseException as bad:
            return self._fail(unit, job, bad, started)
        outcome = self.ctx.retry.reschedule(unit, seconds, exc,
                                            persist=lambda write: self._persist(write, "schedule write"))
        self.ctx.counters.record(failed=outcome is not Outcome.RESCHEDULED)
        if self.ctx.config.max_jobs and self.ctx.counters.total_processed >= self.ctx.config.max_jobs:
            self.ctx.state.go_quiet()
        job_log.info("reschedule %.200s jid=%.100s queue=%s %.3fs in %gs -> %s", job["class"], job.get("jid"),
                     unit.queue, time.monotonic() - started, seconds, outcome)
        return outcome

    def _fail(self, unit: UnitOfWork, job: dict, exc: BaseException, started: float) -> Outcome:
        self.ctx.counters.record(failed=True)
        outcome = self.ctx.retry.handle(unit, self.instance, exc,
                                        persist=lambda write: self._persist(write, "retry-set write"))
        job_log.warning("fail %.200s jid=%.100s queue=%s %.3fs %s: %.1000s -> %s", job["class"], job.get("jid"),
                        unit.queue, time.monotonic() - started, error_class_name(exc), error_message(exc), outcome)
        return outcome

    def _perform(self, instance: Any, job: dict, queue: str) -> None:
        args = job.get("args")
        if type(args) is not list:
            raise BadJob(f"job args must be a JSON array, got {type(args).__name__}")
        if self.ctx.server_middleware:
            result = run_server_chain(self.ctx.server_middleware, instance, job, queue,
                                      lambda: _ran(instance.perform(*args)))
            if isinstance(result, Reschedule):
                raise result
        else:
            result = instance.perform(*args)
            if result is not None:
                _ran(result)

    def _arm_timeout(self, job: dict, started: float) -> None:
        timeout = job.get("timeout")
        if type(timeout) not in (int, float) or timeout <= 0:
            timeout = self.ctx.config.job_timeout
        elif timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        self.timeout = timeout
        if timeout > 0:
            self.deadline = started + timeout

    def _persist(self, write: Callable[[], Any], what: str) -> Any:
        """Run a Redis write, retrying through outages until the hard deadline."""
        outage = self.ctx.outage
        while True:
            try:
                result = write()
                outage.ok()
                return result
            except OUTAGE_ERRORS as exc:
                pause = outage.failed(exc)
                if self.ctx.state.past_hard_deadline():
                    log.error("gave up on a %s at shutdown (%s); reliable fetch keeps the job in the "
                              "working list for recovery", what, exc)
                    return None
                time.sleep(pause)


def _ran(result: Any) -> None:
    """perform's return value is ignored, but a coroutine or generator means its body never ran."""
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()  # never started: closing it runs nothing and avoids "never awaited" warnings
    elif not inspect.isasyncgen(result):
        return
    raise BadJob(f"perform returned a {type(result).__name__} instead of running: an async def or a generator "
                 "perform is never run; define it with a plain def")
