"""`PeriodicSet`: the periodic entries the fleet declares, as the admin sees and operates them.

An entry is listed while some daemon registers it (keys.PERIODIC_SEEN holds when each registration lapses; a
daemon renews its entries every few seconds), so an entry removed from the code or the config file disappears
once no daemon declares it. Each row: name, schedule, zone, job, next run, last run and its jid, enabled.
`enable`/`disable` change keys.PERIODIC_DISABLED, which every daemon honours at its next look; `run` enqueues
the entry's job now, through a Client's normal push, with `periodic_name` and no `periodic_tick`.
Everything read from Redis is hostile input: an unreadable registration is listed as broken, never raised.
Imports core and client only.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import redis

from ..client.push import Client
from ..core import keys
from ..core.periodic import PeriodicEntry


@dataclass(frozen=True)
class PeriodicInfo:
    """One listed entry; `entry` is None (and `problem` says why) when its registration cannot be read."""
    name: str
    entry: PeriodicEntry | None
    enabled: bool
    next_run: float | None
    last_run: float | None
    last_jid: str | None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {"name": self.name, "cron": e and e.cron, "tz": e and e.tz, "job": e and e.job,
                "args": e and list(e.args), "queue": e and e.queue, "missed": e and e.missed, "enabled": self.enabled,
                "next_run": self.next_run, "last_run": self.last_run, "last_jid": self.last_jid,
                "problem": self.problem}


class PeriodicSet:
    """The registered periodic entries, read live; `clock` is for tests."""

    def __init__(self, redis: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock

    def names(self) -> list[str]:
        """Names some daemon registers now, sorted."""
        raw: list[bytes] = self.redis.zrangebyscore(keys.PERIODIC_SEEN, self.clock(), "+inf")  # type: ignore[assignment]
        return sorted(n.decode("utf-8", "replace") for n in raw)

    def __iter__(self) -> Any:
        return iter(self.list())

    def list(self) -> list[PeriodicInfo]:
        names = self.names()
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.PERIODIC_ENTRIES, names)
        pipe.hmget(keys.PERIODIC_LAST, names)
        pipe.smembers(keys.PERIODIC_DISABLED)
        entries, lasts, disabled = pipe.execute()
        return [self._info(n, e, l, n.encode() not in disabled) for n, e, l in zip(names, entries, lasts)]

    def get(self, name: str) -> PeriodicInfo | None:
        return next((info for info in self.list() if info.name == name), None)

    def _info(self, name: str, raw: bytes | None, last: bytes | None, enabled: bool) -> PeriodicInfo:
        tick, jid = _last(last)
        try:
            entry = PeriodicEntry.from_json(raw if raw is not None else b"")
        except ValueError as exc:
            return PeriodicInfo(name, None, enabled, None, tick, jid, f"unreadable registration: {exc}")
        upcoming = entry.schedule.next_after(self.clock())
        return PeriodicInfo(name, entry, enabled, float(upcoming) if upcoming else None, tick, jid)

    def disable(self, name: str) -> bool:
        """Stop enqueueing `name` on every daemon; False if no daemon declares it (nothing changed)."""
        if name not in self.names():
            return False
        self.redis.sadd(keys.PERIODIC_DISABLED, name)
        return True

    def enable(self, name: str) -> bool:
        """Enqueue `name` on schedule again; False if it was not disabled and no daemon declares it."""
        removed = self.redis.srem(keys.PERIODIC_DISABLED, name)
        return bool(removed) or name in self.names()

    def run(self, name: str, client: Client | None = None) -> str | None:
        """Enqueue `name`'s job now (disabled or not); its jid, or None if no daemon declares a readable `name`."""
        info = self.get(name)
        if info is None or info.entry is None:
            return None
        entry = info.entry
        job = _job_options(self.redis.hget(keys.PERIODIC_ENTRIES, name))
        job.update({"class": entry.job, "args": list(entry.args), "periodic_name": entry.name})
        if entry.queue:
            job["queue"] = entry.queue
        return (client or Client(redis=self.redis)).push(job)


def _last(raw: bytes | None) -> tuple[float | None, str | None]:
    """(tick, jid) of an entry's last enqueue, or Nones for anything unreadable."""
    try:
        data = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    tick, jid = data.get("tick"), data.get("jid")
    if not isinstance(tick, (int, float)) or isinstance(tick, bool) or not math.isfinite(tick):
        tick = None
    return (None if tick is None else float(tick)), (jid if isinstance(jid, str) else None)


#: The job-class options a registration may carry (Job.job_options); anything else in it is ignored.
OPTIONS = ("retry", "queue", "dead", "backtrace", "retry_queue", "tags", "timeout")


def _job_options(raw: Any) -> dict[str, Any]:
    """The registering daemon's job-class options (queue, retry, ...); the client's push checks their values."""
    try:
        options = json.loads(raw or b"{}").get("job_options")
    except (ValueError, RecursionError, AttributeError):
        return {}
    return {k: options[k] for k in OPTIONS if k in options} if isinstance(options, dict) else {}
