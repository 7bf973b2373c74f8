"""The Sidepunch jobs the benchmarks run (bench/ruby/jobs.rb defines the same three for Sidekiq).

Their wire names match the Ruby class names, so both systems carry byte-for-byte the same payload shape.
Jobs that report (latency, CPU timing) write to Redis through the default client ($REDIS_URL).
"""
from __future__ import annotations

import os
import time

import sidepunch

LATENCY_KEY = "bench:latency"
CPU_KEY = "bench:cpu"


def burn(loops: int) -> int:
    """Pure-Python CPU work; bench/ruby/jobs.rb has the same loop in Ruby. Each side is calibrated to ~25 ms."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


class NoopJob(sidepunch.Job):
    wire_name = "NoopJob"

    def perform(self, *args):
        pass


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
