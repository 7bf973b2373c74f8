"""`BatchStatus` and `BatchSet`: batches (sidepunch.Batch) as the admin sees them.

`BatchStatus(bid)` reads one batch in one round trip: its counters (total, pending, failures), its settings
(description, parent), its times (created, completed, succeeded, first death) and, on demand, its members
(`jids()`, `pending_jids()`, `failed_jids()`, `children()`). `BatchSet` lists batches newest first; listing drops
from keys.BATCHES the ids whose data expired (30 days after they completed), as ProcessSet prunes dead processes.
Everything read from Redis is hostile input: a field that does not parse reads as 0 or "", never raises.
Imports core and client only.
"""
from __future__ import annotations

from typing import Any

import redis

from ..core import keys
from ..features.batch import valid_bid

STATES = {"p": "pending", "f": "failed", "s": "succeeded"}


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def _int(raw: Any) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _time(raw: Any) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _redis(client: redis.Redis | None) -> redis.Redis:
    if client is not None:
        return client
    from ..client.push import default_client
    return default_client().redis


class BatchStatus:
    """One batch, read when built (`refresh()` reads it again). `exists` is False for an unknown or expired bid."""

    def __init__(self, bid: str, redis: redis.Redis | None = None) -> None:
        if type(bid) is not str or not bid:
            raise TypeError(f"a batch id is a non-empty str, got {type(bid).__name__}")
        self.bid = bid
        self.redis = _redis(redis)
        self.refresh()

    def refresh(self) -> BatchStatus:
        """Read the batch again. A bid of another shape than batches have, or keys of the wrong type (written
        by something else), read as no batch."""
        fields, ttl = {}, -2
        if valid_bid(self.bid):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(keys.batch(self.bid))
            pipe.ttl(keys.batch(self.bid))
            try:
                fields, ttl = pipe.execute()
            except redis.ResponseError:
                fields, ttl = {}, -2
        self._load({_text(k): v for k, v in fields.items()}, ttl)
        return self

    def _load(self, f: dict[str, Any], ttl: int) -> None:
        self.exists = bool(f)
        self.description = _text(f.get("description"))
        self.parent = _text(f.get("parent")) or None
        self.total, self.pending = _int(f.get("total")), _int(f.get("pending"))
        self.failures, self.finished = _int(f.get("failures")), _int(f.get("finished"))
        self.open_blocks = _int(f.get("opens"))
        self.created_at = _time(f.get("created_at"))
        self.completed_at = _time(f.get("complete_at"))
        self.succeeded_at = _time(f.get("success_at"))
        self.died_at = _time(f.get("death_at"))
        self.callbacks = sorted(name[3:] for name in f if name.startswith("cb_"))
        #: Seconds until a finished batch's data expires; None while it is not finished.
        self.expires_in = ttl if ttl is not None and ttl >= 0 else None

    @property
    def complete(self) -> bool:
        """Every job ran at least once (on_complete was pushed)."""
        return self.completed_at is not None

    @property
    def success(self) -> bool:
        """Every job succeeded (on_success was pushed)."""
        return self.succeeded_at is not None

    @property
    def state(self) -> str:
        if not self.exists:
            return "unknown"
        if self.success:
            return "succeeded"
        if self.complete:
            return "complete"
        return "open" if self.open_blocks > 0 else "running"

    @property
    def progress(self) -> float:
        """Fraction of the jobs that succeeded, 0.0 to 1.0 (1.0 for an empty batch)."""
        return 1.0 if self.total <= 0 else max(0.0, min(1.0, (self.total - self.pending) / self.total))

    def members(self) -> dict[str, str]:
        """Member -> "pending" | "failed" | "succeeded"; a member "b:<bid>" is a nested batch."""
        out: dict[str, str] = {}
        if not self.exists:
            return out
        try:
            for member, state in self.redis.hscan_iter(keys.batch_members(self.bid), count=1000):
                out[_text(member)] = STATES.get(_text(state), "unknown")
        except redis.ResponseError:  # a members key of another type: no members to show
            pass
        return out

    def jids(self) -> list[str]:
        """Every job of the batch (nested batches' jobs are theirs), in no particular order."""
        return [m for m in self.members() if not m.startswith("b:")]

    def pending_jids(self) -> list[str]:
        return [m for m, s in self.members().items() if s == "pending" and not m.startswith("b:")]

    def failed_jids(self) -> list[str]:
        """Jobs that failed and have not succeeded since (in retry, dead, or discarded)."""
        return [m for m, s in self.members().items() if s == "failed" and not m.startswith("b:")]

    def children(self) -> list[str]:
        """Ids of the nested batches."""
        return [m[2:] for m in self.members() if m.startswith("b:")]

    def to_dict(self) -> dict[str, Any]:
        return {"bid": self.bid, "exists": self.exists, "state": self.state, "description": self.description,
                "parent": self.parent, "total": self.total, "pending": self.pending, "failures": self.failures,
                "finished": self.finished, "open_blocks": self.open_blocks, "created_at": self.created_at,
                "completed_at": self.completed_at, "succeeded_at": self.succeeded_at, "died_at": self.died_at,
                "callbacks": self.callbacks, "expires_in": self.expires_in}

    def __repr__(self) -> str:
        return f"<BatchStatus {self.bid} {self.state} {self.total - self.pending}/{self.total}>"


class BatchSet:
    """Every batch, newest first."""

    def __init__(self, redis: redis.Redis | None = None) -> None:
        self.redis = _redis(redis)

    def size(self) -> int:
        return int(self.redis.zcard(keys.BATCHES))  # type: ignore[arg-type]

    def list(self, limit: int = 100, offset: int = 0) -> list[BatchStatus]:
        """Up to `limit` batches from the `offset`-th newest; ids whose data expired are dropped from the list."""
        raw = self.redis.zrevrange(keys.BATCHES, max(0, offset), max(0, offset) + max(1, limit) - 1)
        found, gone = [], []
        for member in raw:  # type: ignore[union-attr]
            status = BatchStatus(_text(member), self.redis)
            (found if status.exists else gone).append(status if status.exists else member)
        if gone:
            self.redis.zrem(keys.BATCHES, *gone)
        return found

    def __iter__(self) -> Any:
        return iter(self.list())


__all__ = ["BatchSet", "BatchStatus"]
