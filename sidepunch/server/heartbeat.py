"""Heartbeat: every ~5 s, write the process record Sidekiq's tools read and flush the job counters.

Per beat (SIDEKIQ_WIRE.md section 9): the per-class metrics tallied since the last beat into the current slot
of each metrics rollup (keys.py: counts and an execution-time histogram, with expiry; a job is counted in the
slot of the beat that flushes it), in a MULTI just before the counters'; counters to stat:* and the UTC day keys;
the workers hash rebuilt; the process hash (info, busy, beat, quiet, rss, rtt_us, and our
sidepunch_processed / sidepunch_failed) with TTL 60; our own short-lived liveness key for
orphan recovery; and at most one remote signal popped from <identity>-signals, which is handed to the
caller's `on_signal` (the child passes it to the master, since the daemon stops and quiets as one).
The identity it writes under is built by core/identity.py. Imports core and server modules only (never api,
admin or the client).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import psutil
import redis

from ..core import keys
from ..core.connection import OUTAGE_ERRORS
from .state import ChildContext
from .stats import Tallies

log = logging.getLogger("sidepunch.heartbeat")

BEAT_INTERVAL = 5.0
TICK = 1.0
PROCESS_TTL = 60
ALIVE_TTL = 20  # orphan recovery treats a working list as abandoned once this expires
DAY_TTL = 157_680_000


def rss_kb() -> int:
    try:
        return psutil.Process().memory_info().rss // 1024
    except psutil.Error:
        return 0


def add_counts(pipe: "redis.client.Pipeline", processed: int, failed: int, events: dict[str, int] | None = None
               ) -> None:
    """INCRBY the totals and today's UTC keys (even by 0, as Sidekiq does), renewing the day keys' TTL; and the
    all-time counts of the other endings (cancelled, expired, rate limited: keys.STAT_EVENTS) there are."""
    for kind, n in (events or {}).items():
        if n:
            pipe.incrby(keys.STAT_EVENTS[kind], n)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for stat, n in ((keys.STAT_PROCESSED, processed), (keys.STAT_FAILED, failed)):
        pipe.incrby(stat, n)
        pipe.incrby(keys.daily_stat(stat, day), n)
        pipe.expire(keys.daily_stat(stat, day), DAY_TTL)


def add_metrics(pipe: "redis.client.Pipeline", tallies: Tallies, now: float) -> None:
    """HINCRBY each class's runs, failures, total ms and histogram into the slot holding `now` of every metrics
    rollup, and renew those keys' expiry."""
    if not tallies:
        return
    for step, ttl in keys.METRICS_STEPS.items():
        slot = keys.metrics_slot(now, step)
        counts_key = keys.metrics_jobs(step, slot)
        for klass, (runs, failed, seconds, hist) in tallies.items():
            name = klass.encode("utf-8", "backslashreplace")  # a str redis-py can always send
            pipe.hincrby(counts_key, name + b"|p", runs)
            if failed:
                pipe.hincrby(counts_key, name + b"|f", failed)
            pipe.hincrby(counts_key, name + b"|ms", round(seconds * 1000))
            hist_key = keys.metrics_histogram(step, slot, name)
            for bucket, n in enumerate(hist):
                if n:
                    pipe.hincrby(hist_key, str(bucket), n)
            pipe.expire(hist_key, ttl)
        pipe.expire(counts_key, ttl)


class Heartbeat:
    def __init__(self, ctx: ChildContext, info: dict, on_signal: Callable[[str], None],
                 on_beat: Callable[[], None] = lambda: None, on_tick: Callable[[], None] = lambda: None) -> None:
        self.ctx = ctx
        self.info = json.dumps(info, separators=(",", ":"))
        self._on_signal = on_signal
        self._on_beat = on_beat
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: str | None = None  # the last refusal logged, so a lasting one is logged once
        self._metrics_refused: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Every second tell the master this process is alive (a pipe write); every fifth, beat in Redis.
        ticks = 0
        while not self._stop.wait(TICK):
            ticks += 1
            try:
                self._on_tick()
                if ticks % round(BEAT_INTERVAL / TICK) == 0:
                    self.beat()
            except Exception:  # this thread is the process's pulse: it must outlive any one failure
                log.exception("heartbeat failed; trying again at the next beat")

    def beat(self) -> bool:
        """One beat; returns False if Redis is unreachable or refused it. The counts are given back only if they
        did not land: once their MULTI ran, a failure of the rest of the beat must not count them twice."""
        self._on_beat()
        counters = self.ctx.counters
        counts = counters.take()
        try:
            self._flush_metrics()
            running = self._write_counts(counts)
        except redis.RedisError as exc:
            counters.give_back(*counts)
            return self._failed(exc)
        try:
            self._register(running)
        except redis.RedisError as exc:
            return self._failed(exc)
        self._refused = None
        self.ctx.outage.ok()
        return True

    def _failed(self, exc: redis.RedisError) -> bool:
        if isinstance(exc, OUTAGE_ERRORS):
            self.ctx.outage.failed(exc)
        elif str(exc) != self._refused:  # not an outage: a key of ours holds another type, say; logged once
            self._refused = str(exc)
            log.error("heartbeat write refused by Redis: %s", exc)
        return False

    def _flush_metrics(self) -> None:
        """The per-class tallies in one MULTI of their own, before the counters': if it fails as a whole the
        tallies are given back (and the error raised, so the counters wait too); if Redis refused only some of
        its commands (a metrics key of another type), the rest were applied, so nothing is given back (that
        would count them twice) and the refusal is logged once."""
        tallies = self.ctx.counters.take_tallies()
        if not tallies:
            return
        pipe = self.ctx.redis.pipeline(transaction=True)
        add_metrics(pipe, tallies, time.time())
        try:
            replies = pipe.execute(raise_on_error=False)
        except BaseException:
            self.ctx.counters.give_back_tallies(tallies)
            raise
        refused = next((str(x) for x in replies if isinstance(x, Exception)), None)
        if refused is not None and refused != self._metrics_refused:
            log.error("metrics write partly refused by Redis (those counts are dropped): %s", refused)
        self._metrics_refused = refused

    def _write_counts(self, counts: tuple[int, int, dict[str, int]]) -> int:
        """The counters and the workers hash in one MULTI; returns how many jobs run (the process's `busy`)."""
        r, identity = self.ctx.redis, self.ctx.identity
        pipe = r.pipeline(transaction=True)
        add_counts(pipe, *counts)
        workers_key = keys.workers(identity)
        pipe.unlink(workers_key)
        running = self.ctx.work.snapshot()
        if running:
            pipe.hset(workers_key, mapping={
                tid: json.dumps({"queue": w.queue, "payload": w.payload.decode("utf-8", "replace"),
                                 "run_at": w.run_at}, separators=(",", ":"))
                for tid, w in running.items()})
            pipe.expire(workers_key, PROCESS_TTL)
        pipe.execute()
        return len(running)

    def _register(self, busy: int) -> None:
        """The process record Sidekiq's tools read, liveness, and one remote signal, if any."""
        r, identity = self.ctx.redis, self.ctx.identity
        started = time.perf_counter()
        r.ping()
        rtt_us = int((time.perf_counter() - started) * 1e6)
        pipe = r.pipeline(transaction=True)
        pipe.sadd(keys.PROCESSES, identity)
        pipe.hset(keys.process(identity), mapping={"info": self.info, "busy": busy, "beat": time.time(),
                                     "quiet": "true" if self.ctx.state.quiet else "false",
                                     "rss": rss_kb(), "rtt_us": rtt_us,
                                     keys.PROCESS_PROCESSED: self.ctx.counters.total_processed,
                                     keys.PROCESS_FAILED: self.ctx.counters.total_failed,
                                     keys.PROCESS_FETCH: getattr(self.ctx.config, "fetch", "unknown")})
        pipe.expire(keys.process(identity), PROCESS_TTL)
        pipe.set(keys.alive(identity), 1, ex=ALIVE_TTL)
        pipe.rpop(keys.signals(identity))
        signal_name = pipe.execute()[-1]
        if signal_name:
            # hostile bytes must not fail the beat (a worker's first beat, at boot, is not guarded)
            self._on_signal(signal_name.decode("utf-8", "replace"))

    def stop(self) -> None:
        """Stop beating, flush the last counts and deregister (the process hash is left to expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        r, identity = self.ctx.redis, self.ctx.identity
        try:
            self._flush_metrics()
        except redis.RedisError as exc:
            log.error("could not write the last metrics of %s at exit (%s)", identity, exc)
        processed, failed, events = self.ctx.counters.take()
        try:
            pipe = r.pipeline(transaction=True)
            add_counts(pipe, processed, failed, events)
            pipe.srem(keys.PROCESSES, identity)
            pipe.unlink(keys.workers(identity), keys.alive(identity))
            pipe.execute()
        except redis.RedisError as exc:  # an outage or a refusal: exiting must not fail on it
            log.error("could not deregister %s at exit (%s); %d processed / %d failed not counted",
                      identity, exc, processed, failed)
