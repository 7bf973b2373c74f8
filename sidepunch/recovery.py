"""Putting back jobs whose process died while running them (reliable fetch's other half).

The master calls `recover_identity` when it reaps a child; `OrphanSweeper` lets any live master recover the
working lists of processes whose liveness key expired (a whole host died), under a lock so that two
masters never both requeue the same list. Each interruption increments the payload's `interrupted_count`
(the field gitlab-sidekiq-fetcher uses); a job interrupted `max_interruptions` times is a poison pill and
goes to the dead set instead of crashing the next worker.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import AbstractSet as Set, Iterable, Sequence

import redis

from . import keys, scripts
from .payload import PayloadError, decode, encode

log = logging.getLogger("sidepunch.recovery")
BATCH = 100


@dataclass(frozen=True)
class RecoveryPolicy:
    max_interruptions: int
    dead_max_jobs: int
    dead_timeout: float


@dataclass
class Recovered:
    requeued: int = 0
    killed: int = 0

    def __iadd__(self, other: "Recovered") -> "Recovered":
        self.requeued += other.requeued
        self.killed += other.killed
        return self


def _rewrite(raw: bytes, policy: RecoveryPolicy, reason: str, now: float) -> tuple[str, bytes]:
    """("queue" | "dead", new payload) for one interrupted job."""
    try:
        job = decode(raw)
    except PayloadError:
        return "queue", raw  # the processor will send it to the dead set with its bytes intact
    count = job.get("interrupted_count")
    job["interrupted_count"] = (count if type(count) is int else 0) + 1
    if job["interrupted_count"] < policy.max_interruptions:
        return "queue", encode(job)
    job["error_message"] = (f"its worker process died {job['interrupted_count']} times while running it "
                            f"(last: {reason}); moved to the dead set so it cannot crash-loop the workers")
    job["error_class"] = "sidepunch.WorkerDied"
    job.setdefault("failed_at", now)
    return "dead", encode(job)


def recover_lists(client: redis.Redis, lists: Iterable[tuple[str, str]], policy: RecoveryPolicy,
                  interrupted: bool, reason: str) -> Recovered:
    """Move every job of the given (queue, working list) pairs back to the head of its queue.

    With `interrupted`, count the interruption (and kill poison pills); a clean exit requeues unchanged.
    """
    move = scripts.load(client, "move")
    total = Recovered()
    for queue, working in lists:
        while True:
            jobs = client.lrange(working, 0, BATCH - 1)  # newest first: the oldest batch is pushed last
            if not jobs:
                break
            now = time.time()
            script_keys: list[str] = []
            args: list[object] = [now, now - policy.dead_timeout, policy.dead_max_jobs]
            # Newest first: each RPUSH lands at the head, so the oldest (right-most) job ends up next in line.
            for raw in jobs:
                mode, new = _rewrite(raw, policy, reason, now) if interrupted else ("queue", raw)
                script_keys += [working, keys.queue(queue) if mode == "queue" else keys.DEAD]
                args += [mode, raw, new]
                if mode == "queue":
                    total.requeued += 1
                else:
                    total.killed += 1
                    log.error("job %.120r was killed: its worker died %d times running it", raw,
                              policy.max_interruptions)
            move(keys=script_keys, args=args)
    return total


def working_lists(identity: str, queues: Sequence[str], threads: int) -> list[tuple[str, str]]:
    return [(q, keys.working(q, identity, t)) for q in queues for t in range(threads)]


def recover_identity(client: redis.Redis, identity: str, queues: Sequence[str], threads: int,
                     policy: RecoveryPolicy, interrupted: bool, reason: str) -> Recovered:
    """Requeue a dead process's jobs and remove it from the process registry."""
    found = recover_lists(client, working_lists(identity, queues, threads), policy, interrupted, reason)
    pipe = client.pipeline(transaction=False)
    pipe.srem(keys.PROCESSES, identity)
    pipe.unlink(keys.workers(identity), keys.alive(identity))
    pipe.execute()
    return found


class OrphanSweeper:
    """Recovers working lists whose owner's liveness key has expired; one master at a time."""

    LOCK_TTL = 30

    def __init__(self, client: redis.Redis, policy: RecoveryPolicy) -> None:
        self._redis = client
        self._policy = policy
        self._release = client.register_script(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")

    def sweep(self, exclude: Set[str] = frozenset()) -> Recovered:
        """Recover abandoned working lists; `exclude` names live processes (this master's own workers,
        whose liveness key may be missing just after a Redis restart)."""
        token = secrets.token_hex(8)
        if not self._redis.set(keys.RECOVERY_LOCK, token, nx=True, ex=self.LOCK_TTL):
            return Recovered()
        try:
            return self._sweep(exclude)
        finally:
            self._release(keys=[keys.RECOVERY_LOCK], args=[token])

    def _sweep(self, exclude: Set[str]) -> Recovered:
        by_identity: dict[str, list[tuple[str, str]]] = {}
        for key in self._redis.scan_iter(match=keys.WORKING_PATTERN, count=1000):
            parsed = keys.parse_working(key)
            if parsed:
                by_identity.setdefault(parsed[1], []).append((parsed[0], key.decode()))
        total = Recovered()
        for identity, lists in by_identity.items():
            if identity in exclude or self._redis.exists(keys.alive(identity)):
                continue
            found = recover_lists(self._redis, lists, self._policy, True, "its host stopped heartbeating")
            if found.requeued or found.killed:
                log.warning("recovered %d job(s) of %s, whose heartbeat expired (%d killed as poison pills)",
                            found.requeued + found.killed, identity, found.killed)
            total += found
        return total
