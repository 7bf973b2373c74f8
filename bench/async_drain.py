"""Async drain: N async jobs that each `await asyncio.sleep(S)` on `sidepunchd --workers 2 --threads 10`, for
each --async-concurrency given; the figure that chose the default (README, "Async jobs").

    python bench/async_drain.py                               # 10,000 jobs of 0.1 s, concurrency 1000, 3 runs
    python bench/async_drain.py --concurrency 250,500,1000,2000 --jobs 30000

Starts its own redis-server (as bench/enqueue_async.py does) and one daemon per run, each stopped by its pid.
The backlog is enqueued while no daemon runs and released with one RENAME once the daemon's processes have
registered (as bench/README.md describes for W1); the clock stops when the queue and every working list are
empty, and `stat:processed` must then equal N. Prints the machine, each run, and the median per concurrency
with the ideal (2 x concurrency / S jobs/s: what the limit alone would allow).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sidepunch  # noqa: E402
from bench_report import machine  # noqa: E402
from sidepunch.embedded import RedisServer, find_redis_server  # noqa: E402

WORKERS, THREADS = 2, 10


def drain(r: redis.Redis, url: str, jobs: int, seconds: float, concurrency: int) -> float:
    """jobs/s of one drain of `jobs` AsyncNapJobs at --async-concurrency `concurrency`."""
    r.flushall()
    sidepunch.Client(redis=r).push_bulk({"class": "AsyncNapJob", "args": [[seconds]] * jobs})
    r.rename("queue:default", "bench:staging")
    env = dict(os.environ, REDIS_URL=url, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    daemon = subprocess.Popen([sys.executable, "-m", "sidepunch.server.cli", "-r", "bench_jobs", "--log-level",
                               "warning", "--workers", str(WORKERS), "--threads", str(THREADS),
                               "--async-concurrency", str(concurrency)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while r.scard("processes") < WORKERS:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("the daemon did not register its workers")
            time.sleep(0.05)
        time.sleep(1)
        started = time.monotonic()
        r.rename("bench:staging", "queue:default")
        while r.llen("queue:default") or r.keys("working:*"):
            time.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
    processed, failed = int(r.get("stat:processed") or 0), int(r.get("stat:failed") or 0)
    if processed != jobs or failed:
        raise SystemExit(f"counts wrong: processed {processed} of {jobs}, failed {failed}")
    return jobs / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=0.1, help="each job's asyncio.sleep (default 0.1)")
    parser.add_argument("--concurrency", default="1000", help="comma-separated --async-concurrency values")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-server", help="the redis-server binary to start")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    binary = args.redis_server or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                   else find_redis_server())
    server = RedisServer(binary=binary)
    try:
        server.start()
        r = redis.Redis.from_url(server.url)
        about = machine(r, binary, {})
        about.pop("Ruby", None)
        for key, value in about.items():
            print(f"{key}: {value}")
        rates: dict[int, list[float]] = {level: [] for level in levels}
        for run in range(args.runs):
            for level in levels[run % len(levels):] + levels[:run % len(levels)]:
                rates[level].append(drain(r, server.url, args.jobs, args.seconds, level))
                print(f"  run {run + 1} concurrency {level}: {rates[level][-1]:,.0f} jobs/s", flush=True)
        print(f"\n| --async-concurrency | {args.jobs:,} x asyncio.sleep({args.seconds:g}), jobs/s (median of "
              f"{args.runs}) | range | ideal |\n|---:|---:|---:|---:|")
        for level in levels:
            print(f"| {level:,} | {statistics.median(rates[level]):,.0f} | {min(rates[level]):,.0f}-"
                  f"{max(rates[level]):,.0f} | {WORKERS * level / args.seconds:,.0f} |")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
