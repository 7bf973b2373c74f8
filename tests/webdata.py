"""Populating Redis for the dashboard tests, the browser tests and the screenshot script: queues, the three
sorted sets (with hostile payloads), a live process with a running job, per-day stats and odd key names."""
from __future__ import annotations

import json
import time

from sidepunch.api.records import name_key
from sidepunch.core import keys

XSS = ['<script>window.__xss=1;alert(1)</script>', '"><img src=x onerror="window.__xss=2">', "'><svg onload=alert(3)>"]
IDENTITY = "web-host:4242:0123abcd"


def job(jid: str, cls: str = "app.Mailer", args=None, **extra) -> bytes:
    item = {"class": cls, "args": [1, "two"] if args is None else args, "jid": jid, "queue": "default",
            "created_at": time.time() - 60, "enqueued_at": time.time() - 30, **extra}
    return json.dumps(item).encode()


def failed(jid: str, **extra) -> bytes:
    fields = {"error_class": "RuntimeError", "error_message": "boom <b>bold</b>", "failed_at": time.time() - 10,
              "retry_count": 2, **extra}
    return job(jid, **fields)


def populate(r, n: int = 5, hostile: bool = True) -> None:
    now = time.time()
    r.sadd(keys.QUEUES, "default", "critical")
    for i in range(n):
        r.lpush("queue:default", job(f"q{i:04d}"))
        r.zadd(keys.RETRY, {failed(f"r{i:04d}"): now + 60 + i})
        r.zadd(keys.SCHEDULE, {job(f"s{i:04d}"): now + 3600 + i})
        r.zadd(keys.DEAD, {failed(f"d{i:04d}"): now - 100 - i})
    r.lpush("queue:critical", job("c0001", queue="critical"))
    r.set(keys.STAT_PROCESSED, 1234)
    r.set(keys.STAT_FAILED, 56)
    for day in range(30):  # a made-up month of history, today's numbers being 100 and 7
        date = time.strftime("%Y-%m-%d", time.gmtime(now - day * 86400))
        r.set(keys.daily_stat(keys.STAT_PROCESSED, date), 100 + (day * 37) % 90)
        r.set(keys.daily_stat(keys.STAT_FAILED, date), 7 + (day * 13) % 11)
    add_process(r)
    add_metrics(r, hostile)
    if hostile:
        add_hostile(r)


def add_process(r, identity: str = IDENTITY) -> None:
    info = {"hostname": "web-host", "pid": 4242, "tag": "app <i>tag</i>", "started_at": time.time() - 3600,
            "queues": ["default", "critical"], "labels": [], "concurrency": 5, "identity": identity}
    raw = name_key(identity)  # an identity may hold bytes that are not UTF-8 (as surrogate escapes)
    r.sadd(keys.PROCESSES, raw)
    r.hset(keys.process(raw), mapping={"info": json.dumps(info), "busy": 1, "beat": time.time(),
                                            "quiet": "false", "rss": 102400, "rtt_us": 100,
                                            keys.PROCESS_PROCESSED: 4321, keys.PROCESS_FAILED: 87})
    work = {"queue": "default", "payload": job("w0001", args=XSS).decode(), "run_at": int(time.time())}
    r.hset(keys.workers(raw), "tid-1", json.dumps(work))
    r.expire(keys.process(raw), 60)


def add_metrics(r, hostile: bool = True) -> None:
    """An hour of metrics as the heartbeat writes them (into both rollups), for app.Mailer, app.Report and
    (hostile) a class whose name is markup."""
    now = time.time()
    classes = ["app.Mailer", "app.Report"] + ([XSS[0]] if hostile else [])
    for minute in range(0, 60, 3):
        for step in keys.METRICS_STEPS:
            slot = keys.metrics_slot(now - minute * 60, step)
            for n, name in enumerate(classes, 1):
                counts = keys.metrics_jobs(step, slot)
                r.hincrby(counts, f"{name}|p", 10 * n + minute)
                r.hincrby(counts, f"{name}|f", minute % 4)
                r.hincrby(counts, f"{name}|ms", (10 * n + minute) * 15 * n)
                for bucket, count in (("3", 4 * n), ("5", 5 + minute), ("9", 1)):
                    r.hincrby(keys.metrics_histogram(step, slot, name), bucket, count)


def add_hostile(r) -> None:
    now = time.time()
    r.zadd(keys.RETRY, {failed("xss-retry", args=XSS, error_message=XSS[1]): now + 30})
    r.zadd(keys.DEAD, {failed("xss-dead", args=XSS): now - 5})
    r.lpush("queue:default", job("xss-queued", args=XSS, cls=XSS[0]))
    odd = b"q\xff\xfe<script>x</script>"
    r.sadd(keys.QUEUES, odd)
    r.lpush(b"queue:" + odd, b'{"class":"X","args":["\xff"]}', job("odd-q"))
    r.set(b"key\xff<script>alert(4)</script>", b"value \xfe <b>")
    r.hset(b"hash\xc3(", mapping={b"f\xff": b"<script>", b"ok": b"1"})
