"""LimitsFeature: a job class's `limits = [...]` (sidepunch.limits) applied to each of its runs in the daemon.

Before the job runs, one script call takes a slot of every limiter the class lists, all or none
(core/limiting.py, lua/limit_acquire.lua). When one refuses, the job raises RateLimited before call_next: it
goes back to the schedule as fetched, is not run, not a failure, not a retry, and counts in stat:rate_limited;
its delay is the limiter's own estimate (a window or bucket knows when its next slot frees; a concurrent limiter
estimates from its average hold time and how many wait), spread with jitter, and the job counts in the limiter's
waiting set until it gets a slot. Concurrent slots are leases renewed while the job runs (core.limiting.Leases)
and given back however the job ends: it returns or raises, times out, is cancelled or interrupted at shutdown
(sync jobs: a `finally`; async jobs: a shielded release). A worker that vanishes keeps them one lease at most.

Only classes with a true `limits` attribute come here (the Feature seam's class_attrs gate), so plain jobs pay
nothing. Imports sidepunch.core and sidepunch.limits; nothing of the server.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ..core import limiting
from ..core.middleware import Feature, MiddlewareContext, RateLimited
from ..limits import MAX_SECONDS, Limiter, check_limits

log = logging.getLogger("sidepunch.limits")


@dataclass(frozen=True)
class Plan:
    """One job class's limiters, checked once per process, and which of them are concurrent."""
    limiters: tuple[Limiter, ...]
    concurrent: tuple[Limiter, ...]


class LimitsFeature(Feature):
    """Takes a slot of each of a job class's limiters before it runs; gives its concurrent slots back after."""

    class_attrs = ("limits",)

    def __init__(self, context: MiddlewareContext | None) -> None:
        super().__init__(context)
        self._plans: dict[int, tuple[Any, Plan]] = {}  # id(limits value) -> (the value, kept alive; its plan)
        self._scripts = limiting.Scripts()  # two Script objects; nothing is sent before a limited job runs
        self._leases = limiting.Leases(lambda: self.context.redis, self._scripts.release)  # type: ignore[union-attr]
        self._rng = random.Random()
        self._warned: set[str] = set()

    def plan(self, instance: Any) -> Plan:
        """The job's limiters (its class's `limits`), checked the first time this process meets that list;
        a bad one raises TypeError or ValueError, a failure of the job like any other."""
        value = getattr(instance, "limits", None)
        found = self._plans.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        limiters = check_limits(value, type(instance).__qualname__)
        plan = Plan(limiters, tuple(lim for lim in limiters if lim.kind == "concurrent"))
        if value is getattr(type(instance), "limits", None):  # one per class; a per-instance list is not kept
            self._plans[id(value)] = (value, plan)
        return plan

    def take(self, plan: Plan, job: dict, token: str) -> None:
        """Take a slot of every limiter of the plan for `token`, or raise RateLimited. The token is held (for
        renewal, and for the caller's `finally`) before the script runs: an interrupt landing anywhere after
        the slots were taken still finds them to give back."""
        if plan.concurrent:
            self._leases.hold(token, plan.concurrent)
        jid = job.get("jid")
        who = jid if type(jid) is str and jid else token
        refusal, conflicts = limiting.take(self.context.redis, self._scripts.acquire,  # type: ignore[union-attr]
                                           plan.limiters, token, who, self._rng)
        if conflicts:
            self._warn(conflicts, plan)
        if refusal is not None:
            self._leases.drop(token)
            raise RateLimited(min(refusal.delay, MAX_SECONDS), refusal.limiter)

    def give_back(self, plan: Plan, token: str, started: float) -> None:
        """Release the token's concurrent slots, if it holds any. Never raises: a release that fails (an outage,
        or the interrupt of a timed-out job landing here) is tried once more, then left to the lease's expiry."""
        if not self._leases.drop(token):
            return
        for attempt in (1, 2):
            try:
                limiting.give_back(self.context.redis, self._scripts.release,  # type: ignore[union-attr]
                                   plan.concurrent, token, time.monotonic() - started)
                return
            except BaseException as exc:  # an Interrupted is sent at most once per job: the retry is not hit
                if attempt == 2:
                    log.warning("could not release the concurrency slots of %s (%s); they free when their lease "
                                "runs out", ", ".join(lim.name for lim in plan.concurrent), exc)

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        plan = self.plan(instance)
        token, started = uuid.uuid4().hex, time.monotonic()
        try:
            self.take(plan, job, token)
            return call_next()
        finally:
            if plan.concurrent:
                self.give_back(plan, token, started)

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        plan = self.plan(instance)
        loop = asyncio.get_running_loop()
        token, started = uuid.uuid4().hex, time.monotonic()
        taking = loop.run_in_executor(None, self.take, plan, job, token)  # no Redis round trip on the loop
        try:
            try:
                await asyncio.shield(taking)
            except asyncio.CancelledError:  # the take goes on in its thread: give back what it took, after
                if plan.concurrent:
                    taking.add_done_callback(lambda _: loop.run_in_executor(None, self.give_back, plan, token,
                                                                            started))
                raise
            return await call_next()
        finally:
            if plan.concurrent and taking.done():  # shielded: a job cancelled while releasing still releases
                await asyncio.shield(loop.run_in_executor(None, self.give_back, plan, token, started))

    def _warn(self, names: list[str], plan: Plan) -> None:
        for name in names:
            if name not in self._warned:
                self._warned.add(name)
                mine = next((lim for lim in plan.limiters if lim.name == name), None)
                log.warning("the rate limit %s is defined differently elsewhere; this process uses %r (define "
                            "each limiter once, in a module every process imports)", name, mine)
