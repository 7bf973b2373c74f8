"""Jobs the process tests run. They report to Redis (REDIS_URL) so tests can see what ran."""
import os
import signal
import sys
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


class SwitchInterval(sidepunch.Job):
    """Records the worker's GIL switch interval (--switch-interval) in the list `switch`."""

    def perform(self):
        _redis().rpush("switch", repr(sys.getswitchinterval()))


class RubyName(sidepunch.Job):
    wire_name = "HardWorker"

    def perform(self, *args):
        import json
        _redis().rpush("done", json.dumps(args))


@sidepunch.job(queue="fn")
def record_fn(value):
    _redis().rpush("done", f"fn:{value}")


class Chaos(sidepunch.Job):
    """A short job for chaos tests: takes ~20 ms, then records its value."""

    def perform(self, value, seconds=0.02):
        time.sleep(seconds)
        _redis().rpush("done", value)


class ResilientRecord(sidepunch.Job):
    """Records its value; if Redis is down mid-job it fails and is retried soon."""

    def perform(self, value):
        time.sleep(0.005)
        _redis().rpush("done", value)

    def retry_in(self, count, exc):
        return 1


class ReplicatedRecord(sidepunch.Job):
    """Records its value and waits for a replica to have it; if not, fails so the job runs again."""

    def perform(self, value):
        r = _redis()
        r.rpush("done", value)
        if r.execute_command("WAIT", 1, 2000) < 1:
            raise RuntimeError("the write did not reach the replica")

    def retry_in(self, count, exc):
        return 1


class Hog(sidepunch.Job):
    """Holds on to ~150 MB for the rest of its process's life."""

    kept = []

    def perform(self, value):
        Hog.kept.append(bytearray(150 * 2 ** 20))
        _redis().rpush("done", value)


class Overdue(sidepunch.Job):
    timeout = 1

    def perform(self, value, seconds):
        _redis().rpush("started", value)
        time.sleep(seconds)
        _redis().rpush("done", value)


def record_death(job, exc):
    """A death handler for --death-handler."""
    _redis().rpush("deaths", f"{job['jid']} {type(exc).__name__}")


def timing_middleware(instance, job, queue, call_next):
    """A server middleware for --middleware: records around the job."""
    _redis().rpush("middleware", f"before {job['class']} {queue}")
    try:
        return call_next()
    finally:
        _redis().rpush("middleware", f"after {instance.jid}")


class DiesAtOnce(sidepunch.Job):
    retry = 0

    def perform(self):
        raise LookupError("gone")


class Flushing(sidepunch.Middleware):
    """Records the process's pid in the list `closed` when its worker closes it at stop (one line per worker)."""

    def around_perform(self, instance, job, queue, call_next):
        return call_next()

    def close(self):
        _redis().rpush("closed", os.getpid())
