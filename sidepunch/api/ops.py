"""Admin operations by jid, queue or process: retry, delete, kill, clear, enqueue, quiet and stop.

Owns what the `sidepunch` command and a dashboard both do on behalf of an admin: find the entries a jid (or a
`raw:` id) names, act on each, and say what happened as a plain result, or raise an `OpError` whose message is
one line fit for a user. Nothing here prints, parses a command line or knows about exit statuses. Imports only
core, client and the rest of sidepunch.api (never server or admin).

Errors: `NotFound` (no such job, queue or process, or a process name matching several), `Gone` (the entry was
there but left, taken by the poller or another admin, before the operation could act on it), `BadRequest` (the
caller's input cannot make a job). `payload.PayloadError` is let through from a retry of an entry that cannot be
enqueued again (it stays where it is; the message says to delete or kill it). Redis errors are let through.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import redis

from ..client.push import Client
from ..core import keys
from . import Queue  # sidepunch.api itself; it does not import this module, so there is no cycle
from .processes import ProcessSet
from .sets import DeadSet, JobSet, RetrySet, ScheduledSet, SortedEntry

#: Set names an admin may use, Sidekiq's aliases included.
SETS: dict[str, type[JobSet]] = {"retry": RetrySet, "retries": RetrySet, "scheduled": ScheduledSet,
                                 "schedule": ScheduledSet, "dead": DeadSet, "morgue": DeadSet}
SIGNALS = ("quiet", "stop")


class OpError(Exception):
    """An operation that could not be done; str() is one line fit for a user."""


class NotFound(OpError, LookupError):
    """Nothing (or more than one thing, for a process name) matched."""


class Gone(OpError):
    """The entry was found but left its set before the operation could act on it."""


class BadRequest(OpError, ValueError):
    """The caller's input cannot make a job (a bad class, queue or argument list)."""


@dataclass(frozen=True)
class Retried:
    jid: str
    source: str         # the set it came from
    queue: str | None   # where it was enqueued


@dataclass
class RetriedAll:
    done: int = 0
    left: list[tuple[str, str]] = field(default_factory=list)  # (id, why) of entries that stay in the set


@dataclass(frozen=True)
class Removed:
    """What `delete` or `kill` did: the set of each entry it acted on (a jid may name several copies)."""
    jid: str
    sets: list[str]


@dataclass(frozen=True)
class Cleared:
    kind: str   # "set" or "queue"
    name: str
    removed: int


@dataclass(frozen=True)
class Enqueued:
    jid: str
    queue: str
    job_class: str


class AdminOps:
    """The operations over one Redis client; every method acts at once and returns what it did."""

    def __init__(self, redis: redis.Redis) -> None:
        self.redis = redis

    def find(self, ident: str, names: Sequence[str]) -> list[SortedEntry]:
        """Entries named by a jid or a `raw:` id in the sets `names` (keys of SETS), in that order."""
        found = [e for name in names for e in SETS[name](self.redis).find(ident)]
        if not found:
            raise NotFound(f"no job with jid {ident!r} in the {' or '.join(names)} set")
        return found

    def retry(self, ident: str) -> Retried:
        """Retry Now for the first entry named in the retry set, else the dead set."""
        entry = self.find(ident, ["retry", "dead"])[0]
        if not entry.retry():
            raise Gone(f"job {ident} left the {entry.jobset.name} set before it could be retried")
        return Retried(ident, entry.jobset.name, entry.queue)

    def retry_all(self) -> RetriedAll:
        """Retry Now for every entry of the retry set; those that cannot be enqueued stay, listed in `left`."""
        result = RetrySet(self.redis).retry_each()
        return RetriedAll(result.done, [(e.id, why) for e, why in result.left])

    def delete(self, ident: str) -> Removed:
        """Delete every entry named, from the retry, scheduled and dead sets."""
        entries = self.find(ident, ["retry", "scheduled", "dead"])
        gone = [e.jobset.name for e in entries if e.delete()]
        if not gone:
            raise Gone(f"job {ident} was removed by someone else before it could be deleted")
        return Removed(ident, gone)

    def kill(self, ident: str) -> Removed:
        """Move every entry named from the retry and scheduled sets to the dead set."""
        entries = self.find(ident, ["retry", "scheduled"])
        moved = [e.jobset.name for e in entries if e.kill()]
        if not moved:
            raise Gone(f"job {ident} left the {entries[0].jobset.name} set before it could be killed")
        return Removed(ident, moved)

    def clear(self, target: str) -> Cleared:
        """Empty a set (a name of SETS) or else a queue (`queue:NAME` always means a queue)."""
        if target in SETS:
            jobset = SETS[target](self.redis)
            return Cleared("set", jobset.name, jobset.clear())
        queue = Queue(keys.queue_name(target), self.redis)
        if queue.size == 0 and not queue.known:
            raise NotFound(f"no queue named {queue.name!r}; to clear a set, say retry, scheduled or dead")
        return Cleared("queue", queue.name, queue.clear())

    def enqueue(self, job_class: str, args: list[Any], queue: str | None = None) -> Enqueued:
        """Push one job, checked as the client checks every push; BadRequest says what is wrong."""
        if type(args) is not list:
            raise BadRequest(f"the arguments must be a list, not {type(args).__name__}")
        item: dict[str, Any] = {"class": job_class, "args": args}
        if queue is not None:
            item["queue"] = queue
        try:
            jid = Client(redis=self.redis).push(item)
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        return Enqueued(jid, "default" if queue is None else queue, job_class)

    def signal(self, action: str, ident: str | None = None) -> list[str]:
        """Ask one live process (identity, unique prefix or pid), or every one if `ident` is None, to quiet
        or stop at its next heartbeat; returns the identities asked."""
        if action not in SIGNALS:
            raise BadRequest(f"unknown signal {action!r}; say one of {', '.join(SIGNALS)}")
        processes = ProcessSet(self.redis)
        try:
            targets = list(processes) if ident is None else [processes.find(ident)]
        except LookupError as exc:
            raise NotFound(exc.args[0]) from None
        if not targets:
            raise NotFound("no live processes")
        for process in targets:
            getattr(process, action)()
        return [p.identity for p in targets]

    def quiet(self, ident: str | None = None) -> list[str]:
        return self.signal("quiet", ident)

    def stop(self, ident: str | None = None) -> list[str]:
        return self.signal("stop", ident)
