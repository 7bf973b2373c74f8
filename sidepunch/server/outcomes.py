"""Recording how a job ended, for the processor threads (sync jobs) and the event loop's recorder (async jobs).

One place for what follows a job: count it, write its retry/dead/schedule entry or its kept result, acknowledge
it, and log its line. A Redis write that fails because Redis is down or refusing commands is retried until it
lands or the worker's hard deadline passes (reliable fetch then still holds the job). Acknowledgements go
through an `Acks` (the thread's fetcher, or the recorder's batch): `ack(unit, seconds)` notes one and says
whether to send now, `send_acks()` sends.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from typing import Any, Callable, Iterator, Protocol

import redis

from ..core import keys
from ..core.connection import OUTAGE_ERRORS
from ..core.errors import JobTimeout
from ..core.middleware import Expired, Outcome, RateLimited, Reschedule, check_delay
from .fetch import UnitOfWork
from .logs import JOB_LOGGER, job_line
from .retry import error_class_name, error_message
from .state import ChildContext

log = logging.getLogger("sidepunch.processor")
#: One line per job start and finish; `--log-jobs off` (or a level above INFO) silences it.
job_log = logging.getLogger(JOB_LOGGER)
#: The longest keep_result (seconds) a class may declare (client/job.py checks the class attribute).
MAX_KEEP = 10 ** 8


class Acks(Protocol):
    def ack(self, unit: UnitOfWork, seconds: float = 0.0) -> bool: ...
    def send_acks(self) -> None: ...


class PendingAcks:
    """Acknowledgements collected by the async recorder and sent in one pipeline per batch."""

    def __init__(self, client: redis.Redis, ack_into: Callable[[Any, UnitOfWork], None]) -> None:
        self._redis = client
        self._ack_into = ack_into
        self._pending: list[UnitOfWork] = []

    def ack(self, unit: UnitOfWork, seconds: float = 0.0) -> bool:
        self._pending.append(unit)
        return False

    def send_acks(self) -> None:
        if self._pending:
            pipe = self._redis.pipeline(transaction=False)
            for unit in self._pending:
                self._ack_into(pipe, unit)
            pipe.execute()
            self._pending = []


def timeout_error(seconds: float) -> JobTimeout:
    return JobTimeout(f"job ran longer than its {seconds:g}s timeout and was stopped")


class Outcomes:
    """The writes and log lines that end a job, shared by every way a job runs."""

    def __init__(self, ctx: ChildContext) -> None:
        self.ctx = ctx

    def done(self, unit: UnitOfWork, job: dict, started: float, acks: Acks, instance: Any = None,
             result: Any = None) -> Outcome:
        ctx = self.ctx
        elapsed = time.monotonic() - started
        ctx.counters.record(False, False, job.get("wrapped") or job["class"], elapsed, unit.queue)
        keep = getattr(instance, "keep_result", None)
        if keep:  # opt-in: the only classes that pay a round trip for their result
            self._keep(job, result, keep)
        if acks.ack(unit, elapsed):
            self.persist(acks.send_acks, "acknowledge")
        self._check_job_limit()
        if job_log.isEnabledFor(logging.INFO):  # checked here too: at WARN a job pays no call for its lines
            job_line(job_log, logging.INFO, "done %.200s jid=%.100s queue=%s %.3fs", job["class"], job.get("jid"),
                     unit.queue, elapsed)
        return Outcome.DONE

    def _keep(self, job: dict, result: Any, keep: Any) -> None:
        """Write the kept result. The class's keep_result was checked when it was defined; one the job set on
        itself may be anything, and a result that cannot be kept must not undo a job that ran."""
        jid = job.get("jid")
        if type(keep) is not int or not 0 < keep <= MAX_KEEP:
            log.warning("the result of %.200s jid=%.100s is not kept: keep_result must be a number of seconds "
                        "(int, 1 to %d), got %.100r", job.get("class"), jid, MAX_KEEP, keep)
        elif type(jid) is str and jid:
            record = result_record(job, result)
            self.persist(lambda: self.ctx.redis.set(keys.result(jid), record, ex=keep), "result write")

    def ended(self, unit: UnitOfWork, job: dict, started: float, acks: Acks, instance: Any, result: Any,
              failure: BaseException | None, reason: str | None, timeout: float) -> Outcome:
        """Record a job that ran (a thread's or the event loop's) by how it ended: done if it returned, whatever
        stop was asked; else cancelled, a JobTimeout failure, a reschedule, or the failure it raised. The
        caller runs an `on_cancel` hook after this, once the job is recorded."""
        if failure is None:
            return self.done(unit, job, started, acks, instance, result)
        if reason == "cancel":
            return self.cancelled(unit, job, started, acks)
        if reason == "timeout":
            failure = timeout_error(timeout)
        if isinstance(failure, Expired):
            return self.expired(unit, job, started, acks)
        if isinstance(failure, RateLimited):
            return self.rate_limited(unit, job, failure, instance)
        if isinstance(failure, Reschedule):
            return self.reschedule(unit, job, failure, started, instance)
        return self.fail(unit, job, failure, started, instance)

    def cancelled(self, unit: UnitOfWork, job: dict, started: float, acks: Acks) -> Outcome:
        """Stopped by sidepunch.api.cancel: acknowledged, counted (processed and cancelled), not retried."""
        elapsed = time.monotonic() - started
        self.ctx.counters.record(False, True, job.get("wrapped") or job["class"], elapsed, unit.queue)
        if acks.ack(unit, 1.0):  # sent at once: a cancelled job must not run again if the process dies now
            self.persist(acks.send_acks, "acknowledge")
        self._check_job_limit()
        job_log.warning("cancelled %.200s jid=%.100s queue=%s %.3fs", job["class"], job.get("jid"), unit.queue,
                        elapsed)
        return Outcome.CANCELLED

    def expired(self, unit: UnitOfWork, job: dict, started: float, acks: Acks) -> Outcome:
        """Fetched after its deadline (a feature raised Expired before it ran): acknowledged, not run, counted in
        stat:expired; neither processed, failed nor dead."""
        self.ctx.counters.event("expired")
        if acks.ack(unit, 1.0):  # sent at once, as for a cancelled job
            self.persist(acks.send_acks, "acknowledge")
        job_log.info("expired %.200s jid=%.100s queue=%s expires_at=%.40r", job["class"], job.get("jid"),
                     unit.queue, job.get("expires_at"))
        return Outcome.EXPIRED

    def rate_limited(self, unit: UnitOfWork, job: dict, exc: RateLimited, instance: Any) -> Outcome:
        """Over a rate limit (a feature raised RateLimited before it ran): back in the schedule as fetched, counted
        in stat:rate_limited, not as a run or a failure."""
        outcome, seconds = self._put_back(unit, job, exc, time.monotonic(), instance)
        if seconds is None:
            return outcome
        if outcome is Outcome.RESCHEDULED:
            self.ctx.counters.event("rate_limited")
            outcome = Outcome.RATE_LIMITED
        if job_log.isEnabledFor(logging.INFO):
            job_line(job_log, logging.INFO, "rate limited %.200s jid=%.100s queue=%s by %.200s, again in %.3fs",
                     job["class"], job.get("jid"), unit.queue, exc.limiter, seconds)
        return outcome

    def reschedule(self, unit: UnitOfWork, job: dict, exc: Reschedule, started: float, instance: Any) -> Outcome:
        """Back to the schedule, not a failure; a Reschedule whose delay was tampered with is a failure."""
        outcome, seconds = self._put_back(unit, job, exc, started, instance)
        if seconds is None:
            return outcome
        elapsed = time.monotonic() - started
        self.ctx.counters.record(outcome is not Outcome.RESCHEDULED, False, job.get("wrapped") or job["class"],
                                 elapsed, unit.queue)
        self._check_job_limit()
        job_log.info("reschedule %.200s jid=%.100s queue=%s %.3fs in %gs -> %s", job["class"], job.get("jid"),
                     unit.queue, elapsed, seconds, outcome)
        return outcome

    def _put_back(self, unit: UnitOfWork, job: dict, exc: Reschedule, started: float,
                  instance: Any) -> tuple[Outcome, float | None]:
        """The schedule write of a Reschedule or RateLimited: (its outcome, the delay); a delay that was tampered
        with fails the job instead: (that failure's outcome, None)."""
        try:
            seconds = check_delay(exc.seconds)
        except BaseException as bad:
            return self.fail(unit, job, bad, started, instance), None
        return self.ctx.retry.reschedule(unit, seconds, exc,
                                         persist=lambda write: self.persist(write, "schedule write")), seconds

    def fail(self, unit: UnitOfWork, job: dict, exc: BaseException, started: float, instance: Any) -> Outcome:
        elapsed = time.monotonic() - started
        self.ctx.counters.record(True, False, job.get("wrapped") or job["class"], elapsed, unit.queue)
        outcome = self.ctx.retry.handle(unit, instance, exc,
                                        persist=lambda write: self.persist(write, "retry-set write"))
        job_log.warning("fail %.200s jid=%.100s queue=%s %.3fs %s: %.1000s -> %s", job["class"], job.get("jid"),
                        unit.queue, elapsed, error_class_name(exc), error_message(exc), outcome)
        if self.ctx.on_failure is not None:  # --error-handler, --metrics-port (hooks.failure_hook)
            self.ctx.on_failure(job, exc, outcome)
        return outcome

    def _check_job_limit(self) -> None:
        ctx = self.ctx
        if ctx.config.max_jobs and ctx.counters.total_processed >= ctx.config.max_jobs:
            ctx.state.go_quiet()  # the worker asks the master for its replacement on its next tick

    def persist(self, write: Callable[[], Any], what: str) -> Any:
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


def result_record(job: dict, result: Any) -> str:
    """The JSON kept under keys.result(jid): the value, or why it could not be kept (not JSON)."""
    record = {"jid": job.get("jid"), "class": job.get("class"), "finished_at": time.time()}
    try:
        return json.dumps({**record, "result": result}, allow_nan=False, separators=(",", ":"))
    except Exception as exc:  # not JSON (TypeError, ValueError, RecursionError), or a value that raises its own
        log.warning("the result of %.200s jid=%.100s is not JSON and is not kept: %s", job.get("class"),
                    job.get("jid"), exc)
        return json.dumps({**record, "error": f"the return value is not JSON: {error_message(exc)}"[:1000]},
                          separators=(",", ":"))


def claim_on_cancel(instance: Any) -> Callable[[], Any] | None:
    """The job's `on_cancel(self)` hook the first time it is asked for, else None: it runs once, whichever
    part of the worker records the job (the thread, the event loop, or the pool as the process exits)."""
    hook = getattr(instance, "on_cancel", None)
    if hook is None or getattr(instance, "_sidepunch_hooked", False):
        return None
    instance._sidepunch_hooked = True
    return hook


def call_on_cancel(instance: Any, limit: float) -> None:
    """Run the on_cancel hook on this (non-loop) thread, after the job was recorded: a hook that hangs cannot
    bring a cancelled job back. What it raises is logged, never propagated; an async hook is awaited on an
    event loop of its own for at most `limit` seconds."""
    hook = claim_on_cancel(instance)
    if hook is None:
        return
    with _hook_reported(instance, limit):
        pending = hook()
        if inspect.isawaitable(pending):
            asyncio.run(_awaited(pending, limit))


async def await_on_cancel(instance: Any, limit: float) -> None:
    """The on_cancel hook, on the event loop, after the job was recorded; at most `limit` seconds for an async
    one (a sync one that blocks blocks the loop: see the README)."""
    hook = claim_on_cancel(instance)
    if hook is None:
        return
    with _hook_reported(instance, limit):
        pending = hook()
        if inspect.isawaitable(pending):
            await _awaited(pending, limit)


@contextlib.contextmanager
def _hook_reported(instance: Any, limit: float) -> Iterator[None]:
    """What an on_cancel hook raises is logged, never propagated (it ran after the job was recorded)."""
    try:
        yield
    except TimeoutError:
        log.warning("on_cancel of %s did not finish within %gs; left unfinished", type(instance).__qualname__,
                    limit)
    except BaseException:
        log.exception("on_cancel of %s raised", type(instance).__qualname__)


async def _awaited(awaitable: Any, limit: float) -> Any:
    async with asyncio.timeout(limit):
        return await awaitable
