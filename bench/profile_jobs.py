"""bench_jobs plus timing hooks on a worker's hot path, for bench/profile_worker.py (`-r profile_jobs`).

Imported by each worker process after the fork (sidepunchd's `-r`), before its processor threads exist, so
the wrappers below are in place for every fetch, job, acknowledgement and log line. Each wrapper adds the
call's wall time (perf_counter) and the calling thread's CPU time (thread_time) to per-thread, per-category
totals: wall - CPU is time the thread was off the CPU, waiting for Redis's reply or for the GIL. A writer
thread, started with the first call in the process, dumps the totals as JSON to $BENCH_PROFILE/<pid>.json
twice a second (workers leave with os._exit: no exit hook would run).

The hooked names (ReliableFetch._fetch_next/_block/send_acks, Processor.process/_done, processor.decode, the
"sidepunch.job" logger's info) are the worker's at the commit this file was written for; a hook whose target
is gone is skipped and named in the dump ("missing"), so a stale profile says so instead of lying.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench_jobs import *  # noqa: F401,F403  (the jobs themselves, under their wire names)
from bench_jobs import IncrJob


class Totals:
    """Per-thread, per-category [calls, wall seconds, CPU seconds]; each thread writes only its own dict."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.by_thread: dict[int, dict[str, list[float]]] = {}
        self.missing: list[str] = []
        self.started = False
        self.lock = threading.Lock()

    def timed(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.start_writer()
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                mine = self.by_thread.setdefault(threading.get_ident(), {})
                row = mine.setdefault(category, [0, 0.0, 0.0])
                row[0] += 1
                row[1] += time.perf_counter() - wall
                row[2] += time.thread_time() - cpu
        return wrapper

    def start_writer(self) -> None:
        if self.started:
            return
        with self.lock:
            if not self.started:
                self.started = True
                threading.Thread(target=self.write_forever, name="profile-writer", daemon=True).start()

    def write_forever(self) -> None:
        out = self.out_dir / f"{os.getpid()}.json"   # the worker's pid: the module may be imported before a fork
        while True:
            time.sleep(0.5)
            snapshot = {str(t): {c: list(v) for c, v in cats.items()} for t, cats in list(self.by_thread.items())}
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "threads": snapshot, "missing": self.missing}))
            tmp.replace(out)


def hook(totals: Totals, owner: Any, name: str, category: str) -> None:
    target = getattr(owner, name, None)
    if target is None:
        totals.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
        return
    setattr(owner, name, totals.timed(category, target))


def install(out_dir: Path) -> Totals:
    from sidepunch.server import processor
    from sidepunch.server.fetch import reliable

    totals = Totals(out_dir)
    hook(totals, reliable.ReliableFetch, "_fetch_next", "fetch: Lua script (acks ride along)")
    hook(totals, reliable.ReliableFetch, "_block", "fetch: blocking BLMOVE (queue empty)")
    hook(totals, reliable.ReliableFetch, "send_acks", "ack: own round trip (LREM)")
    hook(totals, processor.Processor, "process", "process (whole job, after fetch)")
    hook(totals, processor.Processor, "_done", "process: _done (counters, ack, done line)")
    hook(totals, processor, "decode", "process: JSON decode")
    hook(totals, IncrJob, "perform", "job: INCR round trip")
    job_log = logging.getLogger("sidepunch.job")
    job_log.info = totals.timed("log: start/done lines", job_log.info)  # an instance attribute: this logger only
    return totals


if os.environ.get("BENCH_PROFILE"):
    TOTALS = install(Path(os.environ["BENCH_PROFILE"]))
