"""A periodic entry: one job to enqueue on a cron schedule, as `@sidepunch.periodic(...)` declares it on a job
class and a `[[periodic]]` table of sidepunch.toml declares it (its fields are that table's keys: the contract).

An entry checks itself when built (ValueError, one line naming it) and says what a claim of one of its ticks is
called: the fingerprint hashes everything that decides what is enqueued (cron, tz, job, args, queue), so a schedule
changed mid-deploy never collides with the old one. The wire form (`to_json`) is what daemons register in Redis for
the admin API to list. Imports core only.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from . import keys
from .cron import Schedule

MISSED = ("skip", "latest", "all")
MAX_NAME = 200
#: Default `grace`: how old a missed tick may be and still run under "latest" or "all" (seconds).
DEFAULT_GRACE = 3600.0
MAX_GRACE = 30 * 86400.0


@dataclass(frozen=True)
class PeriodicEntry:
    """name: unique across the fleet; cron: 5 fields, 6 with seconds first, or an alias; job: the job class's
    name (module.Class or its wire_name); args: JSON arguments; queue: "" for the job's own; tz: a zoneinfo
    name; missed: what a start does about ticks no daemon was up for; grace: how old such a tick may be."""

    name: str
    cron: str
    job: str
    args: list = field(default_factory=list)  # plain `list`: the config loader's type for a TOML array
    queue: str = ""
    tz: str = "UTC"
    missed: Literal["skip", "latest", "all"] = "skip"
    grace: float = DEFAULT_GRACE

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name or len(self.name) > MAX_NAME or not self.name.isprintable():
            raise ValueError(f"periodic entry name {self.name!r} must be printable text of 1 to {MAX_NAME} characters")
        where = f"periodic entry {self.name!r}"
        try:
            self.schedule
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if type(self.job) is not str or not self.job or len(self.job) > 1000 or not self.job.isprintable():
            raise ValueError(f"{where}: job must name a job class")
        if not isinstance(self.args, (list, tuple)):
            raise ValueError(f"{where}: args must be an array")
        try:
            json.dumps(list(self.args), allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise ValueError(f"{where}: args must be JSON values") from None
        if self.queue and keys.queue_name_problem(self.queue):
            raise ValueError(f"{where}: queue {self.queue!r} {keys.queue_name_problem(self.queue)}")
        if self.missed not in MISSED:
            raise ValueError(f"{where}: missed must be one of {', '.join(MISSED)}, not {self.missed!r}")
        if type(self.grace) not in (int, float) or not math.isfinite(self.grace) or not 0 <= self.grace <= MAX_GRACE:
            raise ValueError(f"{where}: grace must be a number of seconds from 0 to {MAX_GRACE:.0f}")

    @cached_property
    def schedule(self) -> Schedule:
        return Schedule(self.cron, self.tz)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of what decides the enqueued job: a changed entry claims different keys."""
        text = json.dumps([self.cron, self.tz, self.job, list(self.args), self.queue], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "cron": self.cron, "job": self.job, "args": list(self.args),
                           "queue": self.queue, "tz": self.tz, "missed": self.missed, "grace": self.grace})

    @classmethod
    def from_json(cls, raw: bytes | str) -> PeriodicEntry:
        """An entry read back from Redis (hostile input): ValueError for anything that is not a valid one."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError("not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(**{k: data[k] for k in ("name", "cron", "job", "args", "queue", "tz", "missed", "grace")
                          if k in data})
        except TypeError as exc:
            raise ValueError(str(exc)) from None


def check_unique(entries: tuple[PeriodicEntry, ...] | list[PeriodicEntry]) -> None:
    """ValueError naming the first name two entries share."""
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ValueError(f"two periodic entries are named {entry.name!r}")
        seen.add(entry.name)
