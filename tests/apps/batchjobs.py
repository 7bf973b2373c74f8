"""Jobs for the batch tests: each records its runs in Redis (lists under "batchtest:"), the callbacks too."""
import os
import time

import redis

import sidepunch


def _r():
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


class Work(sidepunch.Job):
    """Records its argument in batchtest:ran (every run), optionally sleeping first."""

    def perform(self, n, sleep=0):
        if sleep:
            time.sleep(sleep)
        _r().rpush("batchtest:ran", n)


class FailOnce(sidepunch.Job):
    """Fails its first run (marked in Redis), then succeeds."""

    retry = 3

    def retry_in(self, count, exc):
        return 1

    def perform(self, n):
        if _r().incr(f"batchtest:tries:{n}") == 1:
            raise ValueError("first run fails")
        _r().rpush("batchtest:ran", n)


class AlwaysFail(sidepunch.Job):
    retry = False

    def perform(self, n):
        raise ValueError("always")


class Spawner(sidepunch.Job):
    """Adds `count` Work jobs to its own batch while it runs."""

    def perform(self, count):
        with self.batch:
            for i in range(count):
                Work.perform_async(f"spawned-{i}")
        _r().rpush("batchtest:ran", "spawner")


class Callback(sidepunch.Job):
    """Records each callback run: batchtest:cb:<event> gets the bid, batchtest:status:<event> the status."""

    def perform(self, bid, status):
        import json
        _r().rpush(f"batchtest:cb:{status['event']}", bid)
        _r().rpush(f"batchtest:status:{status['event']}", json.dumps(status))


class ThenB(sidepunch.Job):
    """A chain's second step: pushed by an on_success callback, records that it ran."""

    def perform(self, bid, status):
        _r().rpush("batchtest:chain", f"B after {status['total']} A jobs")


class Tracked(sidepunch.Job):
    """A short job for the crash test: adds its number to the set batchtest:done (a rerun adds nothing)."""

    def perform(self, n):
        time.sleep(0.01)
        _r().sadd("batchtest:done", n)


class CallbackRun(sidepunch.Job):
    """A callback that records each of its runs: batchtest:runs:<event> gets "<bid> <jid>"."""

    def perform(self, bid, status):
        _r().rpush(f"batchtest:runs:{status['event']}", f"{bid} {self.jid}")


class AsyncWork(sidepunch.Job):
    """An async job of a batch: records its argument, and whether it saw its batch."""

    async def perform(self, n):
        _r().rpush("batchtest:ran", f"{n} {self.batch.bid if self.batch else None}")


class AsyncFail(sidepunch.Job):
    retry = False

    async def perform(self, n):
        raise ValueError("async failure")
