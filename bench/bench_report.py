"""What the table says: the machine, the medians side by side, the ratios against Sidekiq, the targets.

Throughput cells are the median of the runs (min-max below the table in "Runs"); ratio = Sidepunch / Sidekiq,
so higher is better for jobs/s and speedup, lower is better for ms, s and MB.
"""
from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any, Callable

import psutil
import redis

REPO = Path(__file__).resolve().parent.parent
SP_COLUMNS = ("sp-reliable", "sp-basic")


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def code_fingerprint() -> str:
    """A short hash of Sidepunch's source as it is on disk now; others may be editing it during a run."""
    digest = hashlib.sha1()
    for path in sorted((REPO / "sidepunch").rglob("*")):
        if path.suffix in (".py", ".lua") and path.is_file():
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def machine(r: redis.Redis, redis_binary: str, ruby_env: dict[str, str]) -> dict[str, str]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    osname = platform.platform()
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = f"{line.split('=', 1)[1].strip().strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    import redis as redis_py
    try:
        import hiredis
        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "pure-Python parser"
    ruby = _run(["ruby", "-e", 'require "sidekiq"; require "redis"; '
                 'print RUBY_DESCRIPTION, " | Sidekiq ", Sidekiq::VERSION, " | redis-rb ", Redis::VERSION, '
                 '" (", (defined?(Hiredis) ? "hiredis" : "pure-Ruby driver"), ")"'])
    yjit = "YJIT on" if "--yjit" in ruby_env.get("RUBYOPT", "") else "YJIT off"
    info = r.info("server")
    commit = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(REPO), "status", "--porcelain", "--", "sidepunch"])
    return {
        "CPU": f"{cpu or platform.processor()} ({os.cpu_count()} logical cores, "
               f"{psutil.cpu_count(logical=False)} physical)",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": osname,
        "Python": f"{platform.python_implementation()} {platform.python_version()} | redis-py "
                  f"{redis_py.__version__} ({parser})",
        "Ruby": f"{ruby or 'not found'} | {yjit}",
        "Redis": f"{info.get('redis_version')} ({redis_binary}, no persistence, one server for every system)",
        "Sidepunch": f"commit {commit}{' + uncommitted changes in sidepunch/' if dirty else ''}, "
                     f"source fingerprint {code_fingerprint()}",
        "Load average (1, 5, 15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "s":
        return f"{value:.2f}"
    if kind == "x":
        return f"{value:.2f}×"
    if kind == "mb":
        return f"{value:.1f}"
    if kind == "pct":
        return f"{value:+.1f}%"
    return str(value)


class Table:
    """Builds the markdown: one row per metric, a column per system, ratios, target and verdict."""

    def __init__(self, results: dict) -> None:
        self.res = results
        self.labels = results["labels"]
        self.rows: list[list[str]] = []

    def w12(self, key: str, metric: str) -> float | None:
        return med([run.get(metric) for run in self.res["w12"].get(key, []) if "error" not in run])

    def drain(self, row: str, key: str) -> float | str | None:
        """Median jobs/s of a (kind, level) drain row; "unsupported" when the daemon failed that job kind."""
        runs = self.res.get("drains", {}).get(row, {}).get(key, [])
        value = med([run["drain_jps"] for run in runs if "drain_jps" in run])
        if value is None and any("unsupported" in run for run in runs):
            return "unsupported (see Runs)"
        return value

    def w3(self, key: str, workers: int) -> float | None:
        return med([run["seconds"] for run in self.res["w3"].get(key, {}).get(workers, []) if "seconds" in run])

    def speedup(self, key: str) -> float | None:
        runs = self.res["w3"].get(key, {})
        pairs = [a["seconds"] / b["seconds"] for a, b in zip(runs.get(1, []), runs.get(2, []))
                 if "seconds" in a and "seconds" in b]
        return med(pairs)

    def w4(self, key: str, pick: Callable[[dict], Any]) -> Any:
        data = self.res["w4"].get(key)
        if not data or "error" in data:
            return None
        return pick(data)

    def add(self, name: str, get: Callable[[str], Any], kind: str, target: str = "",
            check: Callable[[Any, Any], bool] | None = None, ratio: bool = True) -> None:
        values = {k: get(k) for k in self.labels}
        sk = values.get("sidekiq")
        cells = [name] + [fmt(values[k], kind) for k in self.labels]
        ratios, verdicts = [], []
        for k in SP_COLUMNS:
            v = values.get(k)
            r = v / sk if ratio and isinstance(v, (int, float)) and isinstance(sk, (int, float)) and sk else None
            ratios.append(fmt(r, "x") if r is not None else "—")
            if check is not None:
                ok = check(v, r) if v is not None else None
                verdicts.append("—" if ok is None else ("yes" if ok else "NO"))
        cells += [" / ".join(ratios), target, " / ".join(verdicts) if verdicts else ""]
        self.rows.append(cells)

    def render(self) -> str:
        n, t = self.res["settings"], self
        first, total = n["rss_points"]
        jobs = f"{n['jobs']:,}"
        t.add(f"W1 enqueue single, {jobs} no-op jobs (jobs/s)", lambda k: t.w12(k, "single_jps"), "rate",
              "≥ 1.2× Sidekiq", lambda v, r: r is not None and r >= 1.2)
        t.add("W1 enqueue bulk, 1,000 per call (jobs/s)", lambda k: t.w12(k, "bulk_jps"), "rate",
              "≥ 2× Sidekiq", lambda v, r: r is not None and r >= 2.0)
        t.add(f"**W1 drain, {jobs} INCR jobs, INFO (default logging)** (jobs/s)", lambda k: t.w12(k, "drain_jps"),
              "rate", "≥ 1.5× Sidekiq", lambda v, r: r is not None and r >= 1.5)
        t.add(f"W1 drain, {jobs} INCR jobs, WARN (jobs/s)", lambda k: t.drain("incr-warn", k), "rate")
        t.add(f"W1 drain, {jobs} no-op jobs, INFO (jobs/s)", lambda k: t.drain("noop-info", k), "rate")
        t.add(f"W1 drain, {jobs} no-op jobs, WARN (jobs/s)", lambda k: t.drain("noop-warn", k), "rate")
        t.add("W1 boot until all processes registered (s)", lambda k: t.w12(k, "boot_s"), "s")
        rate = f"{n['latency_jobs']:,} jobs at {n['latency_rate']:.0f}/s"
        t.add(f"W2 latency p50, {rate}, INFO (ms)", lambda k: t.w12(k, "p50_ms"), "ms", "≤ 1.1× Sidekiq",
              lambda v, r: r is not None and r <= 1.1)
        t.add("W2 latency p95 (ms)", lambda k: t.w12(k, "p95_ms"), "ms")
        t.add("W2 latency p99 (ms)", lambda k: t.w12(k, "p99_ms"), "ms", "≤ 1.25× Sidekiq",
              lambda v, r: r is not None and r <= 1.25)
        sleeps = f"{n.get('sleep_jobs', 10_000):,}"
        ideal = 2 * n["threads"] / 0.05
        t.add(f"W5 drain, {sleeps} jobs × `sleep 0.05`, INFO (jobs/s; ideal {ideal:,.0f})",
              lambda k: t.drain("sleep-info", k), "rate")
        t.add("W5 same, `async def` + `await asyncio.sleep(0.05)` (jobs/s)", lambda k: t.drain("asleep-info", k),
              "rate", ratio=False)
        cpu = f"{n['cpu_jobs']} × {n['cpu_ms']:.0f} ms CPU jobs"
        # No ratio: each language's job is calibrated separately, so only the speedup compares.
        t.add(f"W3 {cpu}, 1 process (s)", lambda k: t.w3(k, 1), "s", ratio=False)
        t.add("W3 same, 2 processes (s)", lambda k: t.w3(k, 2), "s", ratio=False)
        t.add("W3 speedup 1 → 2 processes", t.speedup, "x", "≥ 1.8× (90 %)", lambda v, r: v >= 1.8, ratio=False)
        pts = f"@0 / @{first:,} / @{total:,} jobs"
        t.add(f"W4 worker RSS {pts} (MB)", lambda k: t.w4(k, lambda d: "; ".join(
            " / ".join(f"{s['workers_mb'][i]:.1f}" for s in d["samples"]) for i in range(len(d["samples"][0]["workers_mb"])))),
            "str", ratio=False)
        t.add(f"W4 worker RSS growth {first:,} → {total:,} (worst worker)", lambda k: t.w4(
            k, lambda d: max(d["growth_pct"], key=abs)), "pct", "within ±5%", lambda v, r: abs(v) <= 5.0,
            ratio=False)
        t.add(f"W4 master RSS {pts} (MB)", lambda k: t.w4(k, lambda d: None if d["master_mb"][0] is None else
              " / ".join(f"{x:.1f}" for x in d["master_mb"])), "str", ratio=False)
        t.add(f"W4 master RSS @{total:,} jobs (MB)", lambda k: t.w4(k, lambda d: d["master_mb"][-1]), "mb",
              "≤ 30 MB", lambda v, r: v <= 30.0, ratio=False)
        t.add(f"W4 drain of {total:,} no-op jobs (jobs/s)", lambda k: t.w4(k, lambda d: d["drain_jps"]), "rate")
        header = ["Workload"] + [self.labels[k] for k in self.labels] + \
                 ["Sidepunch ÷ Sidekiq (reliable / basic)", "Target", "Met (reliable / basic)"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def runs_section(results: dict) -> str:
    """Every run's numbers, so the spread behind each median is visible."""
    out = []
    for key, label in results["labels"].items():
        runs = results["w12"].get(key, [])
        for i, run in enumerate(runs, 1):
            if "error" in run:
                out.append(f"- {label} W1/W2 run {i}: ERROR {run['error']}")
                continue
            out.append(f"- {label} W1/W2 run {i}: single {run['single_jps']:,.0f}/s, bulk {run['bulk_jps']:,.0f}/s, "
                       f"drain {run['drain_jps']:,.0f}/s ({run['drain_s']:.2f} s; "
                       f"{run.get('held_at_empty', 0)} fetched, unacknowledged when the queue emptied), boot {run['boot_s']:.2f} s, "
                       f"p50/p95/p99/max {run['p50_ms']:.3f}/{run['p95_ms']:.3f}/{run['p99_ms']:.3f}/"
                       f"{run['max_ms']:.3f} ms, enqueuer worst lateness {run['worst_late_ms']:.2f} ms, "
                       f"counts {run['check']}{load(run)}")
        for workers, wruns in sorted(results["w3"].get(key, {}).items()):
            cells = [f"{r['seconds']:.3f} s (job mean {r['job_ms_mean']:.1f} ms, jobs per process "
                     f"{'+'.join(map(str, r['jobs_per_process']))}{load(r)})" if "seconds" in r
                     else f"ERROR {r.get('error')}" for r in wruns]
            if cells:
                out.append(f"- {label} W3 {workers} process(es): " + ", ".join(cells))
        for row, per in results.get("drains", {}).items():
            cells = [("unsupported: " + r["unsupported"]) if "unsupported" in r else
                     f"ERROR {r['error']}" if "error" in r else
                     f"{r['drain_jps']:,.0f}/s ({r['drain_s']:.2f} s, boot {r['boot_s']:.2f} s, "
                     f"{r.get('held_at_empty', 0)} held at empty, counts {r['check']}{load(r)})"
                     for r in per.get(key, [])]
            if cells:
                out.append(f"- {label} drain {row}: " + "; ".join(cells))
        w4 = results["w4"].get(key)
        if w4:
            out.append(f"- {label} W4: " + (f"ERROR {w4['error']}" if "error" in w4 else
                       f"drain {w4['drain_jps']:,.0f}/s, worker growth "
                       f"{', '.join(f'{g:+.2f}%' for g in w4['growth_pct'])}, counts {w4['check']}{load(w4)}"))
    return "\n".join(out)


def load(run: dict) -> str:
    code = f"; code {run['code']}" if run.get("code") else ""
    if "foreign_cpu_pct" not in run:
        return code
    steal = f", steal {run['steal_pct']:.0f}%" if run.get("steal_pct", 0) >= 1 else ""
    return f"; other load {run['foreign_cpu_pct']:.0f}% CPU{steal}{code}"
