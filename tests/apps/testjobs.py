"""Jobs the process tests run. They report to Redis (REDIS_URL) so tests can see what ran."""
import os
import signal
import time

import sidepunch


def _redis():
    return sidepunch.default_client().redis


class Record(sidepunch.Job):
    """Appends its first argument to the list `done`."""

    def perform(self, value, *rest):
        _redis().rpush("done", value)


class Noop(sidepunch.Job):
    def perform(self, *args):
        pass


class Sleep(sidepunch.Job):
    """Marks `started`, sleeps, then marks `done`."""

    def perform(self, value, seconds):
        _redis().rpush("started", value)
        time.sleep(seconds)
        _redis().rpush("done", value)


class Fail(sidepunch.Job):
    retry = 2

    def perform(self, *args):
        raise RuntimeError("failing on purpose")


class KillMyWorker(sidepunch.Job):
    """A poison pill: kills the worker process running it."""

    def perform(self, value):
        _redis().rpush("started", value)
        os.kill(os.getpid(), signal.SIGKILL)


class Pid(sidepunch.Job):
    """Records which worker pid ran it, then sleeps."""

    def perform(self, value, seconds=0):
        _redis().rpush("pids", f"{value}:{os.getpid()}")
        time.sleep(seconds)
        _redis().rpush("done", value)


class RubyName(sidepunch.Job):
    wire_name = "HardWorker"

    def perform(self, *args):
        import json
        _redis().rpush("done", json.dumps(args))


@sidepunch.job(queue="fn")
def record_fn(value):
    _redis().rpush("done", f"fn:{value}")
