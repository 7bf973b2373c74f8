"""Rate-limited jobs for the rate-limit tests (tests/test_limits_*.py). They report to Redis (the default client):
`INCR running:<limiter>` / `DECR` around the work with the high-water mark kept in `peak:<limiter>` by a Lua
step (so the peak is what Redis saw, atomically), `RPUSH ran:<limiter> <Redis time>` at each start, and
`SADD done <jid>` plus `INCR runs:<jid>` at the end (every job exactly once)."""
import asyncio
import os
import signal
import time

import sidepunch
from sidepunch.limits import Bucket, Concurrent, Window

PAIR = Concurrent("pair", 2, lease=5)
TEN_PER_SECOND = Window("ten-per-second", 10, per=1)
SHORT_LEASE = Concurrent("short-lease", 1, lease=2)
BURSTY = Bucket("bursty", 5, 3)
IN_JOB = Concurrent("in-job", 1, lease=5)

_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[3], t[1] .. '.' .. string.format('%06d', t[2]))
return n
"""


def _redis():
    return sidepunch.default_client().redis


def enter(name):
    _redis().eval(_ENTER, 3, f"running:{name}", f"peak:{name}", f"ran:{name}")


def leave(name, jid):
    r = _redis()
    r.decr(f"running:{name}")
    r.sadd("done", jid)
    r.incr(f"runs:{jid}")


class Paired(sidepunch.Job):
    """At most two at once, across every process."""
    limits = [PAIR]

    def perform(self, seconds):
        enter("pair")
        time.sleep(seconds)
        leave("pair", self.jid)


class AsyncPaired(sidepunch.Job):
    limits = [PAIR]

    async def perform(self, seconds):
        enter("pair")
        await asyncio.sleep(seconds)
        leave("pair", self.jid)


class TenPerSecond(sidepunch.Job):
    limits = [TEN_PER_SECOND]

    def perform(self):
        enter("ten-per-second")
        leave("ten-per-second", self.jid)


class Bursty(sidepunch.Job):
    limits = [BURSTY]

    def perform(self):
        enter("bursty")
        leave("bursty", self.jid)


class PairAndWindow(sidepunch.Job):
    """Two limiters: both or neither."""
    limits = (PAIR, TEN_PER_SECOND)

    def perform(self, seconds):
        enter("pair")
        time.sleep(seconds)
        leave("pair", self.jid)


class HoldAndDie(sidepunch.Job):
    """Takes the short-lease slot, marks it, and SIGKILLs its own worker the first time (`died` is set after)."""
    limits = [SHORT_LEASE]

    def perform(self):
        r = _redis()
        if r.set("died", "1", nx=True):
            r.rpush("holding", os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
        enter("short-lease")
        leave("short-lease", self.jid)


class ShortLeased(sidepunch.Job):
    limits = [SHORT_LEASE]

    def perform(self):
        enter("short-lease")
        leave("short-lease", self.jid)


class AcquiresInside(sidepunch.Job):
    """No class limits: takes IN_JOB around one step of its work, waiting up to 20 s."""

    def perform(self, seconds):
        with IN_JOB.acquire(wait=20):
            enter("in-job")
            time.sleep(seconds)
            _redis().decr("running:in-job")
        leave("in-job-done", self.jid)


class Slow(sidepunch.Job):
    """Holds a pair slot for `seconds` (a timeout or cancel stops it)."""
    limits = [PAIR]

    def perform(self, seconds):
        enter("pair")
        time.sleep(seconds)
        leave("pair", self.jid)


class Spinning(sidepunch.Job):
    """Holds a pair slot in a pure-Python loop for `seconds` (an interrupt stops it at once)."""
    limits = [PAIR]

    def perform(self, seconds):
        _redis().rpush("spinning", self.jid)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass


class AsyncWaits(sidepunch.Job):
    """Holds a pair slot in an await for `seconds` (its timeout cancels it)."""
    limits = [PAIR]

    async def perform(self, seconds):
        _redis().rpush("spinning", self.jid)
        await asyncio.sleep(seconds)
