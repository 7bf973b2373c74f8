#!/usr/bin/env python3
"""Sidepunch vs Sidekiq 6.4.1 (and any installed Python job queue), side by side in one run.

    python bench/run.py            # full: 50,000-job drains, 3 runs each, 100k -> 1M RSS drain (~30 min)
    python bench/run.py --quick    # 10,000-job drains, 1 run, 10k -> 100k RSS drain (~5 min)

Prints a markdown table and writes it to bench/results/latest.md (raw numbers: latest.json, not committed).
See bench/README.md for the method of each workload.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemons import BENCH, SIDEKIQ_BIN, Enqueuer, SidekiqDaemon, SidepunchDaemon  # noqa: E402
from bench_report import Table, code_fingerprint, machine, runs_section  # noqa: E402
from bench_workloads import Bench, Settings, System  # noqa: E402
from sidepunch.embedded import RedisServer, find_redis_server  # noqa: E402

RESULTS = BENCH / "results"
THREADS = 10
OTHERS = {"Dramatiq": "dramatiq", "Huey": "huey", "RQ": "rq", "Celery": "celery"}
#: The W1 drains besides the headline one (IncrJob at INFO, run with W2): (job kind, log level).
DRAINS = (("incr", "warn"), ("noop", "info"), ("noop", "warn"))
#: W5: 50 ms I/O-bound jobs at the default level; "asleep" (async def perform) is Sidepunch's only.
SLEEPS = (("sleep", "info"), ("asleep", "info"))


def first_estimates(jobs: int, rss_total: int, sleep_jobs: int) -> dict[str, float]:
    """First guesses of each session's wall time (s), replaced by the measured time once one has run."""
    return {"w12": 12 + jobs / 2000, "drain": 6 + jobs / 3000, "w5": 6 + sleep_jobs / 350, "w3": 8.0,
            "w4": 15 + rss_total / 6000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller workloads, one run (about 2 minutes)")
    p.add_argument("--runs", type=int, help="runs per measurement (default 3, --quick 1); the table shows medians")
    p.add_argument("--jobs", type=int, help="W1 jobs (default 50,000, --quick 10,000)")
    p.add_argument("--sleep-jobs", type=int, help="W5 jobs (default 10,000, --quick 2,000)")
    p.add_argument("--systems", default="sp-reliable,sp-basic,sidekiq",
                   help="comma-separated subset of sp-reliable, sp-basic, sidekiq")
    p.add_argument("--workloads", default="w1,w5,w3,w4",
                   help="comma-separated subset of w1 (W1 enqueue and drains + W2), w5, w3, w4")
    p.add_argument("--budget", type=float, help="seconds; later sessions are skipped rather than run past it "
                                                "(default 2400, --quick 420)")
    p.add_argument("--redis-server", default=None, help="redis-server binary (default /usr/bin/redis-server "
                                                        "if present, else sidepunch.embedded's choice)")
    p.add_argument("--yjit", action="store_true", help="run Ruby with --yjit (Ruby 3.1's default is off)")
    p.add_argument("--keep-logs", action="store_true", help="keep the daemons' logs (path printed at the end)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: rebuild the table from a saved latest.json and print it")
    return p.parse_args(argv)


class Budget:
    def __init__(self, seconds: float, estimates: dict[str, float]) -> None:
        self.started = time.monotonic()
        self.seconds = seconds
        self.estimates = dict(estimates)
        self.skipped: list[str] = []

    def allows(self, kind: str, what: str) -> bool:
        left = self.seconds - (time.monotonic() - self.started)
        if self.estimates[kind] > left:
            self.skipped.append(f"{what} (needs ~{self.estimates[kind]:.0f} s, {left:.0f} s left)")
            print(f"  skipped {what}: time budget", flush=True)
            return False
        return True

    def took(self, kind: str, seconds: float) -> None:
        self.estimates[kind] = max(self.estimates[kind] * 0.5, seconds) if kind != "w4" else seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Noise:
    """CPU time the rest of the machine used during a session: a busy neighbour moves every number.

    foreign = (machine busy CPU time) - (this harness, its reaped children: daemons, their workers and the
    enqueue scripts) - (the Redis server); as a % of the session's wall time x cores. Steal is the hypervisor's.
    """

    def __init__(self, redis_pid: int) -> None:
        self.redis = psutil.Process(redis_pid)

    def snapshot(self) -> tuple[float, float, float, float]:
        ct = psutil.cpu_times()
        busy = ct.user + ct.nice + ct.system + ct.irq + ct.softirq
        t = os.times()
        r = self.redis.cpu_times()
        ours = t.user + t.system + t.children_user + t.children_system + r.user + r.system
        return time.monotonic(), busy, ours, getattr(ct, "steal", 0.0)

    def since(self, before: tuple[float, float, float, float]) -> dict[str, float]:
        after = self.snapshot()
        capacity = (after[0] - before[0]) * (os.cpu_count() or 1)
        foreign = (after[1] - before[1]) - (after[2] - before[2])
        return {"foreign_cpu_pct": max(0.0, 100 * foreign / capacity),
                "steal_pct": 100 * (after[3] - before[3]) / capacity}


def other_frameworks() -> list[str]:
    rows = []
    for name, module in OTHERS.items():
        if importlib.util.find_spec(module) is None:
            rows.append(f"| {name} | not installed | — | — | — |")
        else:
            rows.append(f"| {name} | installed, but this harness has no adapter for it yet | — | — | — |")
    return ["| Other Python queues | status | W1 | W2 | W3 |", "|---|---|---|---|---|", *rows]


def systems(args: argparse.Namespace, url: str, logdir: Path, env: dict[str, str]) -> list[System]:
    py, rb = Enqueuer("python", env), Enqueuer("ruby", env)
    all_systems = {
        "sp-reliable": System("sp-reliable", "Sidepunch (reliable fetch, default)", "python",
                              lambda w, lv: SidepunchDaemon(url, logdir, env, w, THREADS, "reliable", lv), py),
        "sp-basic": System("sp-basic", "Sidepunch (--fetch basic)", "python",
                           lambda w, lv: SidepunchDaemon(url, logdir, env, w, THREADS, "basic", lv), py),
        "sidekiq": System("sidekiq", "Sidekiq 6.4.1", "ruby",
                          lambda w, lv: SidekiqDaemon(url, logdir, env, w, THREADS, lv), rb),
    }
    chosen = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = set(chosen) - set(all_systems)
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(sorted(unknown))}")
    return [all_systems[k] for k in all_systems if k in chosen]


def rotated(items: list, run: int) -> list:
    """A different order per run, so no system always goes first (warm caches, drifting machine load)."""
    k = run % len(items)
    return items[k:] + items[:k]


def session(budget: Budget, noise: Noise, kind: str, what: str, fn) -> dict:
    if not budget.allows(kind, what):
        return {"error": "skipped (time budget)"}
    started = time.monotonic()
    before = noise.snapshot()
    print(f"  {what} ...", end="", flush=True)
    try:
        out = fn()
    except Exception as exc:  # one failed session must not lose the others' numbers
        print(" ERROR", flush=True)
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    else:
        out.update(noise.since(before))
        out["code"] = code_fingerprint()
        print(f" {time.monotonic() - started:.1f} s  {summary(kind, out)}  "
              f"(other load {out['foreign_cpu_pct']:.0f}% CPU)", flush=True)
    budget.took(kind, time.monotonic() - started)
    return out


def summary(kind: str, out: dict) -> str:
    if kind == "w12":
        return (f"single {out['single_jps']:,.0f}/s bulk {out['bulk_jps']:,.0f}/s drain {out['drain_jps']:,.0f}/s "
                f"p50 {out['p50_ms']:.3f} ms p99 {out['p99_ms']:.3f} ms [{out['check']}]")
    if kind in ("drain", "w5"):
        if "unsupported" in out:
            return f"unsupported: {out['unsupported']}"
        return f"drain {out['drain_jps']:,.0f}/s [{out['check']}]"
    if kind == "w3":
        return f"{out['seconds']:.3f} s, jobs per process {out['jobs_per_process']}"
    return f"growth {', '.join(f'{g:+.1f}%' for g in out['growth_pct'])} master {out['master_mb'][-1]} [{out['check']}]"


def drains(args, bench: Bench, budget: Budget, noise: Noise, chosen: list[System], runs: int, results: dict,
           rows: tuple[tuple[str, str], ...], jobs: int, kind: str) -> None:
    """One drain per (job kind, level) row, per run, each system in turn (rotated per run)."""
    for job, level in rows:
        row = f"{job}-{level}"
        for run in range(runs):
            for s in rotated(chosen, run):
                if job == "asleep" and s.lang != "python":
                    continue   # Sidekiq has no async jobs; its W5 row is the plain sleep
                results["drains"].setdefault(row, {}).setdefault(s.key, []).append(session(
                    budget, noise, kind, f"{row} run {run + 1} {s.label}",
                    lambda: bench.drain(s, job, level, jobs)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        saved["w3"] = {k: {int(w): v for w, v in per.items()} for k, per in saved["w3"].items()}
        print(render(saved))
        return 0
    runs = args.runs or (1 if args.quick else 3)
    jobs = args.jobs or (10_000 if args.quick else 50_000)
    sleep_jobs = args.sleep_jobs or (2_000 if args.quick else 10_000)
    rss_points = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    budget = Budget(args.budget or (420.0 if args.quick else 2400.0),
                    first_estimates(jobs, rss_points[1], sleep_jobs))
    workloads = {w.strip() for w in args.workloads.split(",")}
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    # Each daemon gets its log level from its row (bench_daemons.Daemon): the same level for both systems.
    env = dict(os.environ)
    env.pop("REDIS_PROVIDER", None)
    if args.yjit:
        env["RUBYOPT"] = (env.get("RUBYOPT", "") + " --yjit").strip()
    binary = args.redis_server or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                   else find_redis_server())
    logdir = Path(tempfile.mkdtemp(prefix="sidepunch-bench-"))
    server = RedisServer(binary=binary)
    results: dict = {"w12": {}, "drains": {}, "w3": {}, "w4": {}}
    try:
        server.start()
        settings = Settings(jobs=jobs, latency_jobs=1000, latency_rate=200.0, cpu_jobs=80, cpu_ms=25.0,
                            rss_points=rss_points, sleep_jobs=sleep_jobs)
        bench = Bench(server.url, settings, logdir)
        noise = Noise(server.process.pid)
        chosen = systems(args, server.url, logdir, env)
        if "sidekiq" in [s.key for s in chosen] and not os.path.exists(SIDEKIQ_BIN):
            raise SystemExit(f"{SIDEKIQ_BIN} not found (apt-get install ruby-sidekiq), or pass --systems "
                             "sp-reliable,sp-basic")
        results["machine"] = machine(bench.r, binary, env)
        for key, value in results["machine"].items():
            print(f"{key}: {value}")
        for lang in sorted({s.lang for s in chosen}):
            enqueue = chosen[[s.lang for s in chosen].index(lang)].enqueue
            tries = sorted((enqueue(server.url, "calibrate", settings.cpu_ms) for _ in range(3)),
                           key=lambda c: c["loops"])
            cal = tries[1]   # the median of three calibrations: the machine may be shared
            settings.loops[lang] = cal["loops"]
            results.setdefault("calibration", {})[lang] = cal
            print(f"calibrated {lang}: {cal['loops']:,} loops ≈ {cal['ms']:.1f} ms")
        results["settings"] = {"jobs": jobs, "runs": runs, "latency_jobs": settings.latency_jobs,
                               "latency_rate": settings.latency_rate, "cpu_jobs": settings.cpu_jobs,
                               "cpu_ms": settings.cpu_ms, "rss_points": list(rss_points), "threads": THREADS,
                               "sleep_jobs": sleep_jobs, "quick": args.quick}
        results["labels"] = {s.key: s.label for s in chosen}

        if "w1" in workloads:
            print(f"W1+W2: {jobs:,} jobs enqueue, IncrJob drain at INFO, then 1,000 paced jobs; {runs} run(s)")
            for run in range(runs):
                for s in rotated(chosen, run):
                    results["w12"].setdefault(s.key, []).append(session(
                        budget, noise, "w12", f"W1+W2 run {run + 1} {s.label}", lambda: bench.throughput_and_latency(s)))
            drains(args, bench, budget, noise, chosen, runs, results, DRAINS, jobs, "drain")
        if "w5" in workloads:
            print(f"W5: {sleep_jobs:,} jobs of 50 ms sleep (sync, and async def); {runs} run(s)")
            drains(args, bench, budget, noise, chosen, runs, results, SLEEPS, sleep_jobs, "w5")
        if "w3" in workloads:
            print(f"W3: {settings.cpu_jobs} CPU jobs on 1 and 2 processes; {runs} run(s)")
            for run in range(runs):
                for s in rotated(chosen, run):
                    for workers in (1, 2):
                        results["w3"].setdefault(s.key, {}).setdefault(workers, []).append(session(
                            budget, noise, "w3", f"W3 run {run + 1} {s.label} {workers} process(es)",
                            lambda: bench.cpu(s, workers)))
        if "w4" in workloads:
            print(f"W4: RSS across a {rss_points[1]:,}-job drain")
            for s in chosen:
                if s.key == "sp-basic":
                    continue   # the fetch mode does not change what a worker keeps in memory; time is short
                results["w4"][s.key] = session(budget, noise, "w4", f"W4 {s.label}", lambda: bench.memory(s))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
        results["interrupted"] = True
    finally:
        server.stop()
        if not args.keep_logs:
            shutil.rmtree(logdir, ignore_errors=True)

    if "labels" not in results:
        return 1
    results["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["elapsed_s"] = budget.elapsed()
    results["skipped"] = budget.skipped
    results["load_at_end"] = list(os.getloadavg())
    text = render(results)
    print()
    print(text)
    if results.get("interrupted"):
        print(f"\nnot written to {args.out}: the run was interrupted")
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwritten to {args.out}" + (f"; logs in {logdir}" if args.keep_logs else ""))
    return 0


def all_sessions(results: dict, prefix: str = "") -> list[dict]:
    """Every session's result dict, optionally only those of systems whose key starts with `prefix`."""
    out = [run for k, runs in results["w12"].items() if k.startswith(prefix) for run in runs]
    out += [run for per in results.get("drains", {}).values() for k, runs in per.items() if k.startswith(prefix)
            for run in runs]
    out += [run for k, per in results["w3"].items() if k.startswith(prefix) for runs in per.values() for run in runs]
    return out + [run for k, run in results["w4"].items() if k.startswith(prefix)]


def render(results: dict) -> str:
    s = results["settings"]
    runs = s["runs"]
    when = results["finished"]
    mode = "--quick" if s["quick"] else "full"
    lines = [f"# Sidepunch benchmark ({mode}, {when})", ""]
    lines += [f"- **{k}**: {v}" for k, v in results["machine"].items()]
    cal = results.get("calibration", {})
    lines += ["- **CPU job calibration**: " + ", ".join(
        f"{lang} {c['loops']:,} loops = {c['ms']:.1f} ms" for lang, c in cal.items())]
    lines += [f"- **Configuration**: Sidepunch `sidepunchd --workers 2 --threads {s['threads']}` (reliable fetch, "
              f"and `--fetch basic`); Sidekiq `sidekiq -c {s['threads']}` × 2 processes; log level per row: INFO "
              "(both systems' default: a start and a done line per job) or WARN (no per-job lines), the same for "
              f"both. Medians of {runs} run(s); system order rotates per run.", ""]
    foreign = [run["foreign_cpu_pct"] for run in all_sessions(results) if "foreign_cpu_pct" in run]
    if foreign:
        lines[-1:-1] = [f"- **Other load on the machine during the sessions**: {sum(foreign) / len(foreign):.0f}% of "
                        f"its CPU on average, {max(foreign):.0f}% at worst (CPU time of processes this run did "
                        "not start; see Runs)"]
    codes = sorted({run["code"] for run in all_sessions(results, "sp-") if run.get("code")})
    if len(codes) > 1:
        lines[-1:-1] = [f"- **WARNING: Sidepunch's source changed during this run** (fingerprints "
                        f"{', '.join(codes)}; Runs shows which session ran which): the Sidepunch columns mix "
                        "versions. Rerun on a quiet tree for numbers that belong together."]
    lines += [Table(results).render(), ""]
    lines += ["Ratio = Sidepunch ÷ Sidekiq (higher is better for jobs/s, lower for ms and s). "
              "Targets are the issue's; \"Met\" is judged for the reliable / basic Sidepunch columns. "
              "W1 drain excludes boot; W2 latency is job start − enqueue stamp; W3 speedup is the median of "
              "per-run (1-process time ÷ 2-process time); W4 (no-op jobs at WARN) RSS is sampled with psutil at 0 jobs, after the "
              "first mark and at the end (Sidekiq has no master process).", ""]
    lines += other_frameworks() + [""]
    lines += [f"Run took {results['elapsed_s']:.0f} s; load average (1, 5, 15 min) at the end: "
              + " ".join(f"{x:.2f}" for x in results["load_at_end"]) + "."]
    if results["skipped"]:
        lines += ["", "**Skipped for the time budget**: " + "; ".join(results["skipped"])]
    if results.get("interrupted"):
        lines += ["", "**Interrupted**: the numbers above are partial."]
    lines += ["", "## Runs", "", runs_section(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
