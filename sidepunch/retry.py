"""What happens to a job that failed: the retry set, the dead set, or (retry=False) nothing but the handlers.

Follows Sidekiq 6.4.1 (SIDEKIQ_WIRE.md sections 6 and 7): the decision starts from the payload as it was
fetched, error fields are added in Sidekiq's key order, unknown keys survive, and the delay is
count**4 + 15 + rand(10) * (count + 1) seconds. Every write here goes in one MULTI together with the job's
acknowledgement, so a job is never both acknowledged and unrecorded.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
import traceback
import zlib
from typing import Any, Callable, Sequence

import redis

from . import keys, scripts
from .fetch import UnitOfWork
from .payload import PayloadError, decode, encode

log = logging.getLogger("sidepunch.retry")

DeathHandler = Callable[[dict, BaseException], Any]
Persist = Callable[[Callable[[], Any]], Any]


def _once(write: Callable[[], Any]) -> Any:
    return write()
MAX_MESSAGE = 10_000


def error_class_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def error_message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "!!! ERROR MESSAGE THREW AN ERROR !!!"
    return text[:MAX_MESSAGE]


def encode_backtrace(lines: Sequence[str]) -> str:
    """Sidekiq's error_backtrace: JSON, zlib-deflated, MIME Base64 with a newline every 60 characters."""
    raw = base64.b64encode(zlib.compress(encode(list(lines)))).decode("ascii")
    return "".join(raw[i:i + 60] + "\n" for i in range(0, len(raw), 60))


def decode_backtrace(value: str | list) -> list[str]:
    if isinstance(value, list):
        return value
    return json.loads(zlib.decompress(base64.b64decode(value)))


def backtrace_lines(exc: BaseException) -> list[str]:
    return [f"{f.filename}:{f.lineno}:in `{f.name}'" for f in reversed(traceback.extract_tb(exc.__traceback__))]


def _ruby_to_i(value: Any) -> int:
    """Ruby's #to_i of a JSON value, as Sidekiq applies it to the `backtrace` option ("12abc" -> 12)."""
    if type(value) in (int, float):
        return int(value)
    match = re.match(r"\s*[-+]?\d+", value) if isinstance(value, str) else None
    return int(match.group()) if match else 0


def retry_delay(count: int, rng: random.Random, base: int | None = None) -> float:
    return (count ** 4 + 15 if base is None else base) + rng.randrange(10) * (count + 1)


class DeadSet:
    """Writes to the dead set, trimmed by age and size in the same step (lua/dead.lua).

    `reason` is for a payload kept byte for byte (it cannot carry error fields): it goes to keys.DEAD_REASONS,
    and leaves that hash again when the entry is trimmed.
    """

    def __init__(self, max_jobs: int, timeout: float) -> None:
        self.max_jobs = max_jobs
        self.timeout = timeout
        self._script = scripts.unbound("dead")

    def add_into(self, pipe: redis.client.Pipeline | redis.Redis, payload: bytes, now: float,
                 reason: str | None = None) -> None:
        self._script(keys=[keys.DEAD, keys.DEAD_REASONS],
                     args=[payload, now, now - self.timeout, self.max_jobs, reason or ""], client=pipe)


class RetryPolicy:
    """Records a failed job: retry set, dead set or discard, then runs hooks and death handlers."""

    def __init__(self, client: redis.Redis, dead: DeadSet, max_retries: int, ack_into: Callable,
                 death_handlers: Sequence[DeathHandler] = (), rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._dead = dead
        self._max_retries = max_retries
        self._ack_into = ack_into
        self._death_handlers = tuple(death_handlers)
        self._rng = rng or random.Random()
        self._clock = clock

    def kill_unparseable(self, unit: UnitOfWork, problem: PayloadError, persist: Persist = _once) -> None:
        """A job that cannot be parsed goes to the dead set with its bytes exactly as read."""
        log.error("job from queue %s is unreadable (%s); moved to the dead set: %.200r", unit.queue, problem,
                  unit.payload)
        self._commit(unit, lambda pipe, now: self._dead.add_into(pipe, unit.payload, now), persist)

    def handle(self, unit: UnitOfWork, instance: Any, exc: BaseException, persist: Persist = _once) -> str:
        """Record the failure of `unit`; returns "retry", "dead" or "discarded".

        The decision (and any hook) runs once; `persist` retries only the Redis write, e.g. through an outage.
        """
        try:
            msg = decode(unit.payload)
        except PayloadError as problem:
            self.kill_unparseable(unit, problem, persist)
            return "dead"
        # Unlike Sidekiq, which drops it, a job whose class never loaded and that has no `retry` key is kept.
        retry = msg.get("retry", True if instance is None else None)
        if retry is None and instance is not None:
            # Sidekiq's JobRetry#local: a missing or null `retry` takes the job class's option, and that is
            # stored with the job, so the limit still holds after the poller puts the job back in its queue.
            retry = getattr(instance, "retry", True)
            if retry is not False and retry is not None:
                msg["retry"] = retry
        if retry is False or retry is None:
            self._commit(unit, None, persist)
            self._run_death_handlers(msg, exc)
            return "discarded"
        now = self._clock()
        self._add_error_fields(msg, exc, unit.queue, now)
        count = msg["retry_count"]
        limit = retry if type(retry) is int else self._max_retries
        choice = self._custom_delay(instance, count, exc)
        if choice == "discard":
            self._commit(unit, None, persist)
            return "discarded"
        if choice != "kill" and count < limit:
            delay = retry_delay(count, self._rng, choice if isinstance(choice, int) else None)
            payload = encode(msg)  # encoded once, so a retried write cannot add a second member
            self._commit(unit, lambda pipe, t: pipe.zadd(keys.RETRY, {payload: now + delay}), persist)
            return "retry"
        return self.exhaust(unit, instance, msg, exc, persist)

    def exhaust(self, unit: UnitOfWork, instance: Any, msg: dict, exc: BaseException,
                persist: Persist = _once) -> str:
        hook = getattr(instance, "retries_exhausted", None)
        if hook is not None:
            try:
                hook(msg, exc)
            except Exception:
                log.exception("retries_exhausted hook of %s raised", msg.get("class"))
        if msg.get("dead") is False:
            self._commit(unit, None, persist)
        else:
            payload = encode(msg)
            self._commit(unit, lambda pipe, now: self._dead.add_into(pipe, payload, now), persist)
        self._run_death_handlers(msg, exc)
        return "dead"

    def _add_error_fields(self, msg: dict, exc: BaseException, queue: str, now: float) -> None:
        msg["queue"] = msg.get("retry_queue") or queue
        msg["error_message"] = error_message(exc)
        msg["error_class"] = error_class_name(exc)
        if "retry_count" in msg and type(msg["retry_count"]) is int:
            msg["retried_at"] = now
            msg["retry_count"] += 1
        else:
            msg["failed_at"] = now
            msg["retry_count"] = 0
        limit = msg.get("backtrace")
        if limit is not None and limit is not False:  # Ruby truthiness: 0 keeps no lines but is still set
            lines = backtrace_lines(exc)
            msg["error_backtrace"] = encode_backtrace(lines if limit is True else lines[:_ruby_to_i(limit)])

    @staticmethod
    def _custom_delay(instance: Any, count: int, exc: BaseException) -> int | str | None:
        hook = getattr(instance, "retry_in", None)
        if hook is None:
            return None
        try:
            choice = hook(count, exc)
        except Exception:
            log.exception("retry_in of %s raised; using the default delay", type(instance).__qualname__)
            return None
        if choice in ("discard", "kill") or (type(choice) is int and choice > 0):
            return choice
        return None

    def _commit(self, unit: UnitOfWork, write: Callable | None, persist: Persist) -> None:
        def attempt() -> None:
            pipe = self._redis.pipeline(transaction=True)
            if write is not None:
                write(pipe, self._clock())
            self._ack_into(pipe, unit)
            pipe.execute()
        persist(attempt)

    def _run_death_handlers(self, msg: dict, exc: BaseException) -> None:
        for handler in self._death_handlers:
            try:
                handler(msg, exc)
            except Exception:
                log.exception("death handler %r raised", handler)
