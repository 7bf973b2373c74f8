"""Expiring jobs: `ExpiryFeature`, the job option `expires_in` (seconds; a class option, `@job(expires_in=...)` or
`.set(expires_in=...)`) turned into the payload field `expires_at`, and the check that drops a job fetched after it.

On push, `expires_at` = the job's due time + `expires_in`: the due time is its `at` when it is scheduled for later
(perform_in / perform_at), else the time of the push. So a job scheduled for 10:00 with expires_in=60 must start
by 10:01. `expires_at` is an epoch float, as Sidekiq Pro writes it.

In the worker, a job whose `expires_at` has passed when it is about to run (its first run or any retry: a job that
expired while it waited in the retry set, or that an admin retries from the dead set, is dropped too, as Sidekiq
Pro does) is not run: Expired ends it, and the worker acknowledges, logs and counts it (stat:expired), neither
failed nor dead. A payload is hostile input: an `expires_at` that is no finite number of seconds after 1970
(a string, a bool, null, a huge or negative number) is no deadline, and the job runs (logged once per job at
warning). Imports only sidepunch.core.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

from ..core.middleware import Expired, Feature

log = logging.getLogger("sidepunch.expiry")

#: The longest expires_in (seconds, about 3 years; client/options.py's MAX_SECONDS, which this module cannot import).
MAX_EXPIRES_IN = 10 ** 8
#: The latest expires_at taken as a deadline (epoch seconds, year 5138): a larger number is no time at all.
MAX_EXPIRES_AT = 1e11

__all__ = ["ExpiryFeature", "MAX_EXPIRES_IN", "deadline_of"]


def deadline_of(value: Any) -> float | None:
    """`expires_at` as a deadline (epoch seconds), or None when it is no deadline (see the module docstring)."""
    if type(value) not in (int, float):  # bool is not a number here; neither is a string
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        return None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_EXPIRES_AT):
        return None
    return seconds


def _expires_in(value: Any) -> float:
    """A pushed `expires_in`, checked as client/options.py checks the option: TypeError naming it otherwise."""
    if type(value) not in (int, float) or not 0 < value <= MAX_EXPIRES_IN:  # NaN fails the range too
        raise TypeError(f"expires_in must be a number of seconds (0 < n <= {MAX_EXPIRES_IN}), got {value!r:.80}")
    return float(value)


class ExpiryFeature(Feature):
    """Stamps `expires_at` on pushes that carry `expires_in`; drops runs of jobs past their `expires_at`."""

    payload_keys = frozenset({"expires_in", "expires_at"})

    def _now(self) -> float:
        return self.context.clock() if self.context is not None else time.time()

    def around_push(self, job: dict, call_next: Callable[[dict], Any]) -> Any:
        if job.get("expires_in") is not None:
            seconds = _expires_in(job["expires_in"])
            now = self._now()
            at = job.get("at")
            # check_at made `at` a finite number (or left a falsy one meaning "now")
            due = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) and at > now else now
            job["expires_at"] = due + seconds
        return call_next(job)

    def expired(self, job: dict) -> bool:
        """Whether this run comes after the job's deadline (False when it has none, or an unreadable one)."""
        if "expires_at" not in job:
            return False
        deadline = deadline_of(job["expires_at"])
        if deadline is None:
            log.warning("job %.200s jid=%.100s has expires_at=%.40r, which is no deadline: it runs",
                        job.get("class"), job.get("jid"), job["expires_at"])
            return False
        return self._now() > deadline

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        if self.expired(job):
            raise Expired()
        return call_next()

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        if self.expired(job):
            raise Expired()
        return await call_next()
