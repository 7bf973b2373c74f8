"""The jobs of bench/features_overhead.py: W1's IncrJob (one INCR through the job's own client), as is and with
each built-in feature switched on, so the drain of each can be set beside the plain one in one run.

A feature that is not built (an older checkout) leaves its job out of VARIANTS; the bench reports it as
unavailable. The limits are set far above what the drain reaches: what is measured is the cost of asking.
"""
from __future__ import annotations

import os

import sidepunch
from bench_jobs import COUNTER_KEY, own_client

VARIANTS: dict[str, type] = {}


class PlainIncrJob(sidepunch.Job):
    wire_name = "PlainIncrJob"

    def perform(self, *args):
        own_client(os.getpid()).incr(COUNTER_KEY)


VARIANTS["plain"] = PlainIncrJob


class UniqueIncrJob(PlainIncrJob):
    """Each job has its own args, so none is a duplicate: a lock taken at push and released at success."""
    wire_name = "UniqueIncrJob"
    unique_for = 3600


VARIANTS["unique"] = UniqueIncrJob


class ExpiringIncrJob(PlainIncrJob):
    wire_name = "ExpiringIncrJob"
    expires_in = 3600


VARIANTS["expiring"] = ExpiringIncrJob

try:
    from sidepunch.limits import Concurrent, Window
except ImportError:  # a checkout without rate limits
    pass
else:
    class ConcurrentIncrJob(PlainIncrJob):
        """A concurrency limit no drain reaches (20 threads run at once): a lease taken and given back per job."""
        wire_name = "ConcurrentIncrJob"
        limits = [Concurrent("bench-concurrent", 1000, lease=60)]

    class WindowIncrJob(PlainIncrJob):
        wire_name = "WindowIncrJob"
        limits = [Window("bench-window", 1_000_000, per=1)]

    VARIANTS["concurrent"] = ConcurrentIncrJob
    VARIANTS["window"] = WindowIncrJob
