#!/usr/bin/env python3
"""Enqueue rates of the async client (`await Job.aperform_async`) beside the sync client, in one run.

    python bench/enqueue_async.py                  # 10,000 jobs a workload, 3 runs, concurrency 100
    python bench/enqueue_async.py --jobs 20000 --runs 5 --concurrency 50

Starts its own redis-server (no persistence; /usr/bin/redis-server if present, else what sidepunch.embedded
finds) on a free port and stops it by its pid at the end, Ctrl-C included. From one process and one event
loop it measures, FLUSHALL between sessions, the sessions of a run in rotated order:

- sync single: `Job.perform_async` in a loop (the sync client);
- async single: `await Job.aperform_async` in a loop, one after the other;
- async gather: the same pushes N at a time (`asyncio.gather` of --concurrency pushes, then the next N);
- sync bulk / async bulk: `perform_bulk` / `await aperform_bulk`, 1,000 jobs per push.

Prints the machine, then jobs/s (median of the runs, with the range) and each async figure's ratio to its sync
counterpart. Timings cover the pushes only: the connection is made (a first push) before the clock starts.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidepunch  # noqa: E402
from bench_report import machine  # noqa: E402
from sidepunch.embedded import RedisServer, find_redis_server  # noqa: E402

BULK = 1000


class NoopJob(sidepunch.Job):
    wire_name = "NoopJob"

    def perform(self, *args):
        pass


def sync_single(n: int, _: int) -> None:
    for i in range(n):
        NoopJob.perform_async(i)


def sync_bulk(n: int, _: int) -> None:
    NoopJob.perform_bulk(([i] for i in range(n)), batch_size=BULK)


async def async_single(n: int, _: int) -> None:
    for i in range(n):
        await NoopJob.aperform_async(i)


async def async_gather(n: int, concurrency: int) -> None:
    for start in range(0, n, concurrency):
        await asyncio.gather(*(NoopJob.aperform_async(i) for i in range(start, min(n, start + concurrency))))


async def async_bulk(n: int, _: int) -> None:
    await NoopJob.aperform_bulk(([i] for i in range(n)), batch_size=BULK)


#: (name, the function, is it a coroutine function, the sync session it is compared with)
SESSIONS: list[tuple[str, Callable[[int, int], "Awaitable[None] | None"], str | None]] = [
    ("sync single", sync_single, None),
    ("async single", async_single, "sync single"),
    ("async gather", async_gather, "sync single"),
    ("sync bulk", sync_bulk, None),
    ("async bulk", async_bulk, "sync bulk"),
]


async def measure(r: redis.Redis, name: str, fn: Callable, jobs: int, concurrency: int) -> float:
    """jobs/s of one session, on an empty Redis; checks that every job landed."""
    r.flushall()
    started = time.perf_counter()
    result = fn(jobs, concurrency)
    if asyncio.iscoroutine(result):
        await result
    seconds = time.perf_counter() - started
    landed = r.llen("queue:default")
    if landed != jobs:
        raise SystemExit(f"{name}: {landed} jobs landed of {jobs}")
    return jobs / seconds


async def bench(r: redis.Redis, args: argparse.Namespace) -> dict[str, list[float]]:
    await NoopJob.aperform_async("warm-up")  # the first connection of this loop, outside the clock
    NoopJob.perform_async("warm-up")
    rates: dict[str, list[float]] = {name: [] for name, _, _ in SESSIONS}
    for run in range(args.runs):
        order = SESSIONS[run % len(SESSIONS):] + SESSIONS[:run % len(SESSIONS)]
        for name, fn, _ in order:
            rates[name].append(await measure(r, name, fn, args.jobs, args.concurrency))
            print(f"  run {run + 1} {name}: {rates[name][-1]:,.0f} jobs/s", flush=True)
    return rates


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> str:
    lines = [f"| enqueue ({args.jobs:,} jobs, median of {args.runs}) | jobs/s | range | vs sync |",
             "|---|---:|---:|---:|"]
    for name, _, against in SESSIONS:
        median = statistics.median(rates[name])
        label = f"{name} (N={args.concurrency})" if name == "async gather" else name
        ratio = f"{median / statistics.median(rates[against]):.2f}x {against}" if against else ""
        lines.append(f"| {label} | {median:,.0f} | {min(rates[name]):,.0f}-{max(rates[name]):,.0f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per session (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every session (default 3)")
    parser.add_argument("--concurrency", type=int, default=100, help="pushes in flight in `async gather`")
    parser.add_argument("--redis-server", help="the redis-server binary to start")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binary = args.redis_server or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                   else find_redis_server())
    server = RedisServer(binary=binary)
    try:
        server.start()
        sidepunch.configure(server.url)
        r = redis.Redis.from_url(server.url)
        about = machine(r, binary, {})
        about.pop("Ruby", None)
        for key, value in about.items():
            print(f"{key}: {value}")
        print(f"redis-server pid {server.process.pid} on {server.url}", flush=True)
        print(report(asyncio.run(bench(r, args)), args))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()  # by its pid (RedisServer keeps the Popen it started)


if __name__ == "__main__":
    raise SystemExit(main())
