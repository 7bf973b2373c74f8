"""Where a failed job goes, as a pure function of its payload and its class: the retry set, the dead set, or
nowhere (discarded). Sidekiq 6.4.1's JobRetry rules (SIDEKIQ_WIRE.md section 6), with no Redis, no job hooks and
no change to the payload, so code that only needs to know the answer (tracing) can ask without side effects.

server/retry.py's RetryPolicy applies the same rules when it records a failure, and it also runs the job's
`retry_in` hook, whose "kill" or "discard" this module takes as the `choice` argument. The two must agree:
tests/test_retries.py checks that they agree, on real Redis.

Imports nothing of sidepunch's but core.middleware (for Outcome).
"""
from __future__ import annotations

from typing import Any

from .middleware import Outcome

#: Retries for a job whose `retry` option is true (not a number): sidepunchd's --max-retries default, Sidekiq's.
DEFAULT_MAX_RETRIES = 25


def retry_option(msg: dict, instance: Any) -> Any:
    """The job's effective `retry` option: its payload's `retry`, else (missing or null) the job class's
    (Sidekiq's JobRetry#local); a job whose class never loaded (`instance` None) retries unless it says null."""
    if instance is None:
        return msg.get("retry", True)
    retry = msg.get("retry")
    return getattr(instance, "retry", True) if retry is None else retry


def next_retry_count(msg: dict) -> int:
    """The `retry_count` the failure writes: one more than the payload's, or 0 the first time it fails."""
    count = msg.get("retry_count")
    return count + 1 if type(count) is int else 0


def retry_limit(retry: Any, max_retries: int) -> int:
    """How many retries the job gets: its `retry` if that is an integer (not a bool), else `max_retries`."""
    return retry if type(retry) is int else max_retries


def failure_outcome(retry: Any, count: int, limit: int, choice: int | str | None = None) -> Outcome:
    """RETRY, DEAD or DISCARDED for a failure whose effective retry option is `retry` and that would be retry
    number `count` of `limit`; `choice` is what the job's retry_in hook returned ("kill", "discard", or
    anything else, which does not change where the job goes)."""
    if retry is False or retry is None or choice == "discard":
        return Outcome.DISCARDED
    if choice != "kill" and count < limit:
        return Outcome.RETRY
    return Outcome.DEAD


def predict(msg: dict, instance: Any, max_retries: int = DEFAULT_MAX_RETRIES) -> tuple[Outcome, int, int]:
    """(where the failure of this job goes, its next retry_count, its retry limit), without running the job's
    retry_in hook: a hook that answers "kill" or "discard" sends the job elsewhere than RETRY says."""
    retry = retry_option(msg, instance)
    count, limit = next_retry_count(msg), retry_limit(retry, max_retries)
    return failure_outcome(retry, count, limit), count, limit


__all__ = ["DEFAULT_MAX_RETRIES", "retry_option", "next_retry_count", "retry_limit", "failure_outcome", "predict"]
