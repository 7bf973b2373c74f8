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


class Chatty(sidepunch.Job):
    """Logs in a tight loop until stopped: the interrupt lands inside logging sooner or later."""

    def perform(self):
        import logging
        chat = logging.getLogger("asyncjobs.chatty")
        while True:
            chat.warning("still here")


class HangingOnCancel(sidepunch.Job):
    """Waits to be cancelled; its on_cancel hook then never returns."""

    async def perform(self):
        _redis().sadd("began", self.jid)
        await asyncio.sleep(3600)

    async def on_cancel(self):
        _redis().rpush("on_cancel", self.jid)
        await asyncio.sleep(3600)


class SyncHangingOnCancel(sidepunch.Job):
    """A sync job waiting to be cancelled; its on_cancel hook blocks (a C call) far past any grace."""

    def perform(self):
        _redis().sadd("began", self.jid)
        while True:
            time.sleep(0.01)

    def on_cancel(self):
        _redis().rpush("on_cancel", self.jid)
        time.sleep(6)


class StopsTheLoop(sidepunch.Job):
    """Stops the event loop it runs on (hostile app code)."""

    async def perform(self):
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.01)
        _mark(self.jid)


class KeepsBadly(sidepunch.Job):
    """Sets a keep_result the class check never saw (an instance attribute): not a number of seconds."""

    keep_result = 60

    def perform(self, value):
        self.keep_result = value
        _mark(self.jid)
        return "result"


class AsyncKeepsBadly(sidepunch.Job):
    keep_result = 60

    async def perform(self, value):
        self.keep_result = value
        _mark(self.jid)
        return "result"


class Unlistable(dict):
    """A return value whose encoding raises what no JSON encoder expects."""

    def items(self):
        raise RuntimeError("no items for you")


class AsyncKeepsHostile(sidepunch.Job):
    keep_result = 60

    async def perform(self):
        _mark(self.jid)
        return Unlistable(a=1)


class AsyncRaises(sidepunch.Job):
    """Raises the named BaseException from an async perform."""

    retry = 3

    async def perform(self, name):
        await asyncio.sleep(0)
        raise {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt(),
               "GeneratorExit": GeneratorExit(), "CancelledError": asyncio.CancelledError(),
               "StopIteration": StopIteration(), "StopAsyncIteration": StopAsyncIteration()}[name]


class SwallowsCancel(sidepunch.Job):
    """Swallows every cancellation and naps on for `seconds` in all."""

    retry = 3

    async def perform(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
        _mark(self.jid)


class StaticAsync(sidepunch.Job):
    @staticmethod
    async def perform(tag):
        _redis().rpush("done", f"static {tag}")


class _AsyncCallable:
    async def __call__(self, tag):
        _redis().rpush("done", f"callable {tag}")


class CallableObjectPerform(sidepunch.Job):
    retry = 3
    perform = _AsyncCallable()


class AsyncGeneratorPerform(sidepunch.Job):
    retry = 3

    async def perform(self, tag):
        yield tag


class _Other:
    async def work(self, tag):
        _redis().rpush("done", f"other {tag}")


class BorrowedPerform(sidepunch.Job):
    perform = staticmethod(_Other().work)


class ResilientNap(sidepunch.Job):
    """Naps, then appends its argument to `done`, trying again through a Redis outage."""

    async def perform(self, value, seconds):
        await asyncio.sleep(seconds)
        while True:
            try:
                _redis().rpush("done", value)
                return
            except Exception:
                await asyncio.sleep(0.2)


class RedisChatty(sidepunch.Job):
    """Talks to Redis in a tight loop until stopped: the interrupt lands inside redis-py sooner or later."""

    def perform(self):
        r = _redis()
        n = 0
        while True:
            n += 1
            r.set(f"chat:{self.jid}", n)
            got = r.get(f"chat:{self.jid}")
            if got != str(n).encode():
                r.rpush("crosstalk", repr(got))


class ExitsFromACallback(sidepunch.Job):
    """Schedules a callback that raises SystemExit or KeyboardInterrupt out of the event loop itself."""

    async def perform(self, name):
        exc = SystemExit(3) if name == "SystemExit" else KeyboardInterrupt()

        def boom():
            raise exc
        asyncio.get_running_loop().call_soon(boom)
        await asyncio.sleep(0.01)
        _mark(self.jid)
