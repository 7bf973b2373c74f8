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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import redis

from ..core import keys, scripts
from .records import JobRecord, jsonable, name_key, raw_id
from ..core.payload import PayloadError, encode
from ..core.jobsets import DeadSet as DeadWriter
from ..core.jobsets import requeue_payload

Clock = Callable[[], float]
BATCH = 100
#: Sidekiq's defaults for the dead set: 180 days, 10 000 jobs (so 9 999 kept; see retry.DeadSet).
DEFAULT_DEAD = DeadWriter(max_jobs=10_000, timeout=180 * 86400.0)
_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass
class BulkResult:
    """What a bulk action did: how many entries it moved, and the entries it left (with why)."""

    done: int = 0
    left: list[tuple["SortedEntry", str]] = field(default_factory=list)


class SortedEntry(JobRecord):
    """A member of `schedule`, `retry` or `dead`, with its score (due time, or time of death).

    `reason` is why a dead entry is there when its bytes carry no error fields (keys.DEAD_REASONS), else None.
    """

    def __init__(self, jobset: "JobSet", value: bytes, score: float, reason: str | None = None) -> None:
        super().__init__(value)
        self.jobset = jobset
        self.score = float(score)
        self.reason = reason

    @property
    def at(self) -> float:
        return self.score

    def delete(self) -> bool:
        """ZREM of the exact bytes read (and its reason, in the dead set); False if the entry is gone."""
        pipe = self.jobset.redis.pipeline(transaction=True)
        pipe.zrem(self.jobset.name, self.value)
        self.jobset.forget_reasons(pipe, [self.value])
        return bool(pipe.execute()[0])

    def retry(self) -> bool:
        """Retry Now: enqueue at once, with `retry_count` one lower (if present) so the next failure brings
        it back to the same count. False if the entry was already gone; PayloadError if it cannot be
        enqueued (`problem`), in which case it stays where it is."""
        return self._enqueue(decrement=True)

    def add_to_queue(self) -> bool:
        """Enqueue a scheduled job now; False if the entry was already gone."""
        return self._enqueue(decrement=False)

    def _enqueue(self, decrement: bool) -> bool:
        if not self.ok:
            raise PayloadError(f"cannot enqueue an unparseable job ({self.parse_error}); delete or kill it")
        if self.problem is not None:  # checked first: encode() is not built for what Python's parser lets in
            raise PayloadError(f"cannot enqueue job {self.id}: {self.problem}; delete or kill it")
        job = dict(self.item)
        if decrement and type(job.get("retry_count")) is int:
            job["retry_count"] -= 1
        payload = requeue_payload(job, self.jobset.clock())
        queue = str(payload["queue"])
        try:
            data = encode(payload)
        except (ValueError, TypeError, RecursionError) as exc:
            raise PayloadError(f"cannot enqueue job {self.id}: {exc}; delete or kill it") from None
        moved = bool(self.jobset.mover(keys=[self.jobset.name, name_key(keys.queue(queue)), keys.QUEUES],
                                       args=[self.value, data, name_key(queue)]))
        if moved:
            self.jobset.forget_reasons(self.jobset.redis, [self.value])
        return moved

    def kill(self) -> bool:
        """Move to the dead set (bytes unchanged, score now, trimmed); False if the entry was already gone.
        A job that cannot be enqueued again gets a reason in keys.DEAD_REASONS saying so."""
        jobset = self.jobset
        problem = self.problem
        reason = None if problem is None else f"killed from the {jobset.name} set by an admin: {problem}"

        def move(pipe: redis.client.Pipeline) -> bool:
            # WATCH makes the ZREM and ZADD one unit that happens only if the member is still there.
            if pipe.zscore(jobset.name, self.value) is None:
                return False
            pipe.multi()
            pipe.zrem(jobset.name, self.value)
            jobset.dead.add_into(pipe, self.value, jobset.clock())
            if reason is not None:
                pipe.hset(keys.DEAD_REASONS, self.value, reason.encode("utf-8", "backslashreplace"))
            return True

        moved = jobset.redis.transaction(move, jobset.name, value_from_callable=True)
        if moved and b'"bid"' in self.value:  # a job of a batch died by hand: its batch must hear of it
            from ..features.batch import report_deaths
            report_deaths(jobset.redis, [self.value])
        return moved

    def to_dict(self) -> dict[str, Any]:
        extra = {"reason": self.reason} if isinstance(self.jobset, DeadSet) else {}
        return jsonable({"set": self.jobset.name, "score": self.score, **super().to_dict(), **extra})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.jobset.name} score={self.score} id={self.id}>"


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

    def _entries(self, rows: Iterable[tuple[bytes, float]]) -> list[SortedEntry]:
        return [SortedEntry(self, m, s) for m, s in rows]

    def forget_reasons(self, client: Any, members: list[bytes]) -> None:
        """Drop the dead-set reasons of `members` (only the dead set keeps reasons)."""

    def page(self, page: int = 1, page_size: int = 25, newest_first: bool | None = None) -> list[SortedEntry]:
        """Entries of one page (1-based), in the set's order unless `newest_first` says otherwise."""
        start = (max(page, 1) - 1) * page_size
        reverse = self.newest_first if newest_first is None else newest_first
        rows = self.redis.zrange(self.name, start, start + page_size - 1, desc=reverse, withscores=True)
        return self._entries(rows)

    def __iter__(self) -> Iterator[SortedEntry]:
        """Walks by score rather than by rank, so deleting entries while iterating skips nothing."""
        bound: float | None = None
        seen: set[bytes] = set()  # members already yielded at score == bound
        while True:
            rows = self._from(bound, BATCH + len(seen))
            fresh = [(m, s) for m, s in rows if not (s == bound and m in seen)]
            if not fresh:
                return
            for entry in self._entries(fresh):
                if entry.score != bound:
                    bound, seen = entry.score, set()
                seen.add(entry.value)
                yield entry

    def _from(self, bound: float | None, count: int) -> list[tuple[bytes, float]]:
        if self.newest_first:
            return self.redis.zrevrangebyscore(self.name, "+inf" if bound is None else bound, "-inf",
                                               start=0, num=count, withscores=True)
        return self.redis.zrangebyscore(self.name, "-inf" if bound is None else bound, "+inf",
                                        start=0, num=count, withscores=True)

    def scan(self, jid: str) -> Iterator[SortedEntry]:
        """Every entry whose payload has this exact jid (ZSCAN MATCH *jid*, as Sidekiq's find_job)."""
        pattern = b"*" + name_key(_GLOB.sub(r"\\\1", jid)) + b"*"
        for member, score in self.redis.zscan_iter(self.name, match=pattern, count=BATCH):
            entry = self._entries([(member, score)])[0]
            if entry.jid == jid:
                yield entry

    def find(self, ident: str) -> list[SortedEntry]:
        """Every entry named by `ident`: a jid, or the `raw:` id of one exact member (for entries without a
        usable jid, or to pick one of several copies)."""
        if not ident.startswith("raw:"):
            return list(self.scan(ident))
        rows = [(m, s) for m, s in self.redis.zscan_iter(self.name, count=BATCH) if raw_id(m) == ident]
        return self._entries(rows)

    def find_job(self, jid: str) -> SortedEntry | None:
        return next(self.scan(jid), None)

    def fetch(self, score: float, jid: str | None = None) -> list[SortedEntry]:
        """Entries with exactly this score (and jid), as the Web UI's `<score>-<jid>` keys look them up."""
        rows = self.redis.zrangebyscore(self.name, score, score, withscores=True)
        return [e for e in self._entries(rows) if jid is None or e.jid == jid]

    def clear(self) -> int:
        """UNLINK the whole set; returns how many entries it held."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(self.name)
        pipe.unlink(self.name)
        return int(pipe.execute()[0])

    def retry_all(self) -> int:
        """Retry Now for every entry that can be enqueued; returns how many were (see `retry_each`)."""
        return self.retry_each().done

    def retry_each(self) -> BulkResult:
        """Retry Now for every entry. One that cannot be enqueued (not JSON, or JSON that cannot be written
        back strictly) stays where it is and is reported in `left` with the reason: retrying must neither
        drop a job nor stop at one, and the admin decides whether to kill or delete what is left."""
        return self._each(SortedEntry.retry)

    def kill_all(self) -> int:
        """Move every entry to the dead set; returns how many moved."""
        return self._each(SortedEntry.kill).done

    def _each(self, action: Callable[[SortedEntry], bool]) -> BulkResult:
        # Entries that stay are stepped over by rank; moved ones close the gap. The budget of the starting
        # size stops a loop with daemons that keep failing jobs back into the set.
        result = BulkResult()
        budget = self.size
        while budget > 0:
            rows = self.redis.zrange(self.name, len(result.left), len(result.left) + BATCH - 1, withscores=True)
            if not rows:
                break
            for entry in self._entries(rows[:budget]):
                budget -= 1
                try:
                    result.done += bool(action(entry))
                except PayloadError as exc:
                    result.left.append((entry, str(exc)))
        return result


class ScheduledSet(JobSet):
    """`schedule`: jobs waiting for their time; score = when they are due."""
    name = keys.SCHEDULE


class RetrySet(JobSet):
    """`retry`: failed jobs waiting for their next attempt; score = when it is due."""
    name = keys.RETRY


class DeadSet(JobSet):
    """`dead`: jobs out of retries or killed; score = time of death; listed newest first. Each entry reads
    its reason from keys.DEAD_REASONS; deleting or clearing entries removes their reasons too."""
    name = keys.DEAD
    newest_first = True

    def _entries(self, rows: Iterable[tuple[bytes, float]]) -> list[SortedEntry]:
        rows = list(rows)
        reasons = self.redis.hmget(keys.DEAD_REASONS, [m for m, _ in rows]) if rows else []
        return [SortedEntry(self, m, s, None if why is None else why.decode("utf-8", "replace"))
                for (m, s), why in zip(rows, reasons)]

    def forget_reasons(self, client: Any, members: list[bytes]) -> None:
        if members:
            client.hdel(keys.DEAD_REASONS, *members)

    def clear(self) -> int:
        """UNLINK the set and its reasons; returns how many entries it held."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(self.name)
        pipe.unlink(self.name, keys.DEAD_REASONS)
        return int(pipe.execute()[0])

    def kill(self, value: bytes | str, reason: str | None = None) -> None:
        """Add a raw job to the dead set, trimmed as the retry logic trims it, with an optional reason."""
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        pipe = self.redis.pipeline(transaction=True)
        self.dead.add_into(pipe, raw, self.clock())
        if reason is not None:
            pipe.hset(keys.DEAD_REASONS, raw, reason.encode("utf-8", "backslashreplace"))
        pipe.execute()

    def prune_reasons(self) -> int:
        """Drop reasons whose member is no longer in the set; returns how many. Sidepunch deletes a reason with its
        member (lua/dead.lua, delete, clear), but tools that do not know the hash (Sidekiq's own) leave it behind."""
        stale = [field for field, _ in self.redis.hscan_iter(keys.DEAD_REASONS, count=BATCH)
                 if self.redis.zscore(self.name, field) is None]
        for start in range(0, len(stale), BATCH):
            self.redis.hdel(keys.DEAD_REASONS, *stale[start:start + BATCH])
        return len(stale)
