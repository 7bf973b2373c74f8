"""Unique jobs the unique-job tests run (tests/test_unique*.py). They report to Redis (REDIS_URL)."""
import asyncio
import time

import sidepunch
import sidepunch.limits


def _redis():
    return sidepunch.default_client().redis


class Unique(sidepunch.Job):
    """Unique for a minute; appends its first argument to `done`."""

    unique_for = 60

    def perform(self, value, *rest):
        _redis().rpush("done", value)


class SlowUnique(sidepunch.Job):
    """Unique until it succeeds: marks `started`, sleeps, then marks `done`."""

    unique_for = 60

    def perform(self, value, seconds):
        _redis().rpush("started", value)
        time.sleep(seconds)
        _redis().rpush("done", value)


class UniqueUntilStart(SlowUnique):
    """Unique until it starts."""

    unique_until = "start"


class FailingUnique(sidepunch.Job):
    """Fails every time; retries unless its first argument says how many (0: dies at once)."""

    unique_for = 60
    retry = 5

    def perform(self, value, *rest):
        _redis().rpush("tried", value)
        raise RuntimeError("failing on purpose")


class DyingUnique(FailingUnique):
    retry = 0


class ByKey(sidepunch.Job):
    """A duplicate is any job with the same first argument."""

    unique_for = 60

    def unique_args(self, key, *rest):
        return [key]

    def perform(self, key, value):
        _redis().rpush("done", f"{key}:{value}")


class AsyncUnique(sidepunch.Job):
    """An async unique job: marks `started`, sleeps, marks `done`."""

    unique_for = 60

    async def perform(self, value, seconds):
        _redis().rpush("started", value)
        await asyncio.sleep(seconds)
        _redis().rpush("done", value)


class LimitedUnique(Unique):
    """Unique, and at most one run a minute (a window limiter): the second job of a minute is rate limited."""

    limits = [sidepunch.limits.Window("unique-test-window", 1, per=60)]
