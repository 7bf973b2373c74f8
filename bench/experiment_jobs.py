"""bench_jobs plus what-if patches of the worker, for bench/profile_worker.py --experiment (`-r experiment_jobs`).

Measures the expected gain of a hot-path change before anyone writes it: $BENCH_EXPERIMENT is a
comma-separated list of
  ack-after=SECONDS   reliable fetch acknowledges at once only after jobs this slow (today 0.001)
  switch=SECONDS      sys.setswitchinterval (CPython's default 0.005)
Imported by each worker after the fork, before its fetchers exist. Only for measuring: nothing here is a fix.
"""
from __future__ import annotations

import os
import sys

from bench_jobs import *  # noqa: F401,F403  (the jobs themselves, under their wire names)


def apply(spec: str) -> None:
    from sidepunch.server.fetch import reliable

    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        if name == "ack-after":
            reliable.ACK_NOW_AFTER = float(value)   # read by ack() and _fetch_next() at call time
        elif name == "switch":
            sys.setswitchinterval(float(value))
        else:
            raise SystemExit(f"BENCH_EXPERIMENT: unknown {name!r}")


apply(os.environ.get("BENCH_EXPERIMENT", ""))
