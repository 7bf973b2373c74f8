"""Sidepunch's side of the enqueue work, one fresh process per call (bench/ruby/enqueue.rb is Sidekiq's).

    python bench/enqueue.py single N | bulk N [KIND] | cpu COUNT LOOPS | paced COUNT RATE | calibrate MS

KIND is one of bench_jobs.KINDS (noop, the default; incr; sleep; asleep).

Prints one JSON line. Timings cover only the pushes: the interpreter's start-up and the first connection
(a PING before the clock starts) are outside them. Redis comes from $REDIS_URL.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sidepunch  # noqa: E402
from bench_jobs import KINDS, CpuJob, LatencyJob, NoopJob, burn  # noqa: E402

BULK = 1000


def single(n: int) -> dict:
    started = time.perf_counter()
    for i in range(n):
        NoopJob.perform_async(i)
    return {"seconds": time.perf_counter() - started, "jobs": n}


def bulk(n: int, kind: str = "noop") -> dict:
    job = KINDS[kind]
    started = time.perf_counter()
    job.perform_bulk(([i] for i in range(n)), batch_size=BULK)
    return {"seconds": time.perf_counter() - started, "jobs": n}


def cpu(count: int, loops: int) -> dict:
    CpuJob.perform_bulk([[loops] for _ in range(count)], batch_size=BULK)
    return {"jobs": count}


def stamp(job: dict, call_next):
    """Client middleware, last in the chain: args[0] = now, taken where Sidekiq takes enqueued_at."""
    job["args"][0] = time.time()
    return call_next(job)


def paced(count: int, rate: float) -> dict:
    sidepunch.configure(middleware=[stamp]).redis.ping()
    started = time.perf_counter()
    worst = 0.0
    for i in range(count):
        due = started + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            worst = max(worst, now - due)
        LatencyJob.perform_async(0.0)
    return {"seconds": time.perf_counter() - started, "jobs": count, "worst_late_ms": worst * 1000}


def calibrate(ms: float) -> dict:
    """Loop count for one `burn` of about `ms` milliseconds in this interpreter on this machine.

    The cost per loop is the fastest of 20 short (~5 ms) timings: on a shared machine a slower timing
    measures the neighbours, and short samples are likely to find a quiet moment.
    """
    def fastest(loops: int, times: int) -> float:
        best = float("inf")
        for _ in range(times):
            t = time.perf_counter()
            burn(loops)
            best = min(best, time.perf_counter() - t)
        return best

    probe = 10_000
    while fastest(probe, 1) <= 0.005:
        probe *= 2
    loops = max(1, int(ms / 1000 / (fastest(probe, 20) / probe)))
    loops = max(1, int(loops * ms / 1000 / fastest(loops, 5)))   # one correction at full length
    return {"loops": loops, "ms": fastest(loops, 5) * 1000}


def main(argv: list[str]) -> None:
    mode, *rest = argv
    if mode != "calibrate":
        sidepunch.default_client().redis.ping()
    if mode == "single":
        out = single(int(rest[0]))
    elif mode == "bulk":
        out = bulk(int(rest[0]), *rest[1:2])
    elif mode == "cpu":
        out = cpu(int(rest[0]), int(rest[1]))
    elif mode == "paced":
        out = paced(int(rest[0]), float(rest[1]))
    elif mode == "calibrate":
        out = calibrate(float(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
