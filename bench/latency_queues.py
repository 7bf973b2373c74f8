"""Idle latency of reliable fetch with one queue and with three (issue: reliable fetch must keep idle
latency low on every queue it listens to, not just the first).

    python bench/latency_queues.py [--jobs 1000] [--rate 200]

For each fetch mode (reliable, basic) and each layout (-q default; -q critical -q default -q low), starts
`sidepunchd --workers 2 --threads 10` on an idle Redis and pushes jobs at a steady rate, spread round-robin
over the queues; each job records its start time minus the enqueue stamp. Prints p50/p95/p99 per queue.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import redis  # noqa: E402

import sidepunch  # noqa: E402
from latency_jobs import KEY, QueueLatencyJob  # noqa: E402
from sidepunch.embedded import RedisServer  # noqa: E402

LAYOUTS = {"1 queue": ["default"], "3 queues": ["critical", "default", "low"]}


def stamp(job: dict, call_next):
    job["args"][0] = time.time()
    return call_next(job)


def measure(url: str, fetch: str, queues: list[str], jobs: int, rate: float) -> dict[str, list[float]]:
    r = redis.Redis.from_url(url)
    r.flushall()
    env = dict(os.environ, REDIS_URL=url, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    args = [sys.executable, "-m", "sidepunch.server.cli", "--workers", "2", "--threads", "10", "--fetch", fetch,
            "-r", "latency_jobs", "--log-level", "warning", *sum((["-q", q] for q in queues), [])]
    daemon = subprocess.Popen(args, env=env, cwd=HERE, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while r.scard("processes") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # every thread settles into its blocking wait
        client = sidepunch.Client(url, middleware=[stamp])
        per_queue: dict[str, list[float]] = {q: [] for q in queues}
        start = time.perf_counter()
        for i in range(jobs):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            queue = queues[i % len(queues)]
            QueueLatencyJob.set(client=client, queue=queue).perform_async(0.0, queue)
        deadline = time.monotonic() + 30
        while r.llen(KEY) < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        for raw in r.lrange(KEY, 0, -1):
            q, seconds = raw.decode().split(" ")
            per_queue[q].append(float(seconds) * 1000)
        per_queue["all"] = [ms for q in queues for ms in per_queue[q]]
        return per_queue
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    opts = parser.parse_args()
    binary = "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    with RedisServer(binary=binary) as server:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        print(f"Redis {version}; sidepunchd --workers 2 --threads 10; {opts.jobs} jobs at {opts.rate:g}/s\n")
        print("| fetch | queues | queue | p50 ms | p95 ms | p99 ms | jobs |")
        print("|---|---|---|---|---|---|---|")
        for fetch in ("reliable", "basic"):
            for label, queues in LAYOUTS.items():
                result = measure(server.url, fetch, queues, opts.jobs, opts.rate)
                for q, values in result.items():
                    if values and (q == "all" or len(queues) > 1):
                        print(f"| {fetch} | {label} | {q} | {percentile(values, 50):.3f} | "
                              f"{percentile(values, 95):.3f} | {percentile(values, 99):.3f} | {len(values)} |",
                              flush=True)


if __name__ == "__main__":
    main()
