"""Poller: moves due jobs from `retry` and `schedule` to their queues.

Each move is one Lua call (lua/schedule.lua) that writes only if the member is still in its set and removes it
after the write, so a job is neither dropped nor doubled when a process dies mid-move or two pollers race.
The new payload is built here in Python, as Sidekiq's Client.push would build it (retry and queue first, a
fresh enqueued_at), keeping unknown keys.

Members are hostile input, and each is dealt with on its own: one that cannot be enqueued (unreadable, a
`queue` field that names no fetchable queue, a queue key of another type, anything else about its data) goes
to the dead set in the same Lua call, byte for byte, with its reason in keys.DEAD_REASONS, and the poll goes
on. A member Redis refuses to move or kill stays where it is and is not read again in that poll, so a poll
always ends. The poller also starts and stops the periodic scheduler (periodic.py), which runs in a thread
of its own because it looks every second. The wait between polls is random around an average that grows with the number of live processes.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import redis

from ..core import keys, scripts
from ..core.connection import OUTAGE_ERRORS
from ..core.jobsets import requeue_payload  # noqa: F401  (re-exported)
from ..core.payload import PayloadError, decode, encode
from .retry import DeadSet
from .state import ChildContext

log = logging.getLogger("sidepunch.scheduler")

SETS = (keys.RETRY, keys.SCHEDULE)
BATCH = 100
PER_PROCESS_INTERVAL = 5.0


def prepare(member: bytes, now: float) -> tuple[bytes, str]:
    """(payload to enqueue, queue name) for a due member; PayloadError says why it cannot be enqueued."""
    job = decode(member)
    queue = job.get("queue", "default")  # a job without one goes where Client.push would send it
    problem = keys.queue_name_problem(queue)
    if problem:
        raise PayloadError(f"its queue name {problem}")
    return encode(requeue_payload(job, now)), queue


class Poller:
    """Duties: poll at random intervals, move each due member on its own, say once what keeps failing."""

    def __init__(self, ctx: ChildContext, dead: DeadSet, rng: random.Random | None = None,
                 periodic: Any = None) -> None:
        self.ctx = ctx
        self.periodic = periodic  # the PeriodicScheduler (periodic.py), started and stopped with this poller
        self._dead = dead
        self._rng = rng or random.Random()
        self._move = scripts.load(ctx.redis, "schedule", uses=("dead",))
        self._stop = threading.Event()
        self._average: float | None = ctx.config.poll_interval or None
        self._thread: threading.Thread | None = None
        self._complaints: dict[str, str] = {}  # zset -> the cause last logged, so a lasting trouble logs once

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._thread.start()
        if self.periodic is not None:
            self.periodic.start()

    def stop(self) -> None:
        self._stop.set()
        if self.periodic is not None:
            self.periodic.stop()

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
        """Move every due job of `retry` and `schedule`; returns how many went to their queues."""
        moved = 0
        for zset in SETS:
            try:
                moved += self._enqueue_from(zset, now)
            except OUTAGE_ERRORS:
                raise
            except redis.RedisError as exc:  # e.g. the key is not a sorted set: the other set still moves
                self._complain(zset, str(exc), f"cannot read {zset} ({exc}); its due jobs wait")
        return moved

    def _enqueue_from(self, zset: str, now: float | None) -> int:
        moved = skipped = 0
        refused: Exception | None = None
        while not self._stop.is_set():
            current = time.time() if now is None else now
            # Members Redis refused to move stay in the set; reading past them is what ends the poll.
            due = self.ctx.redis.zrangebyscore(zset, "-inf", current, start=skipped, num=BATCH)
            for member in due:
                try:
                    moved += self._move_one(zset, member, current)
                except OUTAGE_ERRORS:
                    raise
                except redis.RedisError as exc:  # e.g. `dead` is not a sorted set: this member waits
                    skipped, refused = skipped + 1, exc
            if len(due) < BATCH:
                break
        if refused is None:
            self._complaints.pop(zset, None)
        else:
            self._complain(zset, str(refused), f"{skipped} due job(s) in {zset} could not be moved ({refused}); "
                                               "they stay there")
        return moved

    def _complain(self, zset: str, cause: str, text: str) -> None:
        """Log a trouble with `zset` once, not on every poll while it lasts."""
        if self._complaints.get(zset) != cause:
            self._complaints[zset] = cause
            log.error("%s", text)

    def _move_one(self, zset: str, member: bytes, now: float) -> int:
        """1 if the member went to its queue; 0 if it went to the dead set or another poller took it."""
        try:
            payload, queue = prepare(member, now)
            reason = ""
        except Exception as problem:  # anything about this member's data is this member's fate alone
            payload, queue = b"", ""
            reason = f"it could not be enqueued from {zset}: {problem}"
        status = self._move(keys=[zset, keys.queue(queue) if queue else zset, keys.QUEUES, keys.DEAD,
                                  keys.DEAD_REASONS],
                            args=[member, payload, queue, now, now - self._dead.timeout, self._dead.max_jobs, reason])
        if status == 3:
            reason = f"it could not be enqueued from {zset}: its queue key {keys.queue(queue)} is not a list"
        if status in (2, 3):
            log.error("job moved to the dead set, its bytes untouched: %s: %.200r", reason, member)
        return int(status == 1)

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
