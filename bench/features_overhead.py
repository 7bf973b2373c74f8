"""What each built-in feature (unique jobs, rate limits, expiring jobs, batches) and the metrics exporter cost on
W1's drain, each measured beside plain jobs in one run.

    python bench/features_overhead.py [--jobs 10000] [--runs 3] [--variants plain,unique,...] [--level info]

Every run of every variant: a fresh Redis db, N IncrJobs (bench/feature_jobs.py) pushed, a sidepunchd of
2 processes x 10 threads booted, the backlog released, the drain timed until the queue is empty and no job is
unacknowledged, the daemon stopped, and the INCR counter checked (every job ran once). Variants run
interleaved (plain, unique, ..., plain, unique, ...) so a slow minute of a shared machine hits them alike.
Prints the medians, each variant's ratio to plain jobs, and the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import sidepunch  # noqa: E402
from bench_daemons import SidepunchDaemon  # noqa: E402
from bench_jobs import COUNTER_KEY  # noqa: E402
from sidepunch.embedded import RedisServer  # noqa: E402

QUEUE, STAGING = "queue:default", "bench:staging"
#: variant -> (job kind in feature_jobs.VARIANTS, extra sidepunchd arguments, pushed inside a batch)
VARIANTS = {
    "plain": ("plain", [], False),
    "unique": ("unique", [], False),
    "expiring": ("expiring", [], False),
    "concurrent": ("concurrent", [], False),
    "window": ("window", [], False),
    "batch": ("plain", [], True),
    "metrics": ("plain", ["--metrics-port", "0"], False),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push(url: str, job: type, jobs: int, in_batch: bool) -> None:
    client = sidepunch.configure(url)  # a batch keeps its bookkeeping through the configured client
    rows = [[i] for i in range(jobs)]
    if in_batch:
        with sidepunch.Batch(description="bench"):
            job.set(client=client).perform_bulk(rows)
    else:
        job.set(client=client).perform_bulk(rows)


def one_run(url: str, r: redis.Redis, variant: str, jobs: int, level: str, logdir: Path) -> float:
    from feature_jobs import VARIANTS as JOBS
    kind, extra, in_batch = VARIANTS[variant]
    extra = [str(free_port()) if a == "0" else a for a in extra]
    r.flushdb()
    push(url, JOBS[kind], jobs, in_batch)
    assert r.llen(QUEUE) == jobs, f"{variant}: {r.llen(QUEUE)} of {jobs} jobs pushed"
    r.rename(QUEUE, STAGING)
    daemon = SidepunchDaemon(url, logdir, dict(os.environ), 2, 10, "reliable", level, module="feature_jobs")
    daemon.commands = lambda base=daemon.commands: [base()[0] + extra]  # type: ignore[method-assign]
    daemon.start()
    try:
        daemon.wait_ready(r)
        time.sleep(1.0)
        r.config_resetstat()
        started = time.perf_counter()
        r.rename(STAGING, QUEUE)
        deadline = started + 120 + jobs / 200
        while r.llen(QUEUE) or any(r.llen(key) for key in r.keys("working:*")):
            if time.perf_counter() > deadline or not daemon.alive():
                raise RuntimeError(f"{variant}: drain did not finish:\n{daemon.log_tail()}")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        daemon.stop()
    if os.environ.get("BENCH_COMMANDSTATS"):  # where Redis's time goes, per job, for this variant's drain
        stats = sorted(r.info("commandstats").items(), key=lambda kv: -kv[1]["usec"])[:6]
        print(f"    {variant}: " + ", ".join(f"{name[8:]} {s['calls'] / jobs:.2f}/job {s['usec_per_call']:.1f}us"
                                          for name, s in stats))
    counter = int(r.get(COUNTER_KEY) or 0)
    if counter != jobs or r.zcard("retry") or r.zcard("dead"):
        raise RuntimeError(f"{variant}: counter {counter} of {jobs}, retry {r.zcard('retry')}, dead {r.zcard('dead')}")
    return jobs / elapsed


def available(variant: str) -> str | None:
    """Why a variant cannot run on this checkout, or None."""
    from feature_jobs import VARIANTS as JOBS
    kind, extra, in_batch = VARIANTS[variant]
    if kind not in JOBS:
        return f"no {kind} job (feature not built)"
    if in_batch and not hasattr(sidepunch, "Batch"):
        return "no sidepunch.Batch"
    if extra and "--metrics-port" in extra:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            return "prometheus_client not installed (pip install 'sidepunch[prometheus]')"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--level", choices=("info", "warn"), default="info")
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    skipped = {v: why for v in wanted if (why := available(v))}
    runnable = [v for v in wanted if v not in skipped]
    rates: dict[str, list[float]] = {v: [] for v in runnable}
    logdir = Path(tempfile.mkdtemp(prefix="sidepunch-bench-features-"))
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        for run in range(args.runs):
            for variant in runnable:
                rates[variant].append(one_run(server.url, r, variant, args.jobs, args.level, logdir))
                print(f"  run {run + 1} {variant:<11} {rates[variant][-1]:>8,.0f} jobs/s", flush=True)
    print(f"\n{args.jobs:,} IncrJobs per drain, 2 processes x 10 threads, reliable fetch, {args.level.upper()}; "
          f"medians of {args.runs}")
    base = statistics.median(rates["plain"]) if "plain" in rates else None
    for variant in runnable:
        median = statistics.median(rates[variant])
        ratio = f"{median / base:.3f}x plain" if base else ""
        spread = f"{min(rates[variant]):,.0f}-{max(rates[variant]):,.0f}"
        print(f"  {variant:<11} {median:>8,.0f} jobs/s  ({spread})  {ratio}")
    for variant, why in skipped.items():
        print(f"  {variant:<11} unavailable: {why}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
          f"redis-py {redis.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
