"""The dashboard's overview pages: the summary bar, `/` with `/stats`, `/busy`, `/queues` and `/queues/NAME`.

Owns reading what these pages show through sidepunch.api (Stats, Queue, ProcessSet, Workers) and their actions
through api.ops.AdminOps (quiet, stop, delete a queue; pausing.py pauses one) or the api's own records (delete one queued job by the
`raw:` id of its exact bytes). No Redis logic of its own beyond INFO. Imports core and api (never server).
"""
from __future__ import annotations

import json
import time
from typing import Any

import redis
from werkzeug.wrappers import Response

from .. import api
from ..core import keys
from ..api.ops import AdminOps, NotFound
from ..api.records import jsonable
from . import pausing
from .render import decode_name

HISTORY_DAYS = (7, 30, 90, 180)
POLL_SECONDS = (2, 5, 10, 20, 60)
PAGE_SIZES = (25, 50, 100)
#: What Sidekiq Web's /stats and dashboard show of INFO.
REDIS_KEYS = ("redis_version", "uptime_in_days", "connected_clients", "used_memory_human", "used_memory_peak_human")


def summary(client: redis.Redis) -> dict[str, Any]:
    data = api.Stats(client).summary()
    rate = data["success_rate"]
    data["rate_text"] = "-" if rate is None else f"{rate * 100:.1f}%"
    return data


def page_args(ctx: Any) -> tuple[int, int]:
    """(page, page size) from the query string; anything odd falls back to 1 and 25."""
    page = ctx.request.args.get("page", "1")
    size = ctx.request.args.get("per", "25")
    page_n = int(page) if page.isdigit() and 0 < len(page) < 7 else 1
    size_n = int(size) if size.isdigit() and int(size[:4]) in PAGE_SIZES else 25
    return max(page_n, 1), size_n


def redis_info(client: redis.Redis) -> dict[str, Any]:
    info = client.info()
    return {k: info.get(k, "") for k in REDIS_KEYS}


def dashboard(ctx: Any) -> Response:
    days_arg = ctx.request.args.get("days", "30")
    days = int(days_arg) if days_arg in {str(d) for d in HISTORY_DAYS} else 30
    poll = ctx.request.args.get("poll", "5")
    history = list(reversed(api.Stats(ctx.redis).history(days)))
    peak = max([max(d.processed, d.failed) for d in history] + [1])
    return ctx.render("dashboard.html", tab="dashboard", days=days, day_choices=HISTORY_DAYS, history=history,
                      peak=peak, info=redis_info(ctx.redis), poll=poll if poll.isdigit() and int(poll[:3]) in
                      POLL_SECONDS else "5", poll_choices=POLL_SECONDS)


def stats_json(ctx: Any) -> Response:
    """Sidekiq Web's /stats: {sidekiq: {...}, redis: {...}, server_utc_time}."""
    data = api.Stats(ctx.redis).summary()
    body = {"sidekiq": {"processed": data["processed"], "failed": data["failed"], "busy": data["workers_size"],
                        "processes": data["processes_size"], "enqueued": data["enqueued"],
                        "scheduled": data["scheduled_size"], "retries": data["retry_size"],
                        "dead": data["dead_size"], "default_latency": data["default_queue_latency"]},
            "redis": redis_info(ctx.redis), "server_utc_time": time.strftime("%H:%M:%S UTC", time.gmtime())}
    return _json(body)


def queues_json(ctx: Any) -> Response:
    return _json(api.Stats(ctx.redis).queues)


def _json(body: Any) -> Response:
    return Response(json.dumps(jsonable(body), allow_nan=False), content_type="application/json")


def busy(ctx: Any) -> Response:
    processes = list(api.ProcessSet(ctx.redis))
    works = list(api.Workers(ctx.redis))
    threads = sum(p.concurrency for p in processes)
    return ctx.render("busy.html", tab="busy", processes=processes, works=works, threads=threads, now=time.time())


def busy_post(ctx: Any) -> Response:
    action = ctx.request.form.get("action", "")
    if action not in ("quiet", "stop"):
        return ctx.fail("unknown action; say quiet or stop", 400)
    ident = ctx.request.form.get("identity")
    names = AdminOps(ctx.redis).signal(action, None if ident is None else decode_name(ident))
    return ctx.redirect("busy", notice="signalled", n=len(names))


def queues(ctx: Any) -> Response:
    now = time.time()
    rows: list[tuple[api.Queue, int | None, float | None]] = []
    paused = pausing.paused(ctx)
    known = api.Queue.all(ctx.redis, clock=lambda: now)
    extra = sorted(paused - {q.name for q in known})  # paused before any push: shown, so it can be unpaused
    for queue in [*known, *(api.Queue(n, ctx.redis, clock=lambda: now) for n in extra)]:
        try:
            rows.append((queue, queue.size, queue.latency))
        except redis.ResponseError:  # a `queue:<name>` key of another type
            rows.append((queue, None, None))
    return ctx.render("queues.html", tab="queues", rows=rows, paused=paused)


def queue(ctx: Any, name: str) -> Response:
    queue = api.Queue(decode_name(name), ctx.redis)
    page, size = page_args(ctx)
    oldest = ctx.request.args.get("order") == "oldest"
    try:
        total = queue.size
        jobs = queue.page(page, size, oldest_first=oldest)
    except redis.ResponseError:
        return ctx.fail(f"the key of queue {queue.name!r} is not a list", 409)
    return ctx.render("queue.html", tab="queues", queue=queue, jobs=jobs, total=total, page=page, per=size,
                      pages=max((total + size - 1) // size, 1), oldest=oldest, now=time.time())


def queue_post(ctx: Any, name: str) -> Response:
    queue = api.Queue(decode_name(name), ctx.redis)
    form = ctx.request.form
    if form.get("action") == "delete_queue":
        if form.get("confirm") != "yes":
            return ctx.render("confirm.html", tab="queues", what=f"Delete queue {queue.name} and every job in it?",
                              action_url=ctx.url("queue", name=name), fields={"action": "delete_queue"},
                              back=ctx.url("queue", name=name))
        cleared = AdminOps(ctx.redis).clear(keys.queue(queue.name))
        return ctx.redirect("queues", notice="cleared", n=cleared.removed)
    if form.get("action") == "delete":
        wanted = set(form.getlist("id"))
        gone = [record for record in queue if record.raw_id in wanted]
        if not gone:
            raise NotFound(f"no such job in queue {queue.name!r} (it may have run meanwhile)")
        removed = sum(queue.delete(record.value) for record in gone)
        return ctx.redirect("queue", name=name, notice="deleted", n=removed)
    return ctx.fail("unknown action", 400)


ROUTES = [("/", "dashboard", ["GET"], dashboard), ("/stats", "stats", ["GET"], stats_json),
          ("/stats/queues", "stats_queues", ["GET"], queues_json),
          ("/busy", "busy", ["GET"], busy), ("/busy", "busy_post", ["POST"], busy_post),
          ("/queues", "queues", ["GET"], queues), ("/queues/<path:name>", "queue", ["GET"], queue),
          ("/queues/<path:name>", "queue_post", ["POST"], queue_post)]
