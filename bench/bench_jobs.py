"""The Sidepunch jobs the benchmarks run (bench/ruby/jobs.rb defines the same ones for Sidekiq).

Their wire names match the Ruby class names, so both systems carry byte-for-byte the same payload shape.
Jobs that report (latency, CPU timing) write to Redis through the default client ($REDIS_URL). IncrJob, the
realistic W1 job, does what a user's job does at least once: one round trip through its own redis-py client,
created lazily in the process that runs it (after the fork: a connection must never cross one).
"""
from __future__ import annotations

import asyncio
import functools
import os
import time

import redis

import sidepunch

LATENCY_KEY = "bench:latency"
CPU_KEY = "bench:cpu"
COUNTER_KEY = "bench:counter"
SLEEP_SECONDS = 0.05


def burn(loops: int) -> int:
    """Pure-Python CPU work; bench/ruby/jobs.rb has the same loop in Ruby. Each side is calibrated to ~25 ms."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


@functools.lru_cache(maxsize=1)
def own_client(pid: int) -> redis.Redis:
    """The job's own client, one per process: keyed on the pid, so a forked worker never reuses its parent's
    connections (the pool grows to one connection per thread, as Sidekiq's pool does)."""
    return redis.Redis.from_url(os.environ["REDIS_URL"])


class NoopJob(sidepunch.Job):
    wire_name = "NoopJob"

    def perform(self, *args):
        pass


class IncrJob(sidepunch.Job):
    """One INCR through the job's own client: the smallest job that touches Redis, as almost every real one does."""
    wire_name = "IncrJob"

    def perform(self, *args):
        own_client(os.getpid()).incr(COUNTER_KEY)


class SleepJob(sidepunch.Job):
    """W5: waits 50 ms as if on I/O; throughput is bounded by concurrency, not by per-job cost."""
    wire_name = "SleepJob"

    def perform(self, *args):
        time.sleep(SLEEP_SECONDS)


class AsyncSleepJob(sidepunch.Job):
    """W5, async: the same wait on an event loop (runs only on a daemon with async jobs; otherwise it fails,
    and the harness reports the row as unsupported)."""
    wire_name = "AsyncSleepJob"

    async def perform(self, *args):
        await asyncio.sleep(SLEEP_SECONDS)


class AsyncNapJob(sidepunch.Job):
    """bench/async_drain.py: `await asyncio.sleep(seconds)`, the seconds given as the argument."""
    wire_name = "AsyncNapJob"

    async def perform(self, seconds):
        await asyncio.sleep(seconds)


class LatencyJob(sidepunch.Job):
    """args[0] is the enqueue stamp a client middleware set just before the write (as enqueued_at is)."""
    wire_name = "LatencyJob"

    def perform(self, stamp):
        latency = time.time() - stamp
        sidepunch.default_client().redis.rpush(LATENCY_KEY, repr(latency))


class CpuJob(sidepunch.Job):
    wire_name = "CpuJob"

    def perform(self, loops):
        started = time.time()
        burn(loops)
        sidepunch.default_client().redis.rpush(CPU_KEY, f"{started!r} {time.time()!r} {os.getpid()}")


#: The kinds `enqueue.py bulk N KIND` and the harness name (bench/ruby/enqueue.rb has all but "asleep").
KINDS = {"noop": NoopJob, "incr": IncrJob, "sleep": SleepJob, "asleep": AsyncSleepJob}
