"""Job records and Sidekiq's sorted sets `schedule`, `retry` and `dead`, for the admin API.

Owns how a stored job is shown (`JobRecord`, which never raises on an unparseable payload) and the admin
moves on sorted-set entries: delete, Retry Now, add to queue, kill, clear and their bulk forms. A removal
always names the exact member bytes that were read, so two entries sharing a score are never confused, and
every move is conditional on that removal (schedule.lua, or WATCH/MULTI), so an entry the poller took
meanwhile is neither lost nor doubled. sidepunch.api re-exports everything; server code never imports this.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterator

import redis

from . import keys, scripts
from .payload import PayloadError, decode, encode
from .retry import DeadSet as DeadWriter
from .retry import decode_backtrace
from .scheduler import requeue_payload

Clock = Callable[[], float]
BATCH = 100
#: Sidekiq's defaults for the dead set: 180 days, 10 000 jobs (so 9 999 kept; see retry.DeadSet).
DEFAULT_DEAD = DeadWriter(max_jobs=10_000, timeout=180 * 86400.0)
_GLOB = re.compile(r"([*?\[\]\\])")


def _time(value: Any) -> float | None:
    """A time field as a float; anything else (a string breaks Sidekiq's UI too) reads as absent."""
    return float(value) if type(value) in (int, float) else None


class JobRecord:
    """One stored job: the raw bytes plus the parsed payload.

    An unparseable payload has `ok == False`, `item == {}` and `parse_error`; every accessor still answers.
    A record read from a queue can `delete()` itself (LREM of its exact bytes).
    """

    def __init__(self, value: bytes | str, queue: str | None = None, redis: redis.Redis | None = None) -> None:
        self.value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self._queue = queue
        self._redis = redis
        try:
            self.item: dict[str, Any] = decode(self.value)
            self.parse_error: str | None = None
        except PayloadError as exc:
            self.item, self.parse_error = {}, str(exc)

    @property
    def ok(self) -> bool:
        return self.parse_error is None

    @property
    def jid(self) -> str | None:
        return self._str("jid")

    @property
    def klass(self) -> str | None:
        return self._str("class")

    @property
    def error_class(self) -> str | None:
        return self._str("error_class")

    @property
    def error_message(self) -> str | None:
        return self._str("error_message")

    @property
    def enqueued_at(self) -> float | None:
        return _time(self.item.get("enqueued_at"))

    @property
    def created_at(self) -> float | None:
        return _time(self.item.get("created_at"))

    @property
    def failed_at(self) -> float | None:
        return _time(self.item.get("failed_at"))

    @property
    def retried_at(self) -> float | None:
        return _time(self.item.get("retried_at"))

    def _str(self, key: str) -> str | None:
        value = self.item.get(key)
        return value if isinstance(value, str) else None

    @property
    def queue(self) -> str | None:
        return self._str("queue") or self._queue

    @property
    def args(self) -> list:
        args = self.item.get("args")
        return args if isinstance(args, list) else []

    @property
    def retry_count(self) -> int | None:
        count = self.item.get("retry_count")
        return count if type(count) is int else None

    @property
    def tags(self) -> list:
        tags = self.item.get("tags")
        return tags if isinstance(tags, list) else []

    @property
    def display_class(self) -> str:
        """The name to show: ActiveJob's wrapped class or `display_class` win over the wire class."""
        if not self.ok:
            return "<unparseable>"
        return self._str("wrapped") or self._str("display_class") or self.klass or "?"

    @property
    def display_args(self) -> list:
        """The arguments to show: ActiveJob's `arguments`, and the last one hidden when `encrypt` is set."""
        args = self.args
        if self._str("wrapped") and args and isinstance(args[0], dict) and "arguments" in args[0]:
            inner = args[0]["arguments"]
            args = inner if isinstance(inner, list) else [inner]
        if self.item.get("encrypt") and args:
            args = args[:-1] + ["[encrypted data]"]
        return args

    @property
    def error_backtrace(self) -> list[str] | None:
        """The stored backtrace lines (compressed or the old plain-array form); None if absent or corrupt."""
        value = self.item.get("error_backtrace")
        if value is None:
            return None
        try:
            lines = decode_backtrace(value)
        except Exception:  # a corrupt field must not break a listing
            return None
        return [str(line) for line in lines] if isinstance(lines, list) else None

    def text(self) -> str:
        return self.value.decode("utf-8", "replace")

    def latency(self, now: float | None = None) -> float:
        enqueued = self.enqueued_at
        return 0.0 if enqueued is None else (time.time() if now is None else now) - enqueued

    def delete(self) -> bool:
        """Remove this job from its queue (LREM of the bytes read); False if it was no longer there."""
        if self._redis is None or self._queue is None:
            raise TypeError("only a record read from a queue can delete itself")
        return bool(self._redis.lrem(keys.queue(self._queue), 1, self.value))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; `payload` is the whole job, or `raw` the text of an unparseable one."""
        out: dict[str, Any] = {"jid": self.jid, "class": self.display_class, "queue": self.queue,
                               "args": self.display_args, "created_at": self.created_at,
                               "enqueued_at": self.enqueued_at}
        if self.error_class is not None or self.retry_count is not None:
            out.update(error_class=self.error_class, error_message=self.error_message,
                       failed_at=self.failed_at, retried_at=self.retried_at, retry_count=self.retry_count)
        if self.ok:
            out["payload"] = self.item
        else:
            out.update(raw=self.text(), parse_error=self.parse_error)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} jid={self.jid} class={self.display_class} queue={self.queue}>"


class SortedEntry(JobRecord):
    """A member of `schedule`, `retry` or `dead`, with its score (due time, or time of death)."""

    def __init__(self, jobset: "JobSet", value: bytes, score: float) -> None:
        super().__init__(value)
        self.jobset = jobset
        self.score = float(score)

    @property
    def at(self) -> float:
        return self.score

    def delete(self) -> bool:
        """ZREM of the exact bytes read; False if the entry is gone (moved by the poller, or deleted)."""
        return bool(self.jobset.redis.zrem(self.jobset.name, self.value))

    def retry(self) -> bool:
        """Retry Now: enqueue at once, with `retry_count` one lower (if present) so the next failure brings
        it back to the same count. False if the entry was already gone."""
        return self._enqueue(decrement=True)

    def add_to_queue(self) -> bool:
        """Enqueue a scheduled job now; False if the entry was already gone."""
        return self._enqueue(decrement=False)

    def _enqueue(self, decrement: bool) -> bool:
        if not self.ok:
            raise PayloadError(f"cannot enqueue an unparseable job ({self.parse_error}); delete or kill it")
        job = dict(self.item)
        if decrement and type(job.get("retry_count")) is int:
            job["retry_count"] -= 1
        payload = requeue_payload(job, self.jobset.clock())
        queue = str(payload["queue"])
        try:
            data = encode(payload)
        except ValueError as exc:  # NaN or Infinity that Python's parser let through; Ruby could not read it
            raise PayloadError(f"cannot enqueue job {self.jid}: {exc}") from None
        return bool(self.jobset.mover(keys=[self.jobset.name, keys.queue(queue), keys.QUEUES],
                                      args=[self.value, data, queue]))

    def kill(self) -> bool:
        """Move to the dead set (bytes unchanged, score now, trimmed); False if the entry was already gone."""
        jobset = self.jobset

        def move(pipe: redis.client.Pipeline) -> bool:
            # WATCH makes the ZREM and ZADD one unit that happens only if the member is still there.
            if pipe.zscore(jobset.name, self.value) is None:
                return False
            pipe.multi()
            pipe.zrem(jobset.name, self.value)
            jobset.dead.add_into(pipe, self.value, jobset.clock())
            return True

        return jobset.redis.transaction(move, jobset.name, value_from_callable=True)

    def to_dict(self) -> dict[str, Any]:
        return {"set": self.jobset.name, "score": self.score, **super().to_dict()}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.jobset.name} score={self.score} jid={self.jid}>"


class JobSet:
    """A sorted set of jobs. Iteration order: ascending score (soonest first), unless `newest_first`."""

    name = ""
    newest_first = False

    def __init__(self, redis: redis.Redis, *, clock: Clock = time.time, dead: DeadWriter = DEFAULT_DEAD) -> None:
        self.redis = redis
        self.clock = clock
        self.dead = dead
        self._mover: Any = None

    @property
    def mover(self) -> Any:
        """schedule.lua: LPUSH the new payload only if ZREM removed the old member (the poller's move)."""
        if self._mover is None:
            self._mover = scripts.load(self.redis, "schedule")
        return self._mover

    @property
    def size(self) -> int:
        return int(self.redis.zcard(self.name))

    def __len__(self) -> int:
        return self.size

    def _entry(self, value: bytes, score: float) -> SortedEntry:
        return SortedEntry(self, value, score)

    def page(self, page: int = 1, page_size: int = 25, newest_first: bool | None = None) -> list[SortedEntry]:
        """Entries of one page (1-based), in the set's order unless `newest_first` says otherwise."""
        start = (max(page, 1) - 1) * page_size
        reverse = self.newest_first if newest_first is None else newest_first
        rows = self.redis.zrange(self.name, start, start + page_size - 1, desc=reverse, withscores=True)
        return [self._entry(m, s) for m, s in rows]

    def __iter__(self) -> Iterator[SortedEntry]:
        """Walks by score rather than by rank, so deleting entries while iterating skips nothing."""
        bound: float | None = None
        seen: set[bytes] = set()  # members already yielded at score == bound
        while True:
            rows = self._from(bound, BATCH + len(seen))
            fresh = [(m, s) for m, s in rows if not (s == bound and m in seen)]
            if not fresh:
                return
            for member, score in fresh:
                if score != bound:
                    bound, seen = score, set()
                seen.add(member)
                yield self._entry(member, score)

    def _from(self, bound: float | None, count: int) -> list[tuple[bytes, float]]:
        if self.newest_first:
            return self.redis.zrevrangebyscore(self.name, "+inf" if bound is None else bound, "-inf",
                                               start=0, num=count, withscores=True)
        return self.redis.zrangebyscore(self.name, "-inf" if bound is None else bound, "+inf",
                                        start=0, num=count, withscores=True)

    def scan(self, jid: str) -> Iterator[SortedEntry]:
        """Every entry whose payload has this exact jid (ZSCAN MATCH *jid*, as Sidekiq's find_job)."""
        pattern = "*" + _GLOB.sub(r"\\\1", jid) + "*"
        for member, score in self.redis.zscan_iter(self.name, match=pattern, count=BATCH):
            entry = self._entry(member, score)
            if entry.jid == jid:
                yield entry

    def find_job(self, jid: str) -> SortedEntry | None:
        return next(self.scan(jid), None)

    def fetch(self, score: float, jid: str | None = None) -> list[SortedEntry]:
        """Entries with exactly this score (and jid), as the Web UI's `<score>-<jid>` keys look them up."""
        rows = self.redis.zrangebyscore(self.name, score, score, withscores=True)
        entries = [self._entry(m, s) for m, s in rows]
        return [e for e in entries if jid is None or e.jid == jid]

    def clear(self) -> int:
        """UNLINK the whole set; returns how many entries it held."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(self.name)
        pipe.unlink(self.name)
        return int(pipe.execute()[0])

    def retry_all(self) -> int:
        """Retry Now for every entry (unparseable ones stay); returns how many were enqueued."""
        return self._each(SortedEntry.retry, skip_unparseable=True)

    def kill_all(self) -> int:
        """Move every entry to the dead set; returns how many moved."""
        return self._each(SortedEntry.kill, skip_unparseable=False)

    def _each(self, action: Callable[[SortedEntry], bool], skip_unparseable: bool) -> int:
        # Entries that stay (unparseable ones) are stepped over by rank; moved ones close the gap. The budget
        # of the starting size stops a loop with daemons that keep failing jobs back into the set.
        done = skipped = 0
        budget = self.size
        while budget > 0:
            rows = self.redis.zrange(self.name, skipped, skipped + BATCH - 1, withscores=True)
            if not rows:
                break
            for member, score in rows[:budget]:
                budget -= 1
                entry = self._entry(member, score)
                if skip_unparseable and not entry.ok:
                    skipped += 1
                elif action(entry):
                    done += 1
        return done


class ScheduledSet(JobSet):
    """`schedule`: jobs waiting for their time; score = when they are due."""
    name = keys.SCHEDULE


class RetrySet(JobSet):
    """`retry`: failed jobs waiting for their next attempt; score = when it is due."""
    name = keys.RETRY


class DeadSet(JobSet):
    """`dead`: jobs out of retries or killed; score = time of death; listed newest first."""
    name = keys.DEAD
    newest_first = True

    def kill(self, value: bytes | str) -> None:
        """Add a raw job to the dead set, trimmed as the retry logic trims it."""
        raw = value.encode("utf-8") if isinstance(value, str) else value
        pipe = self.redis.pipeline(transaction=True)
        self.dead.add_into(pipe, raw, self.clock())
        pipe.execute()
