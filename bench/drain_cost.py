"""Where a drain's CPU goes: the workers' CPU per job, Redis's CPU per job and Redis's `commandstats` per job, for
one sidepunchd draining N jobs (docs/performance.md sections 8 and 9).

    python bench/drain_cost.py [--jobs 40000] [--job IncrJob] [--workers 2] [--threads 10] [--level info]

Runs with the interpreter that runs it, so its redis-py is the one measured: create a venv with another
`redis==X` (and `pip install -e .`) to compare versions. Every process it starts is stopped by its pid.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import sidepunch  # noqa: E402
from sidepunch.embedded import RedisServer  # noqa: E402


def cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def drain(url: str, r: redis.Redis, args: argparse.Namespace, redis_pid: int) -> None:
    sidepunch.Client(redis=r).push_bulk({"class": args.job, "args": [[i] for i in range(args.jobs)]})
    r.rename("queue:default", "bench:staging")
    env = dict(os.environ, REDIS_URL=url, PYTHONPATH=f"{BENCH}{os.pathsep}{ROOT}")
    daemon = subprocess.Popen([sys.executable, "-m", "sidepunch.server.cli", "-r", args.module, "--log-level",
                               args.level, "--workers", str(args.workers), "--threads", str(args.threads)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while r.scard("processes") < args.workers:
            if daemon.poll() is not None:
                raise SystemExit(f"sidepunchd exited with {daemon.returncode} while booting")
            time.sleep(0.05)
        time.sleep(1.0)
        workers = psutil.Process(daemon.pid).children()
        server = psutil.Process(redis_pid)
        r.config_resetstat()
        before = cpu(workers), cpu([server])
        started = time.perf_counter()
        r.rename("bench:staging", "queue:default")
        while r.llen("queue:default") or any(r.llen(key) for key in r.keys("working:*")):
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        after = cpu(workers), cpu([server])
        stats = r.info("commandstats")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    n = args.jobs
    print(f"redis-py {redis.__version__}: {n / elapsed:,.0f} jobs/s; workers' CPU {1e6 * (after[0] - before[0]) / n:.0f}"
          f" us/job; Redis CPU {1e6 * (after[1] - before[1]) / n:.1f} us/job")
    for name, s in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]:
        print(f"  {name[8:]:<18} {s['calls'] / n:6.3f} calls/job  {s['usec_per_call']:7.2f} us/call")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--job", default="IncrJob", help="a wire name of bench_jobs (or of --module)")
    parser.add_argument("--module", default="bench_jobs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--level", default="info")
    args = parser.parse_args()
    with RedisServer() as server:
        assert server.process is not None
        drain(server.url, redis.Redis.from_url(server.url), args, server.process.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
