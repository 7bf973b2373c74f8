"""The workloads, each run identically against any system (a Daemon factory plus an Enqueuer).

Shared method: the jobs of a measured drain are enqueued while no daemon runs and parked under another key
(RENAME queue:default -> bench:staging); the daemon is started and waited for until every process has
registered in `processes` (its first heartbeat), plus a short settle; then one RENAME puts the whole backlog
back at once (Redis wakes the blocked BRPOP/BLMOVE callers) and the clock starts. Boot time is therefore
outside every throughput figure and reported on its own.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import redis

from bench_daemons import Daemon, Enqueuer

QUEUE = "queue:default"
STAGING = "bench:staging"
# Sidepunch's reliable fetch keeps every fetched job in a working list until it is acknowledged, and may
# fetch several at once; a backlog is drained when the queue and these lists are empty. Sidekiq (BRPOP) and
# basic fetch hold at most one fetched job per thread outside Redis, microseconds each for a no-op job.
WORKING_PATTERN = "working:queue:*"
_IN_WORKING = """local n = 0
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('LLEN', key) end
return n"""
LATENCY_KEY = "bench:latency"
CPU_KEY = "bench:cpu"
COUNTER_KEY = "bench:counter"
MB = 1024 * 1024


class JobsFail(Exception):
    """The daemon failed the workload's jobs (e.g. it cannot run async jobs yet): the row is unsupported."""


@dataclass
class System:
    key: str
    label: str
    lang: str                                # whose enqueue script and CPU calibration it uses
    make: Callable[[int, str], Daemon]       # (worker processes, "info" | "warn") -> a Daemon, not started yet
    enqueue: Enqueuer


@dataclass
class Settings:
    jobs: int                 # W1
    latency_jobs: int         # W2
    latency_rate: float
    cpu_jobs: int             # W3
    cpu_ms: float
    rss_points: tuple[int, int]   # W4
    sleep_jobs: int = 10_000      # W5
    settle: float = 1.0
    poll: float = 0.005
    loops: dict[str, int] = field(default_factory=dict)   # lang -> calibrated loop count


class Bench:
    def __init__(self, redis_url: str, settings: Settings, logdir: Path) -> None:
        self.url = redis_url
        self.r = redis.Redis.from_url(redis_url)
        self.s = settings
        self.logdir = logdir

    # -- helpers ------------------------------------------------------------------------------------------
    def fresh(self) -> None:
        self.r.flushall()

    def stage(self) -> None:
        self.r.rename(QUEUE, STAGING)

    def boot(self, daemon: Daemon) -> float:
        daemon.start()
        boot = daemon.wait_ready(self.r)
        time.sleep(self.s.settle)
        return boot

    def wait_len(self, key: str, done: Callable[[int], bool], timeout: float, daemon: Daemon,
                 interval: float | None = None, abort: Callable[[], str | None] | None = None) -> float:
        """Poll LLEN until done(length); returns perf_counter() at that moment. JobsFail if abort() says why."""
        deadline = time.perf_counter() + timeout
        interval = self.s.poll if interval is None else interval
        while True:
            now = time.perf_counter()
            if done(self.r.llen(key)):
                return now
            why = abort() if abort else None
            if why:
                raise JobsFail(why)
            if now > deadline:
                raise TimeoutError(f"{key} length {self.r.llen(key)} after {timeout:.0f}s:\n{daemon.log_tail()}")
            if not daemon.alive():
                raise RuntimeError(f"{daemon.label} died:\n{daemon.log_tail()}")
            time.sleep(interval)

    def in_working(self) -> int:
        return int(self.r.eval(_IN_WORKING, 0, WORKING_PATTERN))

    def wait_drained(self, timeout: float, daemon: Daemon, interval: float | None = None,
                     abort: Callable[[], str | None] | None = None) -> tuple[float, int]:
        """Wait until the queue is empty and no fetched job is still unacknowledged.

        Returns (perf_counter() at that moment, jobs fetched but not yet acknowledged when the queue emptied).
        """
        deadline = time.perf_counter() + timeout
        self.wait_len(QUEUE, lambda n: n == 0, timeout, daemon, interval, abort)
        held = self.in_working()
        interval = self.s.poll if interval is None else interval
        while True:
            now = time.perf_counter()
            if held == 0 or self.in_working() == 0:
                why = abort() if abort else None
                if why:
                    raise JobsFail(why)
                return now, held
            if now > deadline:
                raise TimeoutError(f"jobs still unacknowledged after {timeout:.0f}s:\n{daemon.log_tail()}")
            time.sleep(interval)

    def counts(self) -> tuple[int, int]:
        return int(self.r.get("stat:processed") or 0), int(self.r.get("stat:failed") or 0)

    # -- W1 + W2: enqueue, the default drain (INCR job, INFO), then latency on the now idle daemon ----------
    def throughput_and_latency(self, system: System) -> dict:
        """Enqueue rates (no-op jobs, as before), then the headline drain: N IncrJobs at the default log
        level, then W2's paced latency jobs on the same daemon."""
        s, r, out = self.s, self.r, {}
        self.fresh()
        single = system.enqueue(self.url, "single", s.jobs)
        out["single_jps"] = s.jobs / single["seconds"]
        r.delete(QUEUE)
        bulk = system.enqueue(self.url, "bulk", s.jobs)
        out["bulk_jps"] = s.jobs / bulk["seconds"]
        assert r.llen(QUEUE) == s.jobs, "bulk enqueue left the wrong number of jobs"
        r.delete(QUEUE)
        system.enqueue(self.url, "bulk", s.jobs, "incr")
        self.stage()
        daemon = system.make(2, "info")
        try:
            out["boot_s"] = self.boot(daemon)
            out.update(self.release(daemon, s.jobs))
            time.sleep(s.settle)
            paced = system.enqueue(self.url, "paced", s.latency_jobs, s.latency_rate)
            out["worst_late_ms"] = paced["worst_late_ms"]
            self.wait_len(LATENCY_KEY, lambda n: n >= s.latency_jobs, 15, daemon, 0.05)
            latencies = sorted(float(x) * 1000 for x in r.lrange(LATENCY_KEY, 0, -1))
            for p in (50, 95, 99):
                out[f"p{p}_ms"] = percentile(latencies, p)
            out["max_ms"] = latencies[-1]
        finally:
            daemon.stop()
        out["check"] = self.check(s.jobs + s.latency_jobs, counter=s.jobs)
        return out

    def release(self, daemon: Daemon, jobs: int, abort: Callable[[], str | None] | None = None) -> dict:
        """Put the staged backlog back and time its drain; returns drain_s, drain_jps, held_at_empty."""
        started = time.perf_counter()
        self.r.rename(STAGING, QUEUE)
        finished, held = self.wait_drained(120 + jobs / 200, daemon, abort=abort)
        return {"drain_s": finished - started, "drain_jps": jobs / (finished - started), "held_at_empty": held}

    def check(self, processed_expected: int, counter: int | None = None) -> str:
        """After the daemon stopped (both systems flush their counters at exit): processed and failed counts,
        and for IncrJob the counter, which proves every job made its round trip."""
        processed, failed = self.counts()
        problems = []
        if (processed, failed) != (processed_expected, 0):
            problems.append(f"processed {processed} (expected {processed_expected}), failed {failed}")
        if counter is not None and int(self.r.get(COUNTER_KEY) or 0) != counter:
            problems.append(f"counter {int(self.r.get(COUNTER_KEY) or 0)} (expected {counter})")
        return "ok" if not problems else "; ".join(problems)

    # -- W1 rows by job kind and log level, and W5 (I/O-bound jobs) ------------------------------------------
    def drain(self, system: System, kind: str, level: str, jobs: int) -> dict:
        """N jobs of `kind` (bench_jobs.KINDS) released into 2 processes x 10 threads at `level`. A kind the
        daemon cannot run (AsyncSleepJob before async jobs exist) fails; the first failure ends the session
        and the row reports it as unsupported instead of timing 10,000 failures."""
        self.fresh()
        system.enqueue(self.url, "bulk", jobs, kind)
        assert self.r.llen(QUEUE) == jobs, "bulk enqueue left the wrong number of jobs"
        self.stage()
        daemon = system.make(2, level)
        try:
            out = {"boot_s": self.boot(daemon)}
            out.update(self.release(daemon, jobs, abort=self.first_failure))
        except JobsFail as exc:
            return {"unsupported": str(exc)}
        finally:
            daemon.stop()
        out["check"] = self.check(jobs, counter=jobs if kind == "incr" else None)
        return out

    def first_failure(self) -> str | None:
        """A job that failed lands in `retry` (or `dead`) at once, before any counter is flushed."""
        failed = self.r.zcard("retry") + self.r.zcard("dead")
        if not failed:
            return None
        sample = (self.r.zrange("retry", 0, 0) or self.r.zrange("dead", 0, 0) or [b"{}"])[0]
        try:
            why = json.loads(sample).get("error_message", "")
        except ValueError:
            why = ""
        return f"{failed} job(s) failed: {str(why)[:120]}"

    # -- W3: CPU-bound jobs on 1 and on 2 worker processes -------------------------------------------------
    def cpu(self, system: System, workers: int) -> dict:
        s, r = self.s, self.r
        self.fresh()
        system.enqueue(self.url, "cpu", s.cpu_jobs, s.loops[system.lang])
        self.stage()
        daemon = system.make(workers, "info")
        try:
            self.boot(daemon)
            started = time.time()
            r.rename(STAGING, QUEUE)
            self.wait_len(CPU_KEY, lambda n: n >= s.cpu_jobs, 60 + s.cpu_jobs * s.cpu_ms / 100, daemon, 0.02)
        finally:
            daemon.stop()
        spans = [x.split() for x in r.lrange(CPU_KEY, 0, -1)]
        per_pid: dict[str, int] = {}
        for _, _, pid in spans:
            per_pid[pid] = per_pid.get(pid, 0) + 1
        return {"seconds": max(float(e) for _, e, _ in spans) - started,
                "job_ms_mean": 1000 * sum(float(e) - float(b) for b, e, _ in spans) / len(spans),
                "jobs_per_process": sorted(per_pid.values(), reverse=True),
                # [start, end] relative to the release, and the pid: for latest.json, to see stragglers
                "spans": sorted([round(float(b) - started, 4), round(float(e) - started, 4), int(pid)]
                                for b, e, pid in spans)}

    # -- W4: memory across a long no-op drain ----------------------------------------------------------------
    def memory(self, system: System) -> dict:
        s, r = self.s, self.r
        first, total = s.rss_points
        self.fresh()
        system.enqueue(self.url, "bulk", total, timeout=600)
        self.stage()
        daemon = system.make(2, "warn")   # 1,000,000 jobs: per-job lines would measure the log file
        out: dict = {"points": [0, first, total]}
        try:
            out["boot_s"] = self.boot(daemon)
            samples = [rss(daemon)]
            started = time.perf_counter()
            r.rename(STAGING, QUEUE)
            budget = 120 + total / 1000
            self.wait_len(QUEUE, lambda n: n <= total - first, budget, daemon, 0.02)
            samples.append(rss(daemon))
            finished, _ = self.wait_drained(budget, daemon, 0.02)
            time.sleep(0.2)   # the last (at most threads x workers) no-op jobs finish
            samples.append(rss(daemon))
            out["drain_jps"] = total / (finished - started)
        finally:
            daemon.stop()
        out["samples"] = samples
        same = all(sorted(x["pids"]) == sorted(samples[0]["pids"]) for x in samples)
        out["same_pids"] = same
        mid, end = samples[1], samples[2]
        out["master_mb"] = [x["master_mb"] for x in samples]
        out["workers_mb"] = [x["workers_mb"] for x in samples]
        out["growth_pct"] = [100 * (b - a) / a for a, b in zip(mid["workers_mb"], end["workers_mb"])]
        processed, failed = self.counts()
        out["check"] = "ok" if (processed, failed) == (total, 0) and same else \
            f"processed {processed} (expected {total}), failed {failed}, same worker pids: {same}"
        return out


def rss(daemon: Daemon) -> dict:
    procs = daemon.processes()

    def mb(p: psutil.Process) -> float:
        return p.memory_info().rss / MB
    return {"master_mb": [mb(p) for p in procs["master"]][0] if procs["master"] else None,
            "workers_mb": [mb(p) for p in procs["workers"]],
            "pids": [p.pid for p in procs["workers"]]}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
