"""Poller: moves due jobs from `retry` and `schedule` to their queues.

Each move is one Lua call that LPUSHes only if ZREM removed the member, so a job is neither dropped nor
doubled when a process dies mid-move or two pollers race. The new payload is built here in Python, as
Sidekiq's Client.push would build it (retry and queue first, a fresh enqueued_at), keeping unknown keys.
The wait between polls is random around an average that grows with the number of live processes.
"""
from __future__ import annotations

import logging
import random
import threading
import time

from . import keys, scripts
from .connection import OUTAGE_ERRORS
from .payload import PayloadError, decode, encode
from .retry import DeadSet
from .state import ChildContext

log = logging.getLogger("sidepunch.scheduler")

SETS = (keys.RETRY, keys.SCHEDULE)
BATCH = 100
PER_PROCESS_INTERVAL = 5.0


def requeue_payload(job: dict, now: float) -> dict:
    """The payload Client.push would write for a job read back from a sorted set."""
    out = {"retry": job.get("retry", True), "queue": job.get("queue") or "default"}
    out.update(job)
    out["enqueued_at"] = now
    return out


class Poller:
    def __init__(self, ctx: ChildContext, dead: DeadSet, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self._dead = dead
        self._rng = rng or random.Random()
        self._move = scripts.load(ctx.redis, "schedule")
        self._stop = threading.Event()
        self._average: float | None = ctx.config.poll_interval or None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = self.ctx.config.poll_interval
        # Sidekiq waits 10-15 s before the first poll unless an interval was chosen explicitly.
        initial = self._rng.random() * interval if interval else 10.0 + self._rng.random() * 5
        if self._stop.wait(initial):
            return
        while not self._stop.is_set():
            try:
                self.enqueue_due()
                self.ctx.outage.ok()
            except OUTAGE_ERRORS as exc:
                self.ctx.outage.failed(exc)
            except Exception:
                log.exception("scheduled-job poll failed; trying again at the next interval")
            self._stop.wait(self._next_wait())

    def enqueue_due(self, now: float | None = None) -> int:
        """Move every due job of `retry` and `schedule`; returns how many moved."""
        moved = 0
        r = self.ctx.redis
        for zset in SETS:
            while not self._stop.is_set():
                current = time.time() if now is None else now
                due = r.zrangebyscore(zset, "-inf", current, start=0, num=BATCH)
                if not due:
                    break
                for member in due:
                    moved += self._move_one(zset, member, current)
                if len(due) < BATCH:
                    break
        return moved

    def _move_one(self, zset: str, member: bytes, now: float) -> int:
        try:
            job = decode(member)
        except PayloadError as problem:
            log.error("unreadable job in %s (%s); moved to the dead set", zset, problem)
            pipe = self.ctx.redis.pipeline(transaction=True)
            pipe.zrem(zset, member)
            self._dead.add_into(pipe, member, now)
            pipe.execute()
            return 0
        payload = requeue_payload(job, now)
        queue = str(payload["queue"])
        return int(self._move(keys=[zset, keys.queue(queue), keys.QUEUES],
                              args=[member, encode(payload), queue]))

    def _next_wait(self) -> float:
        if self._average is None:
            try:
                count = max(self.ctx.redis.scard(keys.PROCESSES), 1)
            except OUTAGE_ERRORS:
                count = 1
            self._average = count * PER_PROCESS_INTERVAL
        avg = self._average
        processes = avg / PER_PROCESS_INTERVAL
        if self.ctx.config.poll_interval or processes < 10:
            return avg / 2 + self._rng.random() * avg
        return self._rng.random() * avg
