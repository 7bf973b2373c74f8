"""The client: the one place jobs are written to Redis.

`Client.push` and `Client.push_bulk` take Sidekiq's item dict, normalise and validate it (payload.py), run
client middleware, and write in one round trip: SADD queues + LPUSH queue:<q>, or ZADD schedule for jobs
with `at`. Every job of a call is validated and encoded before anything is sent, so bad input raises
TypeError or ValueError naming the field or argument and writes nothing.

The write seam: every push (single, bulk in both forms, push_batches, scheduled or not) reaches Redis through
`Client.write(entries)` and nothing else, with the encoded jobs of one atomic push. Testing modes replace that
one method (subclass and override it, or pass `writer=`), so validation and middleware still run as in
production. The only module-global state in the package is the default client that `configure()` sets.
Imports only sidepunch.core.
"""
from __future__ import annotations

import itertools
import operator
import os
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import redis as redis_lib

from ..core import keys
from ..core.connection import make_client, resolve_url
from ..core.middleware import Middleware, MiddlewareContext, build, hooks, run_client_chain
from ..core.payload import encode, encode_value, new_jid
from .validate import check_args, check_at, check_job, describe, normalize, unfit

_SIDEKIQ_DEFAULTS = {"retry": True, "queue": "default"}
#: Seconds a push keeps retrying through a Redis restart or failover before it raises. A retried push whose
#: first attempt did land gives a duplicate job, never a lost one.
RETRY_FOR = 10.0


#: One encoded job as the write seam gets it: (queue, at, payload), `at` its due time (it goes to the schedule)
#: or None (to its queue now). A plain tuple: a bulk push makes one per job, and a named one costs ten times more.
Entry = tuple[str, "float | None", bytes]
Writer = Callable[[Sequence[Entry]], Any]
_QUEUE, _AT, _PAYLOAD = (operator.itemgetter(i) for i in range(3))


def _in_job(index: int, check: Callable[..., Any], *args: Any) -> Any:
    """Run one job's check in a bulk push; its TypeError or ValueError says which job it was."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"push_bulk job {index}: {exc}") from None


class Client:
    """Pushes jobs. Thread-safe; one per process is plenty. Connects on first use, not when built."""

    def __init__(self, redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
                 middleware: Sequence[Any] = (), writer: Writer | None = None) -> None:
        """`middleware`: Middleware subclasses (built here, with this client's context), Middleware instances,
        or functions `mw(job, call_next)`. `writer`: a function that replaces the write seam (see `write`)."""
        self._url = redis_url
        self._redis = redis
        self._lock = threading.Lock()
        context = MiddlewareContext(lambda: self.redis)
        self.middleware: tuple[Middleware, ...] = tuple(build(m, context, "around_push") for m in middleware)
        self._chain = hooks(self.middleware, "around_push")
        if writer is not None:
            self.write = writer  # type: ignore[method-assign]

    def install(self, middleware: Sequence[Middleware]) -> None:
        """Add built middleware outermost (a worker adds the daemon's, so pushes from jobs pass through them)."""
        with self._lock:
            self.middleware = (*middleware, *self.middleware)
            self._chain = hooks(self.middleware, "around_push")

    @property
    def redis(self) -> redis_lib.Redis:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = make_client(resolve_url(self._url, os.environ), retry_for=RETRY_FOR)
        return self._redis

    def push(self, item: Mapping[str, Any]) -> str | None:
        """Enqueue one job; returns its jid, or None if a middleware stopped it.

        Bad input raises TypeError or ValueError naming the field or argument, and nothing is written.
        """
        job, odd = self._normalize(item)
        if self._chain:
            job = self._through_middleware(job)
            if job is None:
                return None
            odd = check_job(job)
        self.write(self._entries([(None, job, odd)]))
        return job["jid"]

    def push_bulk(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
        """Enqueue many jobs in one round trip; if any job is bad, none is written.

        Sidekiq's form: one item whose `args` is a list of argument lists (and `at` a number or a list of
        numbers); every job gets a fresh jid and shares `created_at`. Also accepted: a list of item dicts.
        """
        return self.push_batches([items])

    def push_batches(self, batches: Iterable[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> list[str]:
        """Several push_bulk calls that stand or fall together on bad input.

        Every batch is validated and encoded before the first is sent; then each goes in its own round trip.
        Errors number the jobs across all batches.
        """
        prepared, first = [], 0
        for batch in batches:
            prepared.append(self._prepare_bulk(batch, first))
            first += prepared[-1][2]
        jids: list[str] = []
        for entries, batch_jids, _ in prepared:
            if entries:
                self.write(entries)
            jids.extend(batch_jids)
        return jids

    def write(self, entries: Sequence[Entry]) -> Any:
        """THE WRITE SEAM: the one method through which every push reaches Redis, in one round trip.

        `entries` are the encoded jobs of one atomic push (one push, or one batch of a bulk push), each a tuple
        (queue, at, payload): `at` is its due time, or None to enqueue it now; `payload` the JSON bytes as
        Redis would store them. Testing modes replace this method and nothing else.
        """
        return self._send(_commands(entries))

    def _prepare_bulk(self, items: Any, first: int) -> tuple[list[Entry], list[str], int]:
        """(entries, jids, jobs given) for one push_bulk call whose first job is number `first`."""
        if isinstance(items, Mapping):
            rows, at, base = self._bulk_parts(items, first)
            if not rows:
                return [], [], 0
            prepared = None if self._chain else self._bulk_template(rows, at, base, first)
            if prepared is not None:
                return (*prepared, len(rows))
            items = self._expand_bulk(rows, at, base)
        elif isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"push_bulk takes Sidekiq's bulk item (a dict) or a list of job items, got "
                            f"{describe(items)}")
        jobs, count = [], 0
        for count, item in enumerate(items, 1):
            number = first + count - 1
            job, odd = _in_job(number, self._normalize, item)
            if self._chain:
                job = self._through_middleware(job)
                if job is None:
                    continue
                odd = _in_job(number, check_job, job)
            jobs.append((number, job, odd))
        return self._entries(jobs), [job["jid"] for _, job, _ in jobs], count

    @staticmethod
    def _bulk_parts(item: Mapping[str, Any], first: int) -> tuple[list, Any, dict[str, Any]]:
        """Validate Sidekiq's bulk form; returns (argument lists, at, the keys every job shares)."""
        rows = item.get("args")
        if type(rows) is not list:
            raise TypeError(f"push_bulk needs 'args' to be a list of argument lists, got {describe(rows)}")
        for i, row in enumerate(rows, first):
            if type(row) is not list:
                raise TypeError(f"push_bulk needs 'args' to be a list of argument lists; args[{i}] is "
                                f"{describe(row)}")
        at = item.get("at")
        if type(at) is list:
            if len(at) != len(rows):
                raise ValueError(f"push_bulk got {len(at)} 'at' values for {len(rows)} jobs")
            at = [check_at(x, f"'at'[{i}]") for i, x in enumerate(at, first)]
        elif at is False:  # Ruby's falsy `at`: no schedule, as in Sidekiq
            at = None
        elif at is not None:
            at = check_at(at)
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

    def _bulk_template(self, rows: list, at: Any, base: dict[str, Any],
                       first: int) -> tuple[list[Entry], list[str]] | None:
        """Every job shares all but `args` and `jid`, so the shared JSON is encoded once and each job's
        arguments and jid are spliced in. The bytes are the same as encoding each job whole (tests check
        this). Returns None if the template cannot be split, and the caller takes the general path."""
        mark = secrets.token_hex(16)  # random, so no caller's value can contain it
        template, odd = self._normalize({**base, "args": [], "jid": f"jid-{mark}"})
        if at is None:
            template["enqueued_at"] = time.time()
        template["args"] = f"args-{mark}"
        try:
            parts = encode(template, odd).decode().split(f'"args-{mark}"')
        except UnicodeEncodeError:
            raise unfit(template, "", 1) from None
        if len(parts) != 2 or parts[1].count(f'"jid-{mark}"') != 1:
            return None
        head, (middle, tail) = parts[0], parts[1].split(f'"jid-{mark}"')
        hexes = os.urandom(12 * len(rows)).hex()
        jids = [hexes[i * 24:(i + 1) * 24] for i in range(len(rows))]
        payloads = []
        for i, args in enumerate(rows):
            odd_args = check_args(args, first + i)
            try:
                payloads.append(f'{head}{encode_value(args, odd_args)}{middle}"{jids[i]}"{tail}'.encode())
            except UnicodeEncodeError:
                raise unfit(args, f"args[{first + i}]") from None
        queue = template["queue"]
        scores = at if isinstance(at, list) else itertools.repeat(at)
        return list(zip(itertools.repeat(queue), scores, payloads)), jids

    @staticmethod
    def _normalize(item: Any) -> tuple[dict[str, Any], bool]:
        if not isinstance(item, Mapping):
            raise TypeError(f"a job item must be a dict with 'class' and 'args', got {describe(item)}")
        if "class" not in item or "args" not in item:
            missing = "class" if "class" not in item else "args"
            raise TypeError(f"a job item must be a dict with 'class' and 'args'; it has no {missing!r}")
        klass = item["class"]
        job_class = _job_class(klass)
        if job_class is not None:
            return normalize(item, job_class.job_options(), job_class.job_name())
        if isinstance(klass, str) and klass:
            return normalize(item, _SIDEKIQ_DEFAULTS, str.__str__(klass))
        what = (f"the class {klass.__module__}.{klass.__qualname__}, which is not a sidepunch.Job"
                if isinstance(klass, type) else describe(klass))
        raise TypeError(f"'class' must be a Job class, a @job function or a class name, got {what}")

    def _through_middleware(self, job: dict[str, Any]) -> dict[str, Any] | None:
        result = run_client_chain(self._chain, job, lambda j: j)
        if result is None or result is False:
            return None
        if type(result) is not dict:
            raise TypeError(f"a client middleware returned {describe(result)} instead of the job dict; "
                            "return call_next(job), or None to stop the push")
        return result

    @staticmethod
    def _entries(jobs: list[tuple[int | None, dict[str, Any], bool]]) -> list[Entry]:
        """The entries of one atomic push, every job encoded. A job's number, if it has one, names it in an
        error."""
        now = time.time()
        entries: list[Entry] = []
        for number, job, odd in jobs:
            at = job.pop("at", None)
            if at is None:
                job["enqueued_at"] = now
            try:
                payload = encode(job, odd)
            except UnicodeEncodeError:  # a lone surrogate, which UTF-8 refuses: say where it is
                error = unfit(job, "", 1)
                raise error if number is None else type(error)(f"push_bulk job {number}: {error}") from None
            entries.append((job["queue"], at, payload))
        return entries

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


def _commands(entries: Sequence[Entry]) -> list[tuple]:
    """Redis commands for one atomic push: one ZADD schedule for the due jobs, then per queue (in first-seen
    order) SADD queues and one LPUSH of its jobs in the order given."""
    if len(entries) > 1:  # a bulk push, mostly of one kind: sorted out by C-level passes, not a loop per job
        due = list(map(_AT, entries))
        queues = set(map(_QUEUE, entries))
        if len(queues) == 1 and due.count(None) == len(due):
            queue = queues.pop()
            return [("SADD", keys.QUEUES, queue), ("LPUSH", keys.queue(queue), *map(_PAYLOAD, entries))]
        if None not in due:
            return [("ZADD", keys.SCHEDULE, *itertools.chain.from_iterable(zip(due, map(_PAYLOAD, entries))))]
    scheduled: list[Any] = []
    queued: dict[str, list[bytes]] = {}
    for queue, at, payload in entries:
        if at is not None:
            scheduled += (at, payload)
        else:
            queued.setdefault(queue, []).append(payload)
    commands: list[tuple] = [("ZADD", keys.SCHEDULE, *scheduled)] if scheduled else []
    for queue, payloads in queued.items():
        commands.append(("SADD", keys.QUEUES, queue))
        commands.append(("LPUSH", keys.queue(queue), *payloads))
    return commands


_default: Client | None = None
_default_lock = threading.Lock()


def _job_class(klass: Any) -> Any:
    """The Job class behind a Job class or a @job function, else None. client.job marks both with
    `__sidepunch_job__`, so this module never imports job.py (which imports this one for the default client)."""
    target = getattr(klass, "__sidepunch_job__", None)
    if target is not None and (klass is target or getattr(klass, "job_class", None) is target):
        return target
    return None


def configure(redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
              middleware: Sequence[Any] = (), writer: Writer | None = None) -> Client:
    """Set the client that `Job.perform_async` and friends use in this process. Middleware registered here is
    built once; in a worker, its around_perform and on_death hooks run too."""
    global _default
    with _default_lock:
        _default = Client(redis_url, redis=redis, middleware=middleware, writer=writer)
    return _default


def default_client() -> Client:
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default
