#!/usr/bin/env python3
"""Where one Sidepunch worker's time goes during a W1 IncrJob drain (issue 12, point 2).

    python bench/profile_worker.py                       # thread curve 1,2,5,10,20 + breakdown at 10 threads
    python bench/profile_worker.py --threads 10 --no-curve --level warn
    python bench/profile_worker.py --py-spy               # also a py-spy --gil / --idle profile of the worker

One `sidepunchd --workers 1` (reliable fetch) drains N IncrJobs released at once, as in bench/run.py. Per
drain it reports jobs/s, the worker's CPU (psutil: a worker at ~100 % of one core is bound by the GIL), Redis's
CPU per job and `INFO commandstats` over the drain alone (CONFIG RESETSTAT at the release; calls and
usec_per_call per command, the fetch script is `evalsha`). The breakdown drain runs `-r profile_jobs`, which
times the hot path's calls in every processor thread (wall and thread CPU, see bench/profile_jobs.py); the
uncontended cost of each round trip is measured first from this process on an idle server, so
wall - CPU - uncontended round trip = waiting for the GIL (or behind other clients in Redis).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemons import Enqueuer, SidepunchDaemon  # noqa: E402
from bench_workloads import COUNTER_KEY, Bench, Settings  # noqa: E402
from sidepunch.core import scripts  # noqa: E402
from sidepunch.embedded import RedisServer, find_redis_server  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--curve", default="1,2,5,10,20", help="thread counts for the throughput curve")
    p.add_argument("--no-curve", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="only the curve, no breakdown drain")
    p.add_argument("--workers", type=int, default=1, help="worker processes of the curve's drains")
    p.add_argument("--experiment", default="", help="curve with bench/experiment_jobs.py's what-if patches, "
                                                     "e.g. ack-after=0.05,switch=0.02")
    p.add_argument("--threads", type=int, default=10, help="threads of the profiled drain")
    p.add_argument("--level", choices=("info", "warn"), default="info")
    p.add_argument("--runs", type=int, default=3, help="drains per curve point (median shown)")
    p.add_argument("--py-spy", action="store_true", help="also sample the worker with py-spy (--gil, --idle)")
    p.add_argument("--out", type=Path, help="write the raw numbers as JSON here")
    return p.parse_args(argv)


def worker_of(daemon: SidepunchDaemon) -> psutil.Process:
    return daemon.processes()["workers"][0]


def commandstats(r: redis.Redis) -> dict[str, dict[str, float]]:
    return {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def drain(bench: Bench, url: str, logdir: Path, env: dict, threads: int, level: str, jobs: int,
          module: str = "bench_jobs", spy: list[str] | None = None, workers: int = 1) -> dict:
    """One measured drain of `jobs` IncrJobs into 1 worker x `threads`; commandstats and CPU over the drain."""
    r = bench.r
    bench.fresh()
    Enqueuer("python", env)(url, "bulk", jobs, "incr")
    bench.stage()
    daemon = SidepunchDaemon(url, logdir, env, workers, threads, "reliable", level, module=module)
    spy_proc = None
    try:
        bench.boot(daemon)
        worker = worker_of(daemon)
        if spy:
            spy_proc = subprocess.Popen(spy + ["--pid", str(worker.pid)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
            time.sleep(1.0)   # attached before the release
        r.config_resetstat()
        workers_cpu = lambda: sum(sum(p.cpu_times()[:2]) for p in daemon.processes()["workers"])  # noqa: E731
        cpu0, rcpu0 = workers_cpu(), redis_cpu(r)
        out = bench.release(daemon, jobs)
        out["worker_cpu_pct"] = 100 * (workers_cpu() - cpu0) / out["drain_s"]
        out["worker_cpu_us_per_job"] = 1e6 * (workers_cpu() - cpu0) / jobs
        out["redis_cpu_us_per_job"] = 1e6 * (redis_cpu(r) - rcpu0) / jobs
        out["commandstats"] = commandstats(r)
        time.sleep(1.2)   # profile_jobs dumps its totals twice a second
    finally:
        if spy_proc is not None:
            spy_proc.wait(60)
        daemon.stop()
    out["counter_ok"] = int(r.get(COUNTER_KEY) or 0) == jobs
    return out


def uncontended(url: str) -> dict[str, float]:
    """Median wall time (µs) of each round trip from one thread on an idle server: the floor."""
    r = redis.Redis.from_url(url)
    r.flushall()
    fetch = scripts.load(r, "fetch")
    r.rpush("queue:default", *[b'{"class":"IncrJob","args":[1],"jid":"%d"}' % i for i in range(3000)])
    samples: dict[str, list[float]] = {"INCR": [], "fetch script (1 job)": [], "LREM (ack)": [], "PING": []}
    cpu = dict.fromkeys(samples, 0.0)

    def timed(name: str, call) -> object:
        t, c = time.perf_counter(), time.thread_time()
        reply = call()
        samples[name].append(1e6 * (time.perf_counter() - t))
        cpu[name] += time.thread_time() - c
        return reply

    for _ in range(2000):
        timed("INCR", lambda: r.incr(COUNTER_KEY))
        reply = timed("fetch script (1 job)", lambda: fetch(keys=["queue:default", "working:p"], args=[0, 1, 1]))
        timed("LREM (ack)", lambda: r.lrem("working:p", 1, reply[1][0]))
        timed("PING", r.ping)
    r.flushall()
    out = {k: statistics.median(v) for k, v in samples.items()}
    out.update({f"{k} client CPU": 1e6 * c / len(samples[k]) for k, c in cpu.items()})
    return out


def breakdown(profile_dir: Path, jobs: int, drain_s: float, threads: int) -> list[tuple[str, float, float, float]]:
    """(category, calls per job, wall µs per job summed over threads, CPU µs per job) from profile_jobs' dumps."""
    totals: dict[str, list[float]] = {}
    for dump in profile_dir.glob("*.json"):
        for cats in json.loads(dump.read_text())["threads"].values():
            for cat, (calls, wall, cpu) in cats.items():
                row = totals.setdefault(cat, [0, 0.0, 0.0])
                row[0] += calls
                row[1] += wall
                row[2] += cpu
    rows = [(cat, c / jobs, 1e6 * w / jobs, 1e6 * u / jobs) for cat, (c, w, u) in sorted(totals.items())]
    rows.append(("(all threads' wall time during the drain)", 0.0, 1e6 * drain_s * threads / jobs, 0.0))
    return rows


def show_commandstats(stats: dict, jobs: int) -> None:
    print("| command | calls | calls per job | usec_per_call | Redis µs per job |")
    print("|---|---|---|---|---|")
    for name, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        print(f"| {name} | {v['calls']:,} | {v['calls'] / jobs:.3f} | {v['usec_per_call']:.2f} | "
              f"{v['usec'] / jobs:.2f} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the daemon and Redis on the way out
    binary = "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else find_redis_server()
    logdir = Path(tempfile.mkdtemp(prefix="sidepunch-profile-"))
    env = dict(os.environ)
    env.pop("REDIS_PROVIDER", None)
    results: dict = {"jobs": args.jobs, "level": args.level, "curve": {}}
    server = RedisServer(binary=binary)
    try:
        server.start()
        bench = Bench(server.url, Settings(jobs=args.jobs, latency_jobs=0, latency_rate=1.0, cpu_jobs=0,
                                           cpu_ms=0.0, rss_points=(0, 0)), logdir)
        results["uncontended_us"] = floor = uncontended(server.url)
        print("uncontended round trips from one thread (µs: median wall of 2,000; mean client CPU):",
              ", ".join(f"{k} {v:.1f}" for k, v in floor.items()), flush=True)
        if not args.no_curve:
            curve(args, bench, server.url, logdir, env, results)
        if not args.no_profile:
            profile(args, bench, server.url, logdir, env, results)
    finally:
        server.stop()
        shutil.rmtree(logdir, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def curve(args, bench: Bench, url: str, logdir: Path, env: dict, results: dict) -> None:
    print(f"\nthroughput by thread count, {args.workers} process(es), {args.jobs:,} IncrJobs at "
          f"{args.level.upper()} (median of {args.runs}){'; experiment ' + args.experiment if args.experiment else ''}\n")
    print("| threads | jobs/s | worker CPU % | worker CPU µs/job | Redis CPU µs/job | runs (jobs/s) |")
    print("|---|---|---|---|---|---|")
    module = "experiment_jobs" if args.experiment else "bench_jobs"
    env = dict(env, BENCH_EXPERIMENT=args.experiment)
    for threads in [int(t) for t in args.curve.split(",")]:
        runs = [drain(bench, url, logdir, env, threads, args.level, args.jobs, module=module, workers=args.workers)
                for _ in range(args.runs)]
        results["curve"][threads] = runs
        med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
        print(f"| {threads} | {med('drain_jps'):,.0f} | {med('worker_cpu_pct'):.0f} | "
              f"{med('worker_cpu_us_per_job'):.0f} | {med('redis_cpu_us_per_job'):.1f} | "
              f"{', '.join(format(r['drain_jps'], ',.0f') for r in runs)} |", flush=True)


def profile(args, bench: Bench, url: str, logdir: Path, env: dict, results: dict) -> None:
    plain = drain(bench, url, logdir, env, args.threads, args.level, args.jobs)
    print(f"\nprofiled drain: 1 process x {args.threads} threads, {args.level.upper()}; unhooked first: "
          f"{plain['drain_jps']:,.0f} jobs/s, worker CPU {plain['worker_cpu_pct']:.0f} %, "
          f"{plain['worker_cpu_us_per_job']:.0f} µs CPU/job, Redis {plain['redis_cpu_us_per_job']:.1f} µs CPU/job\n")
    show_commandstats(plain["commandstats"], args.jobs)
    profile_dir = Path(tempfile.mkdtemp(prefix="sidepunch-prof-"))
    spy = None
    if args.py_spy:
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--idle", "--nonblocking",
               "-r", "200", "--format", "raw", "-o", str(profile_dir / "pyspy.txt"), "-d", "6"]
    hooked = drain(bench, url, logdir, dict(env, BENCH_PROFILE=str(profile_dir)), args.threads, args.level,
                   args.jobs, module="profile_jobs", spy=spy)
    rows = breakdown(profile_dir, args.jobs, hooked["drain_s"], args.threads)
    results["plain"], results["hooked"], results["breakdown"] = plain, hooked, rows
    print(f"\nhooked drain (timing wrappers add ~1-2 µs per hooked call): {hooked['drain_jps']:,.0f} jobs/s\n")
    print("| category | calls per job | wall µs per job (all threads) | thread CPU µs per job | off-CPU µs per job |")
    print("|---|---|---|---|---|")
    for cat, calls, wall, cpu in rows:
        print(f"| {cat} | {calls:.2f} | {wall:.1f} | {cpu:.1f} | {wall - cpu:.1f} |")
    shutil.rmtree(profile_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
