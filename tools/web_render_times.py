"""Render times of the dashboard's pages on a big Redis: 10,000 jobs in the retry set, 100,000 other keys.

    .venv/bin/python tools/web_render_times.py

Starts its own redis-server (sidepunch.embedded), fills it, and times each page through Werkzeug's test client
(in process: the server's own work and Redis round trips, no network or browser), median and worst of 5.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

RETRIES = 10_000
KEYS = 100_000
PAGES = ["/", "/stats", "/busy", "/queues", "/retries", "/retries?page=400", "/retries?order=desc",
         "/retries?q=Mailer", "/retries?q=needle-9999", "/retries?q=%C3%BCnicode", "/morgue", "/scheduled",
         "/redis", "/keys", "/keys?match=k:9999*", "/keys/show?key=retry", "/keys/show?key=retry&page=400"]


def fill(r) -> None:
    now = time.time()
    pipe = r.pipeline(transaction=False)
    for i in range(RETRIES):
        job = {"class": "app.Mailer", "args": [i, f"needle-{i}", {"to": "a@example.com"}], "jid": f"j{i:08d}",
               "queue": "default", "error_class": "RuntimeError", "error_message": "boom", "retry_count": 3,
               "failed_at": now, "enqueued_at": now}
        pipe.zadd("retry", {json.dumps(job): now + i})
    for i in range(KEYS):
        pipe.set(f"k:{i}", i)
        if i % 5000 == 0:
            pipe.execute()
    pipe.execute()


def main() -> int:
    import redis
    from werkzeug.test import Client

    from sidepunch.embedded import RedisServer
    from sidepunch.web import create_app

    server = RedisServer().start()
    try:
        with redis.Redis.from_url(server.url) as r:
            fill(r)
            print(f"retry set: {r.zcard('retry'):,} jobs; keys: {r.dbsize():,}")
        client = Client(create_app(server.url))
        print(f"{'page':<34}{'median ms':>10}{'worst ms':>10}")
        for page in PAGES:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                response = client.get(page)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (page, response.status_code)
            print(f"{page:<34}{statistics.median(times):>10.1f}{max(times):>10.1f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
