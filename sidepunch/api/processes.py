"""Live processes and the jobs they are running, for the admin API (sidepunch.api re-exports this).

Owns reading the heartbeat's records (`processes`, `<identity>`, `<identity>:workers`; SIDEKIQ_WIRE.md
section 9), pruning identities whose record expired as Sidekiq's ProcessSet does, and sending remote
signals through `<identity>-signals` (section 10). The daemon's heartbeat pops those; nothing here signals a
pid directly, so it works for processes on other hosts and for Ruby Sidekiq alike.

Must not import: sidepunch.server or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import redis

from ..core import identity as identities
from ..core import keys
from .records import JobRecord, finite, jsonable, loads, name_key, name_of

SIGNAL_TTL = 60
_FIELDS = ("info", "busy", "beat", "quiet", "rss", "rtt_us", keys.PROCESS_PROCESSED, keys.PROCESS_FAILED)


def _int(raw: bytes | None) -> int:
    """A counter field; anything that is not a plain whole number (or has over 30 digits) reads as 0."""
    text = (raw or b"").strip()
    return int(text) if text.isdigit() and len(text) <= 30 else 0


def _float(raw: bytes | None) -> float:
    """A time field; anything that is not a finite number reads as 0."""
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _text(value: Any) -> str:
    """A field that should be a string, as one: a number as written, a list or object as a marker (str() of
    a deeply nested one would hit the recursion limit)."""
    if isinstance(value, str):
        return value
    if value is None or type(value) in (bool, int, float):
        return str(value)
    return f"<{'list' if isinstance(value, list) else 'object'}>"


def _json(raw: bytes | None) -> Any:
    """Parsed JSON, or None for bytes that are not JSON (or nest past the parser's recursion limit)."""
    try:
        return loads(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass
class Process:
    """One live process as its last heartbeat described it.

    `is_quiet` (Sidekiq's `stopping?`) is the `quiet == "true"` flag; `quiet()`, `stop()` and
    `dump_threads()` ask the process to act at its next beat (about 5 s later). `processed` and `failed` are
    the jobs it has run and failed since it started (our fields of the record; 0 for a process that does not
    write them, such as Ruby Sidekiq).
    """

    identity: str
    info: dict[str, Any]
    busy: int
    beat: float
    is_quiet: bool
    rss: int
    rtt_us: int
    redis: redis.Redis = field(repr=False, compare=False)
    processed: int = 0
    failed: int = 0

    @property
    def hostname(self) -> str:
        """From the record, else from the identity (a record written without one)."""
        if "hostname" not in self.info:
            parsed = identities.parse(self.identity)
            return parsed.hostname if parsed else ""
        return _text(self.info["hostname"])

    @property
    def tag(self) -> str:
        return _text(self.info.get("tag") or "")

    @property
    def started_at(self) -> float:
        return finite(self.info.get("started_at")) or 0.0

    @property
    def concurrency(self) -> int:
        value = self.info.get("concurrency")
        return value if type(value) is int and 0 <= value < 10**9 else 0

    @property
    def pid(self) -> int | None:
        """From the record, else from the identity (a record written without one)."""
        pid = self.info.get("pid")
        if "pid" not in self.info:
            parsed = identities.parse(self.identity)
            return parsed.pid if parsed else None
        return pid if type(pid) is int else None

    @property
    def queues(self) -> list[str]:
        queues = self.info.get("queues")
        return [_text(q) for q in queues] if isinstance(queues, list) else []

    @property
    def labels(self) -> list[str]:
        labels = self.info.get("labels")
        return [_text(x) for x in labels] if isinstance(labels, list) else []

    @property
    def stopping(self) -> bool:
        """Sidekiq's name for the quiet flag."""
        return self.is_quiet

    def quiet(self) -> None:
        """Stop fetching new jobs; running ones finish (TSTP)."""
        self.signal("TSTP")

    def stop(self) -> None:
        """Graceful shutdown (TERM)."""
        self.signal("TERM")

    def dump_threads(self) -> None:
        """Log every thread's stack (TTIN)."""
        self.signal("TTIN")

    def signal(self, name: str) -> None:
        # The list expires so a signal for a process that died is not delivered to nobody forever.
        key = name_key(keys.signals(self.identity))
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(key, name)
        pipe.expire(key, SIGNAL_TTL)
        pipe.execute()

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"identity": self.identity, "hostname": self.hostname, "pid": self.pid, "tag": self.tag,
                         "started_at": self.started_at, "queues": self.queues, "labels": self.labels,
                         "concurrency": self.concurrency, "busy": self.busy, "beat": self.beat,
                         "quiet": self.is_quiet, "rss": self.rss, "rtt_us": self.rtt_us,
                         "processed": self.processed, "failed": self.failed})


class ProcessSet:
    """The live processes, sorted by identity. Iterating first prunes `processes` of identities whose
    record has no `info` (it expired: the process died without deregistering)."""

    def __init__(self, redis: redis.Redis) -> None:
        self.redis = redis

    @property
    def size(self) -> int:
        return int(self.redis.scard(keys.PROCESSES))

    def __len__(self) -> int:
        return self.size

    def cleanup(self) -> int:
        """SREM every member without a record; returns how many were pruned."""
        members = sorted(self.redis.smembers(keys.PROCESSES))
        pipe = self.redis.pipeline(transaction=False)
        for identity in members:
            pipe.hget(keys.process(identity), "info")
        # A member whose key is not a hash (an error reply) has no record either.
        stale = [m for m, info in zip(members, pipe.execute(raise_on_error=False)) if not isinstance(info, bytes)]
        return int(self.redis.srem(keys.PROCESSES, *stale)) if stale else 0

    def __iter__(self) -> Iterator[Process]:
        self.cleanup()
        members = sorted(name_of(m) for m in self.redis.smembers(keys.PROCESSES))
        pipe = self.redis.pipeline(transaction=False)
        for identity in members:
            pipe.hmget(name_key(keys.process(identity)), _FIELDS)
        for identity, row in zip(members, pipe.execute()):
            process = self._build(identity, row)
            if process is not None:
                yield process

    def _build(self, identity: str, row: list[bytes | None]) -> Process | None:
        info_raw, busy, beat, quiet, rss, rtt, processed, failed = row
        if info_raw is None:
            return None  # expired between the prune and the read
        info = _json(info_raw)
        return Process(identity=identity, info=info if isinstance(info, dict) else {}, busy=_int(busy),
                       beat=_float(beat), is_quiet=quiet == b"true", rss=_int(rss), rtt_us=_int(rtt),
                       redis=self.redis, processed=_int(processed), failed=_int(failed))

    def find(self, ident: str) -> Process:
        """The one process whose identity is `ident`, starts with it, or whose pid it is.

        LookupError (with a message fit for a user) if none or several match.
        """
        processes = list(self)
        for process in processes:
            if process.identity == ident:
                return process
        matches = [p for p in processes if p.identity.startswith(ident)]
        if not matches and ident.isdigit():
            matches = [p for p in processes if p.pid == int(ident)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise LookupError(f"no live process matches {ident!r}")
        names = ", ".join(p.identity for p in matches)
        raise LookupError(f"{ident!r} matches {len(matches)} processes ({names}); give more of the identity")


@dataclass
class Work:
    """One job running right now: which process and thread, since when (`run_at`, integer seconds)."""

    identity: str
    tid: str
    queue: str
    run_at: int
    job: JobRecord

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"identity": self.identity, "tid": self.tid, "queue": self.queue, "run_at": self.run_at,
                         "job": self.job.to_dict()})


class Workers:
    """Jobs running in live processes, oldest `run_at` first. Busy processes rewrite their workers hash
    every beat, so a job shorter than a beat may never appear."""

    def __init__(self, redis: redis.Redis) -> None:
        self.redis = redis

    @property
    def size(self) -> int:
        """The sum of the processes' `busy` counts (Sidekiq's definition)."""
        members = self.redis.smembers(keys.PROCESSES)
        pipe = self.redis.pipeline(transaction=False)
        for identity in members:
            pipe.hget(keys.process(identity), "busy")
        return sum(_int(busy) for busy in pipe.execute(raise_on_error=False) if isinstance(busy, bytes))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Work]:
        members = sorted(name_of(m) for m in self.redis.smembers(keys.PROCESSES))
        pipe = self.redis.pipeline(transaction=False)
        for identity in members:
            pipe.exists(name_key(keys.process(identity)))
            pipe.hgetall(name_key(keys.workers(identity)))
        replies = pipe.execute(raise_on_error=False)
        works = []
        for i, identity in enumerate(members):
            threads = replies[2 * i + 1]
            if not replies[2 * i] or not isinstance(threads, dict):  # gone, or not a hash
                continue
            for tid, raw in threads.items():
                works.append(self._work(identity, name_of(tid), raw))
        return iter(sorted(works, key=lambda w: w.run_at))

    @staticmethod
    def _work(identity: str, tid: str, raw: bytes) -> Work:
        entry = _json(raw)
        if not isinstance(entry, dict):
            return Work(identity, tid, "", 0, JobRecord(raw))
        payload = entry.get("payload")
        # The heartbeat stores the job as a JSON string; older writers stored the object itself.
        if isinstance(payload, dict):
            payload = _dumps(payload)
        queue = _text(entry.get("queue") or "")
        run_at = entry.get("run_at")
        return Work(identity, tid, queue, run_at if type(run_at) is int else 0,
                    JobRecord(payload if isinstance(payload, (str, bytes)) else b"", queue or None))


def _dumps(payload: dict) -> bytes:
    """An old writer's payload object back as JSON bytes; a shape JSON cannot write gives b"" (unreadable)."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
    except (ValueError, RecursionError):
        return b""
