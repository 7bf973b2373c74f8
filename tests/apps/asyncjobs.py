"""Async and interruptible jobs for the issue-11 tests. They report to Redis (the default client) so tests see
what ran: `SADD ran <jid>` and `INCR runs:<jid>` count each execution; `SADD began <jid>` marks a start (a set,
apart from the list `started` that testjobs use)."""
import asyncio
import time

import sidepunch

from testjobs import _redis


def _mark(jid, key="ran"):
    r = _redis()
    r.sadd(key, jid)
    r.incr(f"runs:{jid}")


class Nap(sidepunch.Job):
    """await asyncio.sleep(seconds), then count itself."""

    async def perform(self, seconds):
        _redis().sadd("began", self.jid)
        await asyncio.sleep(seconds)
        _mark(self.jid)


@sidepunch.job
async def nap_function(seconds):
    await asyncio.sleep(seconds)
    _redis().rpush("done", f"nap_function {seconds}")


class AsyncFails(sidepunch.Job):
    retry = 2

    async def perform(self):
        await asyncio.sleep(0)
        raise ValueError("async failure")


class AsyncKeeps(sidepunch.Job):
    keep_result = 60

    async def perform(self, a, b):
        await asyncio.sleep(0.01)
        return {"sum": a + b}


class SyncKeeps(sidepunch.Job):
    keep_result = 60

    def perform(self, value):
        if value == "not json":
            return {1, 2}
        return [value, value]


class AwaitableFromPlainDef(sidepunch.Job):
    def perform(self):
        return asyncio.sleep(0)


class Spin(sidepunch.Job):
    """A pure-Python loop for `seconds`, then the side effect `done`."""

    def perform(self, seconds):
        _redis().sadd("began", self.jid)
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        _redis().rpush("done", self.jid)


class Block(sidepunch.Job):
    """Blocked in one C call (time.sleep) for `seconds`, then the side effect `done`."""

    def perform(self, seconds):
        _redis().sadd("began", self.jid)
        time.sleep(seconds)
        _redis().rpush("done", self.jid)


class Cooperative(sidepunch.Job):
    """Loops until cancelled, looking at self.cancelled; on_cancel records that it ran."""

    def perform(self):
        _redis().sadd("began", self.jid)
        while not self.cancelled:
            time.sleep(0.01)
        _redis().rpush("saw-cancelled", self.jid)

    def on_cancel(self):
        _redis().rpush("on_cancel", self.jid)


class AsyncForever(sidepunch.Job):
    async def perform(self):
        _redis().sadd("began", self.jid)
        await asyncio.sleep(3600)
        _redis().rpush("done", self.jid)

    async def on_cancel(self):
        await asyncio.sleep(0)
        _redis().rpush("on_cancel", self.jid)


class AsyncStubborn(sidepunch.Job):
    """Blocks the event loop with a sync call: only the escalation can end it."""

    async def perform(self, seconds):
        _redis().sadd("began", self.jid)
        time.sleep(seconds)
        _redis().rpush("done", self.jid)
