"""The client: the one place jobs are written to Redis.

`Client.push` and `Client.push_bulk` take Sidekiq's item dict, normalise and validate it (payload.py), run
client middleware, and write in one round trip: SADD queues + LPUSH queue:<q>, or ZADD schedule for jobs
with `at`. `_send` is the one place commands leave the client. The only module-global state in the
package is the default client that `configure()` sets.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any, Mapping, Sequence

import redis as redis_lib

from . import keys
from .connection import make_client, resolve_url
from .job import job_class_of
from .middleware import ClientMiddleware, run_client_chain
from .payload import check_json_native, encode, encode_value, new_jid, normalize

_SIDEKIQ_DEFAULTS = {"retry": True, "queue": "default"}
#: Seconds a push keeps retrying through a Redis restart or failover before it raises. A retried push whose
#: first attempt did land gives a duplicate job, never a lost one.
RETRY_FOR = 10.0



class Client:
    """Pushes jobs. Thread-safe; one per process is plenty. Connects on first use, not when built."""

    def __init__(self, redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
                 middleware: Sequence[ClientMiddleware] = ()) -> None:
        self._url = redis_url
        self._redis = redis
        self._lock = threading.Lock()
        self.middleware = tuple(middleware)

    @property
    def redis(self) -> redis_lib.Redis:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = make_client(resolve_url(self._url, os.environ), retry_for=RETRY_FOR)
        return self._redis

    def push(self, item: Mapping[str, Any]) -> str | None:
        """Enqueue one job; returns its jid, or None if a middleware stopped it."""
        job, odd = self._normalize(item)
        if self.middleware:
            job = run_client_chain(self.middleware, job, lambda j: j)
            if job is None:
                return None
            odd = None
        self._write([(job, odd)])
        return job["jid"]

    def push_bulk(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
        """Enqueue many jobs in one round trip.

        Sidekiq's form: one item whose `args` is a list of argument lists (and `at` a number or a list of
        numbers); every job gets a fresh jid and shares `created_at`. Also accepted: a list of item dicts.
        """
        if isinstance(items, Mapping):
            rows, at, base = self._bulk_parts(items)
            if not rows:
                return []
            jids = None if self.middleware else self._push_bulk_template(rows, at, base)
            if jids is not None:
                return jids
            items = self._expand_bulk(rows, at, base)
        jobs = []
        for item in items:
            job, odd = self._normalize(item)
            if self.middleware:
                job = run_client_chain(self.middleware, job, lambda j: j)
                if job is None:
                    continue
                odd = None
            jobs.append((job, odd))
        if jobs:
            self._write(jobs)
        return [job["jid"] for job, _ in jobs]

    @staticmethod
    def _bulk_parts(item: Mapping[str, Any]) -> tuple[list, Any, dict[str, Any]]:
        """Validate Sidekiq's bulk form; returns (argument lists, at, the keys every job shares)."""
        rows = item.get("args")
        if type(rows) is not list or any(type(r) is not list for r in rows):
            raise TypeError("push_bulk needs 'args' to be a list of argument lists")
        at = item.get("at")
        if isinstance(at, list) and len(at) != len(rows):
            raise ValueError(f"push_bulk got {len(at)} 'at' values for {len(rows)} jobs")
        return rows, at, {k: v for k, v in item.items() if k not in ("args", "at", "jid")}

    @staticmethod
    def _expand_bulk(rows: list, at: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
        base = dict(base)
        base.setdefault("created_at", time.time())
        out = []
        for i, args in enumerate(rows):
            one = dict(base, args=args, jid=new_jid())
            if at is not None:
                one["at"] = at[i] if isinstance(at, list) else at
            out.append(one)
        return out

    def _push_bulk_template(self, rows: list, at: Any, base: dict[str, Any]) -> list[str] | None:
        """Every job shares all but `args` and `jid`, so the shared JSON is encoded once and each job's
        arguments and jid are spliced in. The bytes are the same as encoding each job whole (tests check
        this). Returns None if the template cannot be split, and the caller takes the general path."""
        mark = secrets.token_hex(16)  # random, so no caller's value can contain it
        template, odd = self._normalize({**base, "args": [], "jid": f"jid-{mark}"})
        if at is None:
            template["enqueued_at"] = time.time()
        template["args"] = f"args-{mark}"
        parts = encode(template, odd).decode().split(f'"args-{mark}"')
        if len(parts) != 2 or parts[1].count(f'"jid-{mark}"') != 1:
            return None
        head, (middle, tail) = parts[0], parts[1].split(f'"jid-{mark}"')
        hexes = os.urandom(12 * len(rows)).hex()
        jids = [hexes[i * 24:(i + 1) * 24] for i in range(len(rows))]
        payloads = []
        for i, args in enumerate(rows):
            odd_args = check_json_native(args, f"args[{i}]")
            payloads.append(f'{head}{encode_value(args, odd_args)}{middle}"{jids[i]}"{tail}'.encode())
        queue = template["queue"]
        if at is None:
            self._send([("SADD", keys.QUEUES, queue), ("LPUSH", keys.queue(queue), *payloads)])
        else:
            scores = at if isinstance(at, list) else [at] * len(rows)
            self._send([("ZADD", keys.SCHEDULE, *(x for pair in zip(scores, payloads) for x in pair))])
        return jids

    @staticmethod
    def _normalize(item: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        if not isinstance(item, Mapping) or "class" not in item or "args" not in item:
            raise TypeError("a job item must be a dict with 'class' and 'args'")
        klass = item["class"]
        job_class = job_class_of(klass)
        if job_class is not None:
            return normalize(item, job_class.job_options(), job_class.job_name())
        if isinstance(klass, str) and klass:
            return normalize(item, _SIDEKIQ_DEFAULTS, klass)
        raise TypeError(f"'class' must be a Job class, a @job function or a class name, got {klass!r}")

    def _write(self, jobs: list[tuple[dict[str, Any], bool | None]]) -> None:
        """The atomic push: every command of the call in one round trip."""
        now = time.time()
        commands: list[tuple] = []
        queued: dict[str, list[bytes]] = {}
        for job, odd in jobs:
            at = job.pop("at", None)
            if at is not None:
                commands.append(("ZADD", keys.SCHEDULE, at, encode(job, odd)))
            else:
                job["enqueued_at"] = now
                queued.setdefault(job["queue"], []).append(encode(job, odd))
        for queue, payloads in queued.items():
            commands.append(("SADD", keys.QUEUES, queue))
            commands.append(("LPUSH", keys.queue(queue), *payloads))
        self._send(commands)

    def _send(self, commands: Sequence[tuple]) -> list[Any]:
        """Send commands pipelined on one pooled connection and read every reply.

        What redis-py's Pipeline does, without its per-call bookkeeping (a third of a single push's cost).
        Connection errors are retried as the client's Retry says, on a fresh connection.
        """
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            return conn.retry.call_with_retry(lambda: self._round_trip(conn, commands),
                                              lambda error: conn.disconnect())
        finally:
            pool.release(conn)

    @staticmethod
    def _round_trip(conn: Any, commands: Sequence[tuple]) -> list[Any]:
        conn.send_packed_command(conn.pack_commands(commands))
        replies, error = [], None
        for _ in commands:  # read every reply even after an error, so the connection stays in step
            try:
                replies.append(conn.read_response())
            except redis_lib.ResponseError as exc:
                error = error or exc
        if error is not None:
            raise error
        return replies


_default: Client | None = None
_default_lock = threading.Lock()


def configure(redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
              middleware: Sequence[ClientMiddleware] = ()) -> Client:
    """Set the client that `Job.perform_async` and friends use in this process."""
    global _default
    with _default_lock:
        _default = Client(redis_url, redis=redis, middleware=middleware)
    return _default


def default_client() -> Client:
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default
