#!/usr/bin/env python3
"""The client-side cost of one Redis round trip in redis-py, by call path (issue 12: "a dedicated raw connection
for fetch/ack like the client's").

    python bench/redispy_cost.py [--calls 20000]

On an idle Redis of its own, one thread times N round trips of the same INCR through: redis-py's
`Redis.incr` (pool checkout, retry wrapper, response callbacks), the pooled connection driven directly
(`send_packed_command` + `read_response`, what the client's push does), and one connection the thread keeps
(no pool checkout). Prints wall µs and the thread's CPU µs per call: CPU is what ten threads then queue for on
the GIL.
"""
from __future__ import annotations

import argparse
import time

import redis

from sidepunch.embedded import RedisServer, find_redis_server

KEY = "bench:cost"


def measure(label: str, call, n: int) -> None:
    for _ in range(min(n, 2000)):   # warm up
        call()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        call()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    print(f"| {label} | {1e6 * wall / n:.1f} | {1e6 * cpu / n:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20_000)
    n = p.parse_args().calls
    with RedisServer(binary=find_redis_server()) as server:
        r = redis.Redis.from_url(server.url)
        pool = r.connection_pool
        kept = pool.get_connection()
        packed = kept.pack_command("INCR", KEY)

        def pooled() -> object:
            conn = pool.get_connection()
            try:
                conn.send_packed_command(conn.pack_command("INCR", KEY))
                return conn.read_response()
            finally:
                pool.release(conn)

        def own() -> object:
            kept.send_packed_command(packed)
            return kept.read_response()

        print(f"{n:,} INCRs from one thread, redis-py {redis.__version__}\n")
        print("| call path | wall µs per call | client CPU µs per call |")
        print("|---|---|---|")
        measure("`Redis.incr` (redis-py's full path)", lambda: r.incr(KEY), n)
        measure("pooled connection, send_packed_command + read_response", pooled, n)
        measure("a connection the thread keeps, command packed once", own, n)


if __name__ == "__main__":
    main()
