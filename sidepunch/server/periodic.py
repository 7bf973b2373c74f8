"""The periodic scheduler: enqueues each tick of each periodic entry exactly once across every daemon.

Every worker process of every daemon runs one, in its own thread (started and stopped with the Poller). About
once a second it looks at the ticks that fell since its last look, and claims each with SET NX EX on a key that
names the entry, its schedule's fingerprint and the tick (keys.periodic_claim): the first process to claim a
tick enqueues it, through a Client's normal push (validation, middleware, write seam), with `periodic_name` and
`periodic_tick` in the payload, and records it in keys.PERIODIC_LAST. No process is special, so a dead one costs
nothing. The claim is the tick, not the time of the look, so clocks a few seconds apart (up to LOOKBACK) change
nothing: every look also covers the last LOOKBACK seconds, and a tick already claimed is left alone.

At start, ticks no daemon was up for (after the entry's last enqueue, older than LOOKBACK) follow the entry's
`missed` policy: "skip" none, "latest" the latest within `grace` seconds, "all" every one within `grace`.
Entries come from the config's `[[periodic]]` tables and from `@sidepunch.periodic` on job classes of the --require
packages; an
entry whose job cannot be found, or whose name is taken, is logged once and not scheduled. Each process also
registers its entries (keys.PERIODIC_ENTRIES, with a lapse time in keys.PERIODIC_SEEN) for the admin API, and
honours keys.PERIODIC_DISABLED.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import redis

from ..client.job import Job
from ..client.periodic import declared
from ..client.push import Client, default_client
from ..core import keys
from ..core.connection import OUTAGE_ERRORS
from ..core.periodic import PeriodicEntry
from .state import ChildContext

log = logging.getLogger("sidepunch.periodic")

#: Seconds every look reaches back (the clock skew between hosts this tolerates).
LOOKBACK = 10
#: Seconds a registration lives unless renewed; renewed every REGISTER_EVERY.
REGISTRATION_TTL = 60
REGISTER_EVERY = 10.0
#: Ticks one entry may enqueue in one look: a `missed="all"` catch-up enqueues at most the first this many.
MAX_PER_LOOK = 1000


@dataclass
class Scheduled:
    """An entry this process schedules: its job class and how far it has looked."""
    entry: PeriodicEntry
    job: type[Job]
    cursor: float | None = None  # ticks up to here are dealt with; None before the first look


def check_entries(configured: tuple[PeriodicEntry, ...], resolve: Callable[[str], type[Job]],
                  found: list[tuple[PeriodicEntry, type[Job]]]) -> None:
    """At a worker's boot, once the app is imported: ValueError (one line naming the entry) for a `[[periodic]]`
    entry whose job cannot be found, or a name both the file and the code (or the code twice) declare. The
    worker then exits with the usage status and the master stops the daemon with it (exit 2)."""
    names = {entry.name for entry in configured}
    for entry in configured:
        try:
            resolve(entry.job)
        except Exception as exc:
            raise ValueError(f"[[periodic]] entry {entry.name!r}: its job {entry.job!r} cannot be found "
                             f"({exc})") from None
    for entry, job in found:
        if entry.name in names:
            raise ValueError(f"periodic entry {entry.name!r} is declared twice (the second by {job.__module__}."
                             f"{job.__qualname__}); give each a name of its own")
        names.add(entry.name)


def load_entries(configured: tuple[PeriodicEntry, ...], resolve: Callable[[str], type[Job]],
                 found: list[tuple[PeriodicEntry, type[Job]]]) -> list[Scheduled]:
    """The config's entries (their jobs resolved) then the declared ones; a bad one is logged and left out."""
    chosen: dict[str, Scheduled] = {}
    for entry in configured:
        try:
            chosen[entry.name] = Scheduled(entry, resolve(entry.job))
        except Exception as exc:
            log.error("periodic entry %r is not scheduled: its job %r cannot be found (%s)", entry.name,
                      entry.job, exc)
    for entry, job in found:
        if entry.name in chosen:
            log.error("periodic entry %r is declared twice (%s and %s); the first one is scheduled", entry.name,
                      chosen[entry.name].entry.job, entry.job)
        else:
            chosen[entry.name] = Scheduled(entry, job)
    return list(chosen.values())


class PeriodicScheduler:
    """Duties: claim and enqueue due ticks, catch up missed ones by policy, register entries, say troubles once."""

    def __init__(self, ctx: ChildContext, clock: Callable[[], float] = time.time,
                 client: Client | None = None, entries: list[Scheduled] | None = None) -> None:
        """`entries`: what to schedule; by default the config's and the imported app's, loaded on first use."""
        self.ctx = ctx
        self.clock = clock
        self._client = client
        self._entries = entries
        self._registered = 0.0
        self._stop = threading.Event()
        self._complaints: dict[str, str] = {}

    @property
    def entries(self) -> list[Scheduled]:
        """Loaded on first use, so after the app (and its @periodic declarations) is imported."""
        if self._entries is None:
            config = self.ctx.config
            self._entries = load_entries(getattr(config, "periodic", ()), self.ctx.resolver.resolve,
                                         declared(getattr(config, "require", ())))
        return self._entries

    @property
    def client(self) -> Client:
        if self._client is None:  # the daemon's Redis, with the middleware the app and the daemon installed
            self._client = Client(redis=self.ctx.redis, middleware=default_client().middleware)
        return self._client

    def start(self) -> None:
        if self.entries:
            threading.Thread(target=self._run, name="periodic", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.look()
                self.ctx.outage.ok()
            except OUTAGE_ERRORS as exc:
                self.ctx.outage.failed(exc)
            except Exception as exc:  # a bug: its traceback once per cause, not every second
                cause = f"{type(exc).__name__}: {exc}"
                if self._complaints.get("look") != cause:
                    self._complaints["look"] = cause
                    log.exception("periodic look failed; trying again every second")
            self._stop.wait(self._next_wait())

    def _next_wait(self) -> float:
        """Until just after the next whole second (ticks are whole seconds), at most a second."""
        now = self.clock()
        return min(1.0, max(0.01, int(now) + 1 - now + 0.005))

    def look(self) -> int:
        """Enqueue every due tick this process can claim; returns how many it enqueued."""
        now = self.clock()
        if now - self._registered >= REGISTER_EVERY:
            self.register(now)
        disabled = self._soft("read the disabled entries", lambda: self.ctx.redis.smembers(keys.PERIODIC_DISABLED),
                              set())
        enqueued = 0
        for item in self.entries:
            if item.cursor is None:
                enqueued += self._catch_up(item, now, item.entry.name.encode() in disabled)
            ticks = list(_take(item.entry.schedule.ticks(max(item.cursor or 0, now - LOOKBACK), now)))
            for tick in ticks:
                if item.entry.name.encode() not in disabled:
                    enqueued += self.claim(item, tick)
            item.cursor = ticks[-1] if len(ticks) == MAX_PER_LOOK else now
        return enqueued

    def _catch_up(self, item: Scheduled, now: float, disabled: bool) -> int:
        """At the first look: the ticks missed since the entry's last enqueue, by its policy. An entry never
        enqueued (or whose record is unreadable) has missed nothing: a new entry does not run its past."""
        entry = item.entry
        item.cursor = now - LOOKBACK
        if entry.missed == "skip" or disabled:
            return 0
        last = self._last_tick(entry.name)
        if last is None:
            return 0
        missed = list(_take(entry.schedule.ticks(max(last, now - entry.grace), now - LOOKBACK)))
        if entry.missed == "latest":
            missed = missed[-1:]
        return sum(self.claim(item, tick) for tick in missed)

    def _last_tick(self, name: str) -> float | None:
        raw = self._soft("read the last ticks", lambda: self.ctx.redis.hget(keys.PERIODIC_LAST, name), None)
        try:
            tick: Any = json.loads(raw)["tick"] if raw is not None else None
        except (ValueError, TypeError, KeyError, RecursionError):  # hostile or foreign data: as if none
            return None
        if type(tick) not in (int, float) or not math.isfinite(tick) or not 0 <= tick <= self.clock() + 86400:
            return None
        return float(tick)

    def claim(self, item: Scheduled, tick: int) -> int:
        """1 if this process claimed `tick` and enqueued it; 0 if another process had claimed it."""
        entry = item.entry
        key = keys.periodic_claim(entry.name, entry.fingerprint, tick)
        ttl = int(LOOKBACK * 2 + 60 + (entry.grace if entry.missed != "skip" else 0))
        if not self.ctx.redis.set(key, self.ctx.identity, nx=True, ex=ttl):
            return 0
        job: dict[str, Any] = {"class": item.job, "args": list(entry.args), "periodic_name": entry.name,
                               "periodic_tick": tick}
        if entry.queue:
            job["queue"] = entry.queue
        try:
            jid = self.client.push(job)
        except OUTAGE_ERRORS:
            self._release(key)
            raise
        except (TypeError, ValueError) as exc:  # the entry's data: the same at every tick, so logged once
            self._complain(entry.name, str(exc), f"periodic entry {entry.name!r} cannot be enqueued: {exc}")
            return 0
        self._complaints.pop(entry.name, None)
        record = {"tick": tick, "jid": jid, "at": self.clock(), "fingerprint": entry.fingerprint}
        self._soft("record the last ticks", lambda: self.ctx.redis.hset(keys.PERIODIC_LAST, entry.name,
                                                                       json.dumps(record)), None)
        return 1

    def _release(self, key: str) -> None:
        """Give a claim back after a failed push, so another process (or the next look) enqueues the tick."""
        try:
            self.ctx.redis.delete(key)
        except OUTAGE_ERRORS:
            pass  # it expires; the tick is lost only if Redis stays away past every process's look-back

    def register(self, now: float) -> None:
        """Tell the admin API which entries exist: each lives REGISTRATION_TTL seconds unless renewed."""
        pipe = self.ctx.redis.pipeline(transaction=False)
        for item in self.entries:
            # the job class's options ride along, so `sidepunch periodic run` pushes what a tick would
            record = dict(json.loads(item.entry.to_json()), job_options=item.job.job_options())
            pipe.hset(keys.PERIODIC_ENTRIES, item.entry.name, json.dumps(record, default=str))
            pipe.zadd(keys.PERIODIC_SEEN, {item.entry.name: now + REGISTRATION_TTL})
        self._registered = now
        self._soft("register the entries", pipe.execute, None)

    def _soft(self, what: str, call: Callable[[], Any], default: Any) -> Any:
        """`call()`, or `default` when Redis refuses it (a key of another type, say): such a key must not stop
        the schedule. Said once per cause; an outage is not refused but raised (the look ends there)."""
        try:
            value = call()
        except OUTAGE_ERRORS:
            raise
        except redis.RedisError as exc:
            cause = str(exc).rsplit("caused error: ", 1)[-1]  # a pipeline's message names the changing arguments
            self._complain(what, cause, f"periodic scheduling: cannot {what} ({cause}); going on without")
            return default
        self._complaints.pop(what, None)
        return value

    def _complain(self, name: str, cause: str, text: str) -> None:
        if self._complaints.get(name) != cause:
            self._complaints[name] = cause
            log.error("%s", text)


def _take(ticks: Any) -> Any:
    for count, tick in enumerate(ticks):
        if count >= MAX_PER_LOOK:
            return
        yield tick
