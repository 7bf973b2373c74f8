"""Unique jobs in the worker: `UniqueFeature` releases a unique job's lock when the job leaves every place.

The client takes the lock in the push itself (client/unique.py, core/lua/unique_push.lua): key
`sidepunch:unique:<digest>`, value JSON [jid, class], TTL unique_for seconds (shortened to expires_in, plus the
wait of a scheduled push). While it is held, a duplicate push is refused. The lock is released, always by a
compare-and-delete of the job's own value (core/lua/release_unique.lua), so a job never releases another's:

- when the job succeeds (`unique_until = "success"`, the default), after perform returned;
- when it starts (`unique_until = "start"`), before perform runs;
- when it dies or is discarded (`on_death`), or is cancelled (`sidepunch.api.cancel`);
- when crash recovery kills it to the dead set (`release_dead`: no on_death runs there);
- by its TTL otherwise: a process that vanished, or a job still waiting when its window ends.

It stays held while the job waits anywhere: queued, scheduled, in the retry set after a failure, back in the
schedule after a Reschedule or a rate limit (RateLimited is raised outside this feature, which is innermost),
or back on its queue after a worker stopped or died under it. An expiring job's lock ends at its deadline (see
core.unique.lock_ttl_ms), so an expired job, which never reaches this feature, does not keep it.

A release that meets a Redis error is logged and left to the TTL: it never turns a job that ran into a failure.
Imports core only.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import redis

from ..core import scripts
from ..core.middleware import Feature, MiddlewareContext, Reschedule
from ..core.payload import PayloadError, decode
from ..core.unique import OPTION, RELEASE_SCRIPT, UNTIL, held_lock

log = logging.getLogger("sidepunch.unique")


class UniqueFeature(Feature):
    """Releases the locks of unique jobs (payload key "unique_for") in the worker; see the module docstring."""

    payload_keys = frozenset({OPTION})

    def __init__(self, context: MiddlewareContext | None) -> None:
        super().__init__(context)
        self._script = scripts.unbound(RELEASE_SCRIPT)

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        lock = held_lock(job)
        if lock is None:
            return call_next()
        if job.get(UNTIL) == "start":
            self.release(lock, job, "started")
            return call_next()
        try:
            result = call_next()
        except BaseException:
            if getattr(instance, "_sidepunch_cancelled", False):
                self.release(lock, job, "cancelled")
            raise
        if not isinstance(result, Reschedule):
            self.release(lock, job, "succeeded")
        return result

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        lock = held_lock(job)
        if lock is None:
            return await call_next()
        if job.get(UNTIL) == "start":
            await asyncio.to_thread(self.release, lock, job, "started")
            return await call_next()
        try:
            result = await call_next()
        except BaseException:
            if getattr(instance, "_sidepunch_cancelled", False):  # not awaited: this task is being cancelled
                asyncio.get_running_loop().run_in_executor(None, self.release, lock, job, "cancelled")
            raise
        if not isinstance(result, Reschedule):
            await asyncio.to_thread(self.release, lock, job, "succeeded")
        return result

    def on_death(self, job: dict, exc: BaseException) -> None:
        lock = held_lock(job)
        if lock is not None:
            self.release(lock, job, "died")

    def release(self, lock: tuple[str, str], job: dict, why: str) -> bool:
        """Delete `lock` if this job holds it; False if it did not (or Redis failed: logged, left to the TTL)."""
        key, value = lock
        try:
            released = self._script(keys=[key], args=[value], client=self.context.redis)  # type: ignore[union-attr]
        except redis.RedisError as exc:
            log.warning("could not release the unique lock %s of jid=%.100s (%s): it lapses by its TTL", key,
                        job.get("jid"), exc)
            return False
        log.debug("unique lock %s of jid=%.100s: %s, %s", key, job.get("jid"), why,
                  "released" if released else "not held by it")
        return bool(released)


def release_dead(client: Any, payloads: list[bytes]) -> None:
    """Release the locks of unique jobs that crash recovery moved to the dead set (no worker's on_death runs
    there). Payloads are hostile: only those mentioning the option are decoded, and a lock is only deleted if it
    still holds the job's own value. A Redis error is logged; the locks then lapse by their TTL."""
    feature = UniqueFeature(MiddlewareContext(client))
    for raw in payloads:
        if OPTION.encode() not in raw:
            continue
        try:
            job = decode(raw)
            lock = held_lock(job)
        except (PayloadError, TypeError, ValueError):
            continue
        if lock is not None:
            feature.release(lock, job, "killed by crash recovery")
