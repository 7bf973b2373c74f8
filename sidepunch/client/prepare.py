"""What the sync and the async client share: turning job items into the encoded entries of the write seam.

`Preparer` owns the pure half of a push: normalise and validate an item (validate.py), run the client
middleware chain, check what it returned, and encode (payload.py), giving the entries of one atomic push;
`commands` turns entries into the Redis commands that write them. No I/O here, so `Client` (push.py) and
`AsyncClient` (aio.py) write byte-identical payloads for the same job, jid and clock, and refuse bad input
with the same errors before anything is sent.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core only).
"""
from __future__ import annotations

import itertools
import operator
import os
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..core import keys
from ..core.middleware import Middleware, MiddlewareContext, build, hooks, run_client_chain
from ..core.payload import encode, encode_value
from ..features import build_features
from .unique import Locked, add_digest, push_script, with_locks
from .validate import JID_BYTES, check_args, check_at, check_job, describe, normalize, unfit

_SIDEKIQ_DEFAULTS = {"retry": True, "queue": "default"}

#: One encoded job as the write seam gets it: (queue, at, payload), `at` its due time (it goes to the schedule)
#: or None (to its queue now). A plain tuple: a bulk push makes one per job, and a named one costs ten times more.
Entry = tuple[str, "float | None", bytes]
_QUEUE, _AT, _PAYLOAD = (operator.itemgetter(i) for i in range(3))
#: One prepared job: (its number in a bulk push or None, the job dict, whether it needs Ruby float spelling).
_Job = tuple["int | None", dict[str, Any], bool]


def _in_job(index: int, check: Callable[..., Any], *args: Any) -> Any:
    """Run one job's check in a bulk push; its TypeError or ValueError says which job it was."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"push_bulk job {index}: {exc}") from None


class Preparer:
    """Items in, entries out: validation, client middleware and encoding, for one client (or a sync client and
    its async sibling, which then share their middleware). Thread-safe.

    `clock` (epoch seconds, for created_at and enqueued_at) and `random_bytes` (the source of jids) are
    attributes a test may replace to make two pushes byte-identical.
    """

    def __init__(self, middleware: Sequence[Any], context: MiddlewareContext) -> None:
        """`middleware`: Middleware subclasses (built here, with `context`), Middleware instances, or functions
        `mw(job, call_next)`."""
        self.clock: Callable[[], float] = time.time
        self.random_bytes: Callable[[int], bytes] = os.urandom
        self._lock = threading.Lock()
        self.middleware: tuple[Middleware, ...] = tuple(build(m, context, "around_push") for m in middleware)
        self._chain = hooks(self.middleware, "around_push")
        self.features = build_features(context)  # the built-in features' push hooks (unique jobs, batches...)
        self._unique_script = push_script()  # sent with each push of unique jobs (client/unique.py)

    def install(self, middleware: Sequence[Middleware]) -> None:
        """Add built middleware outermost (a worker adds the daemon's, so pushes from jobs pass through them)."""
        with self._lock:
            self.middleware = (*middleware, *self.middleware)
            self._chain = hooks(self.middleware, "around_push")

    def one(self, item: Mapping[str, Any]) -> tuple[list[Entry], str] | None:
        """(the entries, the jid) of one push, or None if a middleware stopped it. Bad input raises TypeError or
        ValueError naming the field or argument. A unique job's entries are a unique.Locked list."""
        now = self.clock()
        job, odd, unique = self._normalize(item, now)
        chain = self.features.for_push(job, self._chain) if self.features else self._chain
        if chain:
            job = self._through_middleware(job, chain)
            if job is None:
                return None
            odd = check_job(job)
            now = self.clock()
            unique = "unique_for" in job  # a middleware may have added or removed it
        entries = self._entries([(None, job, odd)], now)
        if unique:
            entries = with_locks(entries, [job], now, self._unique_script)
        return entries, job["jid"]

    def batches(self, batches: Iterable[Any]) -> list[tuple[list[Entry], list[str | None]]]:
        """(entries, jids) for each push_bulk call of a push_batches, every one checked and encoded before
        the caller sends the first; a job a middleware stopped has None in its place among the jids. Errors
        number the jobs across all batches."""
        prepared, first = [], 0
        for batch in batches:
            entries, jids, count = self._bulk(batch, first)
            prepared.append((entries, jids))
            first += count
        return prepared

    def _bulk(self, items: Any, first: int) -> tuple[list[Entry], list[str | None], int]:
        """(entries, jids, jobs given) for one push_bulk call whose first job is number `first`."""
        if isinstance(items, Mapping):
            rows, at, base = self._bulk_parts(items, first)
            if not rows:
                return [], [], 0
            plain = not self._chain and not self._features_concern(base)
            prepared = self._bulk_template(rows, at, base, first) if plain else None
            if prepared is not None:
                return prepared[0], [*prepared[1]], len(rows)
            items = self._expand_bulk(rows, at, base)
        elif isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"push_bulk takes Sidekiq's bulk item (a dict) or a list of job items, got "
                            f"{describe(items)}")
        jobs: list[_Job] = []
        jids: list[str | None] = []  # None in the place of a job a middleware stopped
        count, now = 0, self.clock()
        for count, item in enumerate(items, 1):
            number = first + count - 1
            job, odd, _ = _in_job(number, self._normalize, item, now)
            chain = self.features.for_push(job, self._chain) if self.features else self._chain
            if chain:
                job = self._through_middleware(job, chain)
                if job is None:
                    jids.append(None)
                    continue
                odd = _in_job(number, check_job, job)
            jobs.append((number, job, odd))
            jids.append(job["jid"])
        now = self.clock()
        entries = self._entries(jobs, now)
        if any("unique_for" in job for _, job, _ in jobs):
            entries = with_locks(entries, [job for _, job, _ in jobs], now, self._unique_script)
        return entries, jids, count

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

    def _expand_bulk(self, rows: list, at: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
        base = dict(base)
        base.setdefault("created_at", self.clock())
        out = []
        for i, args in enumerate(rows):
            one = dict(base, args=args, jid=self.random_bytes(JID_BYTES).hex())
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
        now = self.clock()
        template, odd, _ = self._normalize({**base, "args": [], "jid": f"jid-{mark}"}, now)
        if at is None:
            template["enqueued_at"] = now
        template["args"] = f"args-{mark}"
        try:
            parts = encode(template, odd).decode().split(f'"args-{mark}"')
        except UnicodeEncodeError:
            raise unfit(template, "", 1) from None
        if len(parts) != 2 or parts[1].count(f'"jid-{mark}"') != 1:
            return None
        head, (middle, tail) = parts[0], parts[1].split(f'"jid-{mark}"')
        size = 2 * JID_BYTES
        hexes = self.random_bytes(JID_BYTES * len(rows)).hex()
        jids = [hexes[i * size:(i + 1) * size] for i in range(len(rows))]
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

    def _normalize(self, item: Any, now: float, probe: bool = False) -> tuple[dict[str, Any], bool, bool]:
        """The job dict of an item, whether it needs Ruby float spelling, and whether it is unique; a unique job
        gets its digest here, where its class is known (unless this is a `probe` of a bulk push's keys)."""
        if type(item) is not dict and not isinstance(item, Mapping):  # typing.Mapping checks are slow
            raise TypeError(f"a job item must be a dict with 'class' and 'args', got {describe(item)}")
        if "class" not in item or "args" not in item:
            missing = "class" if "class" not in item else "args"
            raise TypeError(f"a job item must be a dict with 'class' and 'args'; it has no {missing!r}")
        klass = item["class"]
        job_class = _job_class(klass)
        if job_class is not None:
            job, odd = normalize(item, job_class.job_options(), job_class.job_name(), now, self.random_bytes)
        elif isinstance(klass, str) and klass:
            job, odd = normalize(item, _SIDEKIQ_DEFAULTS, str.__str__(klass), now, self.random_bytes)
        else:
            what = (f"the class {klass.__module__}.{klass.__qualname__}, which is not a sidepunch.Job"
                    if isinstance(klass, type) else describe(klass))
            raise TypeError(f"'class' must be a Job class, a @job function or a class name, got {what}")
        unique = "unique_for" in job
        if unique and not probe:
            add_digest(job, job_class)
        return job, odd, unique

    def _features_concern(self, base: dict[str, Any]) -> bool:
        """Whether a feature wants the jobs of a bulk push (they share all but args and jid), or they are unique
        (each needs its own digest and lock)."""
        probe, _, unique = self._normalize({**base, "args": []}, self.clock(), probe=True)
        return unique or bool(self.features and self.features.for_push(probe, ()))

    def _through_middleware(self, job: dict[str, Any], chain: tuple[Any, ...]) -> dict[str, Any] | None:
        result = run_client_chain(chain, job, lambda j: j)
        if result is None or result is False:
            return None
        if type(result) is not dict:
            raise TypeError(f"a client middleware returned {describe(result)} instead of the job dict; "
                            "return call_next(job), or None to stop the push")
        return result

    @staticmethod
    def _entries(jobs: list[_Job], now: float) -> list[Entry]:
        """The entries of one atomic push, every job encoded; those due now get enqueued_at `now`. A job's
        number, if it has one, names it in an error."""
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


def commands(entries: Sequence[Entry]) -> list[tuple]:
    """Redis commands for one atomic push: one ZADD schedule for the due jobs, then per queue (in first-seen
    order) SADD queues and one LPUSH of its jobs in the order given. A push of unique jobs (unique.Locked) is
    one script that takes each job's lock and writes it only if it did."""
    if type(entries) is Locked:
        return entries.commands()
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
    cmds: list[tuple] = [("ZADD", keys.SCHEDULE, *scheduled)] if scheduled else []
    for queue, payloads in queued.items():
        cmds.append(("SADD", keys.QUEUES, queue))
        cmds.append(("LPUSH", keys.queue(queue), *payloads))
    return cmds


def _job_class(klass: Any) -> Any:
    """The Job class behind a Job class or a @job function, else None. client.job marks both with
    `__sidepunch_job__`, so this module never imports job.py (which imports push.py for the default client)."""
    target = getattr(klass, "__sidepunch_job__", None)
    if target is not None and (klass is target or getattr(klass, "job_class", None) is target):
        return target
    return None
