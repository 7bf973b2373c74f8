"""What happens to a job that failed: the retry set, the dead set, or (retry=False) nothing but the handlers;
and to a job a middleware rescheduled (`reschedule`): back to the schedule, as fetched, not a failure.

Follows Sidekiq 6.4.1 (SIDEKIQ_WIRE.md sections 6 and 7): the decision starts from the payload as it was
fetched, error fields are added in Sidekiq's key order, unknown keys survive, and the delay is
count**4 + 15 + rand(10) * (count + 1) seconds. A job is acknowledged only once its outcome is written, so it
is never acknowledged and unrecorded (see `_commit`).

Whatever a job raises and whatever its hooks do, the job lands in exactly one place: if its retry or dead entry
cannot be built (a hook raised, a number is out of range) or Redis refuses to store it for a reason that is not
an outage, it goes to the dead set with its bytes as fetched and a reason beside them (keys.DEAD_REASONS).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import math
import random
import re
import time
import traceback
from typing import Any, Callable, Sequence

import redis

from ..core import keys
from ..core.connection import OUTAGE_ERRORS, RedisRefused
from .fetch import UnitOfWork
from .forks import ForkGuard
from ..core.jobsets import DeadSet, encode_backtrace
from ..core.middleware import DeathHandler, Outcome
from ..core.retries import failure_outcome, next_retry_count, retry_limit, retry_option
from ..features import FeatureSet
from ..core.payload import PayloadError, decode, encode

log = logging.getLogger("sidepunch.retry")

Persist = Callable[[Callable[[], Any]], Any]


def _once(write: Callable[[], Any]) -> Any:
    return write()


MAX_MESSAGE = 10_000


def _utf8(text: str) -> str:
    """`text` as a plain str that UTF-8 can carry: lone surrogates (from a job's message, a file name read with
    surrogateescape) become "?", so the entry that holds it can always be encoded."""
    return text.encode("utf-8", "replace").decode("utf-8")


def error_class_name(exc: BaseException) -> str:
    kind = type(exc)
    try:
        return _utf8(kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}")
    except BaseException:  # a class may set __module__ to anything; __qualname__ is always a str
        return _utf8(kind.__qualname__)


def error_message(exc: BaseException) -> str:
    try:
        return _utf8(str(exc)[:MAX_MESSAGE])
    except BaseException:  # a job's __str__ may raise anything, SystemExit included
        return "!!! ERROR MESSAGE THREW AN ERROR !!!"


def backtrace_lines(exc: BaseException) -> list[str]:
    return [_utf8(f"{f.filename}:{f.lineno}:in `{f.name}'") for f in reversed(traceback.extract_tb(exc.__traceback__))]


def _ruby_to_i(value: Any) -> int:
    """Ruby's #to_i of a JSON value, as Sidekiq applies it to the `backtrace` option ("12abc" -> 12)."""
    if type(value) in (int, float):
        return int(value)
    match = re.match(r"\s*[-+]?\d+", value) if isinstance(value, str) else None
    return int(match.group()) if match else 0


def retry_delay(count: int, rng: random.Random, base: int | None = None) -> float:
    return (count ** 4 + 15 if base is None else base) + rng.randrange(10) * (count + 1)


class RetryPolicy:
    """Records a failed job: retry set, dead set or discard, then runs hooks and death handlers."""

    def __init__(self, client: redis.Redis, dead: DeadSet, max_retries: int, ack_into: Callable,
                 death_handlers: Sequence[DeathHandler] = (), rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, features: FeatureSet | None = None) -> None:
        self._redis = client
        self._dead = dead
        self._max_retries = max_retries
        self._ack_into = ack_into
        self.death_handlers = tuple(death_handlers)  # the worker closes their instances at exit
        self._features = features or FeatureSet()
        self._rng = rng or random.Random()
        self._clock = clock
        self._forks = ForkGuard()

    def kill_unparseable(self, unit: UnitOfWork, problem: BaseException, persist: Persist = _once) -> None:
        """A job that cannot be parsed goes to the dead set with its bytes exactly as read."""
        log.error("job from queue %s is unreadable (%s); moved to the dead set: %.200r", unit.queue, problem,
                  unit.payload)
        self._commit(unit, self._untouched(unit, f"unreadable: {problem}"), persist)

    def handle(self, unit: UnitOfWork, instance: Any, exc: BaseException, persist: Persist = _once) -> Outcome:
        """Record the failure of `unit`; returns Outcome.RETRY, DEAD or DISCARDED.

        The decision (and any hook) runs once; `persist` retries only the Redis write, e.g. through an outage.
        Raises only what `persist` lets through (an outage it gave up on); the job then stays in its working list.
        """
        try:
            msg = decode(unit.payload)
        except PayloadError as problem:
            self.kill_unparseable(unit, problem, persist)
            return Outcome.DEAD
        try:
            outcome, write, mourn = self._decide(unit, instance, msg, exc)
        except BaseException as problem:  # a hook, an error message, a number out of range: the job still lands
            self._forks.check("a hook of the job")
            return self._bury(unit, exc, f"its failure could not be recorded ({_describe(problem)})", persist)
        try:
            self._commit(unit, write, persist)
        except OUTAGE_ERRORS:
            raise  # one that `persist` gave up on: the job stays in its working list, to be recovered
        except redis.RedisError as problem:  # e.g. a key of the wrong type: retrying cannot help
            return self._bury(unit, exc, f"Redis refused its {outcome} entry ({_describe(problem)})", persist)
        if mourn:
            self._run_death_handlers(msg, exc)
        return outcome

    def reschedule(self, unit: UnitOfWork, seconds: float, cause: BaseException,
                   persist: Persist = _once) -> Outcome:
        """Put `unit` back in the schedule, due `seconds` from now, with its payload as fetched (no retry count,
        no error fields: the poller gives it a fresh enqueued_at), then acknowledge it; Outcome.RESCHEDULED.
        If Redis refuses the entry for a reason other than an outage, the job goes to the dead set as fetched."""
        score = self._clock() + seconds
        try:
            self._commit(unit, lambda client, now: _schedule_into(client, unit.payload, score, now), persist)
        except OUTAGE_ERRORS:
            raise
        except redis.RedisError as problem:  # e.g. `schedule` holds another type
            return self._bury(unit, cause, f"Redis refused its schedule entry ({_describe(problem)})", persist)
        return Outcome.RESCHEDULED

    def _decide(self, unit: UnitOfWork, instance: Any, msg: dict,
                exc: BaseException) -> tuple[Outcome, Callable | None, bool]:
        """(outcome, the write that records it or None, whether death handlers run): runs the job's hooks."""
        # The rules are core/retries.py's (tracing asks them too). Unlike Sidekiq, which drops it, a job whose
        # class never loaded and that has no `retry` key is kept.
        retry = retry_option(msg, instance)
        if retry is False or retry is None:
            return Outcome.DISCARDED, None, True
        if instance is not None and msg.get("retry") is None:
            # Sidekiq's JobRetry#local: the class's option is stored with the job, so the limit still holds
            # after the poller puts the job back in its queue.
            msg["retry"] = retry
        now = self._clock()
        self._add_error_fields(msg, exc, unit.queue, now)
        count = msg["retry_count"]
        choice = self._custom_delay(instance, count, exc)
        outcome = failure_outcome(retry, count, retry_limit(retry, self._max_retries), choice)
        if outcome is Outcome.DISCARDED:
            return Outcome.DISCARDED, None, False
        if outcome is Outcome.RETRY:
            # Scored and encoded once, here: a retried write cannot add a second member, and a delay out of a
            # float's range fails now, into the dead set, rather than in the write.
            score = now + retry_delay(count, self._rng, choice if isinstance(choice, int) else None)
            payload = encode(msg)
            return Outcome.RETRY, lambda client, now: client.zadd(keys.RETRY, {payload: score}), False
        return self._exhaust(instance, msg, exc)

    def _exhaust(self, instance: Any, msg: dict, exc: BaseException) -> tuple[Outcome, Callable | None, bool]:
        hook = getattr(instance, "retries_exhausted", None)
        if hook is not None:
            try:
                hook(msg, exc)
            except BaseException:
                self._forks.check("retries_exhausted", 1)
                log.exception("retries_exhausted hook of %s raised", msg.get("class"))
            self._forks.check("retries_exhausted")
        if msg.get("dead") is False:
            return Outcome.DEAD, None, True
        payload = encode(msg)
        return Outcome.DEAD, lambda client, now: self._dead.add_into(client, payload, now), True

    def _bury(self, unit: UnitOfWork, exc: BaseException, why: str, persist: Persist) -> Outcome:
        """The last resort: the dead set, bytes as fetched, with `why` as its reason. Any refusal is retried."""
        reason = f"{why}; it had failed with {error_class_name(exc)}: {error_message(exc)}"
        log.error("job from queue %s moved to the dead set as fetched: %.500s", unit.queue, reason)
        self._commit(unit, self._untouched(unit, reason), persist, stubborn=True)
        self._run_death_handlers(decode(unit.payload), exc)
        return Outcome.DEAD

    def _untouched(self, unit: UnitOfWork, reason: str) -> Callable:
        return lambda client, now: self._dead.add_into(client, unit.payload, now, reason=reason)

    def _add_error_fields(self, msg: dict, exc: BaseException, queue: str, now: float) -> None:
        retry_queue = msg.get("retry_queue")
        msg["queue"] = retry_queue if type(retry_queue) is str and retry_queue else queue
        msg["error_message"] = error_message(exc)
        msg["error_class"] = error_class_name(exc)
        msg["retried_at" if type(msg.get("retry_count")) is int else "failed_at"] = now
        msg["retry_count"] = next_retry_count(msg)
        limit = msg.get("backtrace")
        if limit is not None and limit is not False:  # Ruby truthiness: 0 keeps no lines but is still set
            lines = backtrace_lines(exc)
            msg["error_backtrace"] = encode_backtrace(lines if limit is True else lines[:_ruby_to_i(limit)])

    def _custom_delay(self, instance: Any, count: int, exc: BaseException) -> int | str | None:
        hook = getattr(instance, "retry_in", None)
        if hook is None:
            return None
        try:
            choice = hook(count, exc)
        except BaseException:
            self._forks.check("retry_in", 1)
            log.exception("retry_in of %s raised; using the default delay", type(instance).__qualname__)
            return None
        self._forks.check("retry_in")
        if type(choice) is str and choice in ("discard", "kill") or (type(choice) is int and choice > 0):
            return choice
        return None

    def _commit(self, unit: UnitOfWork, write: Callable | None, persist: Persist, stubborn: bool = False) -> None:
        """Record the outcome (`write`, if any), then acknowledge the job, each through `persist`.

        Not one MULTI: Redis runs the rest of a MULTI when one command in it fails (a key of another type, a
        script error), which would acknowledge a job whose record failed. A process that dies between the two
        steps leaves the job in both places, to run again; never in neither. Both steps are idempotent, so
        `persist` may repeat them. `stubborn`: any refusal counts as an outage (retried with backoff, logged
        once), since there is no place left to fall back to. If `persist` gave up on the record (it returns
        None at the shutdown deadline), the job is not acknowledged: it stays in its working list, to recover.
        """
        self._forks.check("a hook of the job")  # no forked child of a job ever writes
        if write is not None and persist(lambda: self._record(write, stubborn)) is not True:
            return
        persist(lambda: self._acknowledge(unit))

    def _record(self, write: Callable, stubborn: bool) -> bool:
        try:
            write(self._redis, self._clock())
            return True
        except redis.RedisError as exc:
            if stubborn and not isinstance(exc, OUTAGE_ERRORS):
                raise RedisRefused(str(exc)) from exc
            raise

    def _acknowledge(self, unit: UnitOfWork) -> None:
        pipe = self._redis.pipeline(transaction=False)
        self._ack_into(pipe, unit)
        pipe.execute()  # nothing is sent when the fetch needs no acknowledgement (basic fetch)

    def _run_death_handlers(self, msg: dict, exc: BaseException) -> None:
        for handler in self._features.for_death(msg, self.death_handlers):
            try:
                handler(msg, exc)
            except BaseException:
                self._forks.check("a death handler", 1)
                log.exception("death handler %r raised", handler)
            self._forks.check("a death handler")


def _schedule_into(client: Any, payload: bytes, score: float, now: float) -> None:
    """ZADD `payload` to the schedule, never onto a byte-identical member already there (two copies of one job
    would become one): such a twin gets its own member, with `enqueued_at` set to a time no other copy has."""
    if client.zadd(keys.SCHEDULE, {payload: score}, nx=True):
        return
    msg, stamp = decode(payload), now
    while True:
        msg["enqueued_at"] = stamp
        if client.zadd(keys.SCHEDULE, {encode(msg): score}, nx=True):
            return
        stamp = math.nextafter(stamp, math.inf)


def _describe(problem: BaseException) -> str:
    return f"{error_class_name(problem)}: {error_message(problem)}"
