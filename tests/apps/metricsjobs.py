"""Jobs and error handlers for the metrics, health and --error-handler tests (test_observe*.py). They report to
Redis (REDIS_URL) so the tests can count what ran."""
import json
import time

import sidepunch


def _redis():
    return sidepunch.default_client().redis


class Counted(sidepunch.Job):
    """Counts each execution that finishes in `runs` (and `fail-runs` for those that fail), as its last act."""

    def retry_in(self, count, exc):
        return 3600  # its retries stay in the retry set while the test counts them

    def perform(self, fail=False, seconds=0.0):
        if seconds:
            time.sleep(seconds)
        r = _redis()
        r.incr("runs")
        if fail:
            r.incr("fail-runs")
            raise RuntimeError("failing on purpose")


class Hold(sidepunch.Job):
    """Holds its thread until the key `release` exists (it notes its pid in `holding` first), then counts its
    run in `runs` like Counted."""

    def perform(self):
        import os
        r = _redis()
        r.rpush("holding", os.getpid())
        while not r.exists("release"):
            time.sleep(0.01)
        r.incr("runs")


class AsyncFail(sidepunch.Job):
    retry = 1

    async def perform(self, tag):
        raise ValueError(f"async failure {tag}")


class SyncFail(sidepunch.Job):
    retry = 1

    def perform(self, tag):
        raise ValueError(f"sync failure {tag}")


def report(exc, job):
    """An error handler: notes what it was given."""
    _redis().rpush("reported", json.dumps({"error": type(exc).__name__, "message": str(exc), "class": job["class"],
                                           "jid": job.get("jid")}))


def broken(exc, job):
    """An error handler that raises."""
    raise RuntimeError("the error handler itself is broken")


class AsyncCounted(sidepunch.Job):
    """Counted, as an async job."""

    async def perform(self, fail=False):
        r = _redis()
        r.incr("runs")
        if fail:
            r.incr("fail-runs")
            raise RuntimeError("failing on purpose")

    def retry_in(self, count, exc):
        return 3600
