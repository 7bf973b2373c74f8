"""The admin/inspection API over Sidekiq's data layout, modeled on Sidekiq's api.rb.

Owns reading and changing what the admin sees: `Stats`, `Queue` (here), the sorted sets and `JobRecord`
(sets.py), `ProcessSet` and `Workers` (processes.py); one job by its jid: `status`, `cancel` and `result`
(jobs.py); periodic entries, `PeriodicSet` (periodic.py); paused queues (pausing.py, and Queue.pause); unique
jobs' locks, `unique_locks` (unique.py); all are importable from this module. The operations an
admin runs by jid, queue or process (retry,
delete, kill, clear, enqueue, quiet, stop) are `ops.AdminOps`, shared by the `sidepunch` command and any
dashboard. Every class takes a redis-py client explicitly (Queue may default to the configured client's) and connects to nothing on its own; the jid
functions take one too, or use the configured client's connection. Reading never changes data, except that
iterating `ProcessSet` prunes dead identities as Sidekiq does. Imports core and client only; server code never
imports this.

Orders: a queue is listed newest first (the left of the list, as Sidekiq's Queue#each); `retry` and
`schedule` soonest first; `dead` most recent death first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

import redis

from ..client.push import default_client
from ..core import keys
from ..core.errors import ResultError, ResultTimeout
from .jobs import OUTCOMES, STATES, cancel, result, status
from .batches import BatchSet, BatchStatus
from .limits import LimiterInfo, LimitSet
from . import pausing
from .metrics import Metrics
from .pausing import paused_queues
from .periodic import PeriodicInfo, PeriodicSet
from .processes import Process, ProcessSet, Work, Workers
from .records import JobRecord, name_key, name_of
from .sets import DEFAULT_DEAD, BulkResult, Clock, DeadSet, JobSet, RetrySet, ScheduledSet, SortedEntry
from .unique import UniqueLock, delete_unique_lock, unique_lock_of, unique_locks
from .unlock import clear_key, release_locks

__all__ = ["Metrics", "PeriodicInfo", "PeriodicSet", "ResultError", "ResultTimeout", "DEFAULT_DEAD", "OUTCOMES", "STATES", "BulkResult", "DayStats", "DeadSet", "JobRecord", "JobSet",
           "Process", "ProcessSet", "Queue", "RetrySet", "ScheduledSet", "SortedEntry", "Stats", "Work", "Workers",
           "cancel", "result", "status", "BatchSet", "BatchStatus", "LimitSet", "LimiterInfo", "paused_queues",
           "UniqueLock", "delete_unique_lock", "unique_lock_of", "unique_locks"]

BATCH = 100
STATS = ("processed", "failed")
#: The other endings counted all-time (keys.STAT_EVENTS), in summary() under these names.
EVENTS = ("cancelled", "expired", "rate_limited")
#: Day keys expire after five years, so older history is all zeros; Sidekiq refuses more, too.
MAX_HISTORY_DAYS = 5 * 365


def _default_redis() -> redis.Redis:
    return default_client().redis


def _int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class DayStats:
    date: str  # YYYY-MM-DD, UTC
    processed: int
    failed: int


class Stats:
    """Counters and sizes, each read live from Redis (`summary()` reads them all in two round trips)."""

    def __init__(self, redis: redis.Redis, *, clock: Clock = time.time) -> None:
        self.redis = redis
        self.clock = clock

    @property
    def processed(self) -> int:
        return _int(self.redis.get(keys.STAT_PROCESSED))

    @property
    def failed(self) -> int:
        return _int(self.redis.get(keys.STAT_FAILED))

    @property
    def expired(self) -> int:
        """All-time count of jobs dropped because they were fetched after their `expires_at` (stat:expired)."""
        return _int(self.redis.get(keys.STAT_EXPIRED))

    @property
    def rate_limited(self) -> int:
        """All-time count of times a job over a rate limit went back to the schedule (stat:rate_limited)."""
        return _int(self.redis.get(keys.STAT_RATE_LIMITED))

    @property
    def cancelled(self) -> int:
        """All-time count of running jobs stopped by `cancel` (sidepunch:stat:cancelled)."""
        return _int(self.redis.get(keys.STAT_CANCELLED))

    @staticmethod
    def rate(processed: int, failed: int) -> float | None:
        """Share of executions that succeeded (failures count as processed too); None before any job ran."""
        return max(processed - failed, 0) / processed if processed > 0 else None

    @property
    def success_rate(self) -> float | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.STAT_PROCESSED)
        pipe.get(keys.STAT_FAILED)
        processed, failed = (_int(v) for v in pipe.execute())
        return self.rate(processed, failed)

    def history(self, days: int = 30, end: datetime | None = None) -> list[DayStats]:
        """Per-day counts from the UTC day keys, newest first, ending today (or `end`); missing days are 0.
        ValueError for more than MAX_HISTORY_DAYS."""
        if days > MAX_HISTORY_DAYS:
            raise ValueError(f"at most {MAX_HISTORY_DAYS} days of history are kept, not {days}")
        last = (end or datetime.fromtimestamp(self.clock(), timezone.utc)).date()
        dates = [(last - timedelta(days=i)).isoformat() for i in range(min(max(days, 0), last.toordinal()))]
        if not dates:
            return []
        processed = self.redis.mget([keys.daily_stat(keys.STAT_PROCESSED, d) for d in dates])
        failed = self.redis.mget([keys.daily_stat(keys.STAT_FAILED, d) for d in dates])
        return [DayStats(d, _int(p), _int(f)) for d, p, f in zip(dates, processed, failed)]

    @property
    def queues(self) -> dict[str, int]:
        """Queue name -> size, largest first (Sidekiq's Stats::Queues order)."""
        names = sorted(name_of(n) for n in self.redis.smembers(keys.QUEUES))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(name_key(keys.queue(name)))
        # A `queue:<name>` key of another type counts as empty rather than hiding every other queue.
        sizes = {n: size if isinstance(size, int) else 0 for n, size in zip(names, pipe.execute(raise_on_error=False))}
        return dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def enqueued(self) -> int:
        return sum(self.queues.values())

    @property
    def scheduled_size(self) -> int:
        return int(self.redis.zcard(keys.SCHEDULE))

    @property
    def retry_size(self) -> int:
        return int(self.redis.zcard(keys.RETRY))

    @property
    def dead_size(self) -> int:
        return int(self.redis.zcard(keys.DEAD))

    @property
    def processes_size(self) -> int:
        return int(self.redis.scard(keys.PROCESSES))

    @property
    def workers_size(self) -> int:
        return Workers(self.redis).size

    @property
    def default_queue_latency(self) -> float:
        return Queue("default", self.redis, clock=self.clock).latency

    def summary(self) -> dict:
        """Everything at once, for dashboards and `sidepunch stats --json`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.STAT_PROCESSED)
        pipe.get(keys.STAT_FAILED)
        for zset in (keys.SCHEDULE, keys.RETRY, keys.DEAD):
            pipe.zcard(zset)
        pipe.scard(keys.PROCESSES)
        pipe.mget([keys.STAT_EVENTS[kind] for kind in EVENTS])
        processed, failed, scheduled, retries, dead, processes, events = pipe.execute()
        queues = self.queues
        return {"processed": _int(processed), "failed": _int(failed),
                **{kind: _int(n) for kind, n in zip(EVENTS, events)},
                "success_rate": self.rate(_int(processed), _int(failed)), "enqueued": sum(queues.values()),
                "scheduled_size": scheduled, "retry_size": retries, "dead_size": dead,
                "processes_size": processes, "workers_size": self.workers_size,
                "default_queue_latency": self.default_queue_latency, "queues": queues}

    def reset(self, *stats: str) -> None:
        """Set the all-time counters (both, or the ones named) to 0; the day keys are kept, as in Sidekiq."""
        chosen = [s for s in STATS if s in stats] if stats else list(STATS)
        if chosen:
            self.redis.mset({keys.stat(s): 0 for s in chosen})


class Queue:
    """One queue, `queue:<name>`: a LIST whose right end is the oldest job (the next to run). Without `redis`,
    the connection of the configured client (sidepunch.configure, or $REDIS_URL)."""

    def __init__(self, name: str, redis: redis.Redis | None = None, *, clock: Clock = time.time) -> None:
        self.name = name
        self.redis = redis if redis is not None else _default_redis()
        self.clock = clock

    @classmethod
    def all(cls, redis: redis.Redis, *, clock: Clock = time.time) -> list["Queue"]:
        """Every queue named in `queues`, sorted by name."""
        return [cls(name_of(n), redis, clock=clock) for n in sorted(redis.smembers(keys.QUEUES))]

    @property
    def key(self) -> bytes:
        """`queue:<name>` as the exact bytes (a name read from Redis may not be UTF-8; see name_of)."""
        return name_key(keys.queue(self.name))

    @property
    def size(self) -> int:
        return int(self.redis.llen(self.key))

    def __len__(self) -> int:
        return self.size

    @property
    def known(self) -> bool:
        """Whether `queues` names it (a queue stays known when empty, until cleared)."""
        return bool(self.redis.sismember(keys.QUEUES, name_key(self.name)))

    @property
    def latency(self) -> float:
        """Seconds since the oldest job was enqueued; 0 for an empty queue or an unreadable oldest job."""
        oldest = self.redis.lindex(self.key, -1)
        return 0.0 if oldest is None else JobRecord(oldest, self.name).latency(self.clock())

    def page(self, page: int = 1, page_size: int = 25, oldest_first: bool = False) -> list[JobRecord]:
        """One page (1-based) of jobs, newest first unless `oldest_first` (the order they will run)."""
        start = (max(page, 1) - 1) * page_size
        if oldest_first:
            rows = self.redis.lrange(self.key, -(start + page_size), -(start + 1))[::-1]
        else:
            rows = self.redis.lrange(self.key, start, start + page_size - 1)
        return [JobRecord(raw, self.name, self.redis) for raw in rows]

    def __iter__(self) -> Iterator[JobRecord]:
        """Newest first. As in Sidekiq, the offset follows the list's size, so deleting the jobs yielded
        (or new pushes) skips nothing; a job popped by a worker meanwhile can make another appear twice."""
        initial = self.size
        start = 0
        while True:
            rows = self.redis.lrange(self.key, start, start + BATCH - 1)
            if not rows:
                return
            for raw in rows:
                yield JobRecord(raw, self.name, self.redis)
            start = max(start + len(rows) - (initial - self.size), 0)
            initial = self.size

    def pause(self) -> bool:
        """Stop every daemon fetching this queue (within about a second); pushes are still accepted and running
        jobs finish. True if it was not paused. ValueError for a name no daemon could fetch."""
        return pausing.pause(self.redis, self.name)

    def unpause(self) -> bool:
        """Let every daemon fetch this queue again (within about a second); True if it was paused."""
        return pausing.unpause(self.redis, self.name)

    @property
    def paused(self) -> bool:
        return pausing.is_paused(self.redis, self.name)

    def find_job(self, jid: str) -> JobRecord | None:
        needle = name_key(jid)
        for record in self:
            # The substring test skips parsing for all but candidates.
            if needle in record.value and record.jid == jid:
                return record
        return None

    def delete(self, value: bytes) -> bool:
        """Remove one job given its exact bytes (the Web UI's delete), releasing the unique lock it holds; False if
        it was not there."""
        deleted = bool(self.redis.lrem(self.key, 1, value))
        if deleted:
            release_locks(self.redis, [value])
        return deleted

    def clear(self) -> int:
        """Remove queue:<name> and SREM queues <name> in one MULTI, and release the unique locks its jobs held;
        returns how many jobs were removed."""
        return clear_key(self.redis, self.key, "list", lambda pipe: pipe.srem(keys.QUEUES, name_key(self.name)))

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"
