"""Recoverer: the master's Redis work, done in one thread so that the master's loop never waits on the network.

Duties: put a reaped worker's jobs back (recovery.recover_identity) and sweep the working lists of processes
whose heartbeat expired (recovery.OrphanSweeper), with its own Redis client, retrying a reaped worker's
recovery through outages with backoff. The master only hands it work, so a hung or SIGSTOPped Redis delays
recovery, never reaping, murdering, the watchdog ping or signal handling. At stop the master gives it a
bounded time to finish; whatever is left then is found by the next sweep of any daemon on the same Redis.

It logs from its own thread: Master.spawn holds every logging handler's lock across fork() so that a forked
worker never inherits a stream lock this thread was holding. Imports nothing of the worker process.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import AbstractSet as Set, Callable, Sequence

import redis

from . import keys
from .connection import OUTAGE_ERRORS, Outage, make_client
from .recovery import OrphanSweeper, Recovered, RecoveryPolicy, recover_identity

log = logging.getLogger("sidepunch.recoverer")


@dataclass(frozen=True)
class Reaped:
    """A worker that exited: whose jobs to put back, and whether they count as interrupted."""
    number: int
    pid: int
    identity: str
    interrupted: bool
    reason: str


@dataclass(frozen=True)
class Sweep:
    exclude: Set[str] = field(default_factory=frozenset)


_STOP = object()


class Recoverer:
    def __init__(self, url: str, policy: RecoveryPolicy, queue_names: Sequence[str], threads: int,
                 client_factory: Callable[[str], redis.Redis] = lambda url: make_client(url, max_connections=2)) -> None:
        self._url = url
        self._policy = policy
        self._queue_names = tuple(queue_names)
        self._threads = threads
        self._client_factory = client_factory
        self._tasks: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._sweep_queued = threading.Event()
        self._deadline: float | None = None   # monotonic; set by stop()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._redis = self._client_factory(self._url)
        self._outage = Outage(self._url, log)
        self._sweeper = OrphanSweeper(self._redis, self._policy)
        self._thread = threading.Thread(target=self._run, name="recoverer", daemon=True)
        self._thread.start()

    def recover(self, reaped: Reaped) -> None:
        self._tasks.put(reaped)

    def sweep(self, exclude: Set[str]) -> None:
        """Queue one sweep unless one is already waiting (a slow Redis must not pile them up)."""
        if not self._sweep_queued.is_set():
            self._sweep_queued.set()
            self._tasks.put(Sweep(frozenset(exclude)))

    def stop(self, timeout: float) -> bool:
        """Finish the queued recoveries within `timeout` seconds; True if everything was done."""
        if self._thread is None:
            return True
        self._deadline = time.monotonic() + timeout
        self._tasks.put(_STOP)
        self._thread.join(timeout + 1.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _STOP:
                return
            try:
                self._do(task)
            except BaseException:  # the thread's outermost frame: one task's failure must not end recovery
                log.exception("recovery task %r failed; its jobs are left for the orphan sweep", task)

    def _do(self, task: object) -> None:
        if isinstance(task, Sweep):
            self._sweep_queued.clear()
            if self._deadline is None:
                self._attempt(lambda: self._sweeper.sweep(exclude=task.exclude), retry=False)
            return
        assert isinstance(task, Reaped)
        found = self._attempt(lambda: recover_identity(self._redis, task.identity, self._queue_names,
                                                       self._threads, self._policy, task.interrupted,
                                                       task.reason), retry=True)
        self._report(task, found)

    def _attempt(self, work: Callable[[], Recovered], retry: bool) -> Recovered | None:
        """Run `work`; through an outage, again with backoff (if `retry`) until it lands or the stop deadline."""
        while True:
            try:
                result = work()
                self._outage.ok()
                return result
            except OUTAGE_ERRORS as exc:
                pause = self._outage.failed(exc)
            except redis.RedisError as exc:  # refused for a reason of its own: a later sweep tries again
                log.error("Redis refused a recovery step (%s: %s)", type(exc).__name__, exc)
                return None
            if not retry or (self._deadline is not None and time.monotonic() + pause > self._deadline):
                return None
            time.sleep(pause)

    @staticmethod
    def _report(task: Reaped, found: Recovered | None) -> None:
        who = f"worker {task.number} (pid {task.pid})"
        if found is None:
            log.error("%s: its jobs could not be put back now; the orphan sweep will recover them", who)
            return
        for key, why in found.failed:
            log.error("%s: the jobs in %s were left where they are: %s", who, keys.printable(key), why)
        dead = f", {found.killed} moved to the dead set" if found.killed else ""
        if found.requeued or found.killed or task.interrupted:
            log.info("%s: requeued %d job(s)%s", who, found.requeued, dead)
