"""Enqueue counter changes from a shell, as a web app's request handler would: push and return.

    python -m counters.enqueue increment apples 5 [--count 100] [--redis-url URL]

The Redis URL comes from --redis-url, else $REDIS_URL, the way sidepunchd finds it.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import sidepunch
from counters.jobs import Decrement, Increment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m counters.enqueue", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("increment", "decrement"))
    parser.add_argument("name", help="the counter")
    parser.add_argument("by", type=int, nargs="?", default=1)
    parser.add_argument("--count", type=int, default=1, help="how many such jobs to enqueue")
    parser.add_argument("--redis-url", help="default: $REDIS_URL")
    args = parser.parse_args(argv)
    sidepunch.configure(args.redis_url)
    job = Increment if args.action == "increment" else Decrement
    if args.count == 1:
        jids = [job.perform_async(args.name, args.by)]
    else:
        jids = job.perform_bulk([[args.name, args.by]] * args.count)
    print(f"enqueued {len(jids)} {args.action} job(s) of {args.by} for {args.name!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
