"""Jobs for the embedded Manager tests (tests/test_manager.py). They report to Redis through the default client."""
import asyncio
import time

import sidepunch

from testjobs import _redis

#: The Manager a test is running, for StopManager (a job that stops the Manager running it).
MANAGER = []


class Held(sidepunch.Job):
    """Marks `started`, then waits while the key `hold` exists (at most `limit` seconds), then marks `done`."""

    def perform(self, value, limit=30):
        r = _redis()
        r.rpush("started", value)
        deadline = time.monotonic() + limit
        while r.exists("hold") and time.monotonic() < deadline:
            time.sleep(0.02)
        r.rpush("done", value)


class AsyncRecord(sidepunch.Job):
    async def perform(self, value):
        await asyncio.sleep(0.01)
        _redis().rpush("done", f"async:{value}")


class StopManager(sidepunch.Job):
    def perform(self):
        MANAGER[0].stop(timeout=5)
        _redis().rpush("done", "stop requested")


class AsyncHeld(sidepunch.Job):
    """Held, as an async job (the Redis calls block the loop briefly; fine for a test)."""

    async def perform(self, value):
        r = _redis()
        r.rpush("started", value)
        while r.exists("hold"):
            await asyncio.sleep(0.02)
        r.rpush("done", value)
