"""Jobs for the Sidekiq interop tests (tests/test_interop.py). Their wire names are the Ruby class names the
Ruby scripts in tests/ruby/ push, and they report to Redis (REDIS_URL) so the tests can see what ran."""
import time

import sidepunch
from sidepunch.core.payload import encode


def _redis():
    return sidepunch.default_client().redis


class InteropError(Exception):
    """A failure with a message Sidekiq's API has to show as written."""


FAILURE_MESSAGE = 'kaputt: ünïcödé "quoted" \\ back\nslash ✓'


class _Recorder(sidepunch.Job):
    def perform(self, *args):
        # Re-encoded with Ruby's JSON spelling, so the test can compare bytes with Ruby's JSON.generate(args).
        _redis().hset("interop:args", self.jid, encode(list(args)))


class InteropRecord(_Recorder):
    wire_name = "InteropRecord"


class NestedRecord(_Recorder):
    wire_name = "Interop::NestedWorker"


class InteropOk(sidepunch.Job):
    wire_name = "InteropOk"

    def perform(self, *args):
        _redis().rpush("interop:done", self.jid)


class InteropFlaky(sidepunch.Job):
    """Fails on its first attempt only; later attempts succeed and record the jid in interop:done."""

    wire_name = "InteropFlaky"
    backtrace = True

    def perform(self, *args):
        if _redis().incr(f"interop:attempts:{self.jid}") == 1:
            raise InteropError(FAILURE_MESSAGE)
        _redis().rpush("interop:done", self.jid)


class InteropFlakyDie(InteropFlaky):
    """retry=0: straight to the dead set on the first failure (0 is truthy, as in Sidekiq)."""

    wire_name = "InteropFlakyDie"
    retry = 0
    backtrace = 3


class InteropSlow(sidepunch.Job):
    wire_name = "InteropSlow"

    def perform(self, seconds):
        _redis().rpush("interop:started", self.jid)
        time.sleep(seconds)
        _redis().rpush("interop:done", self.jid)
