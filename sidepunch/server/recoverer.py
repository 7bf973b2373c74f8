"""Recoverer: the master's Redis work, done in a process of its own so that the master's loop does no network I/O.

Duties: put a reaped worker's jobs back (recovery.recover_identity) and sweep the working lists of processes
whose heartbeat expired (recovery.OrphanSweeper), retrying a worker's recovery through outages with backoff.
The master hands it tasks as JSON lines on a pipe and never waits for it, so a hung or SIGSTOPped Redis
delays recovery, never reaping, murdering, the watchdog ping or signal handling.

Why a process and not a thread: the master forks workers, and a fork copies a thread's held locks (module
import locks, stream locks) into a child where no thread will ever release them (CPython gh-84579); a worker
then hangs at boot. The master stays single-threaded; this process never forks.

The master keeps both ends of the task pipe, so tasks a crashed recoverer had not read survive it for the
next one. At stop the master closes its write end; the recoverer finishes what is queued and exits at end of
file, within --grace, or is killed and leaves the rest to the next sweep. The spawner (spawner.py) forks it as
the master's child; the master's side of it (Reaped, RecovererProcess) is in recoverer_keeper.py, which imports
no redis-py. Imports nothing of the workers.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any, Callable, Iterator, NoReturn

import setproctitle

from ..core import keys
from ..core.connection import OUTAGE_ERRORS, Outage, make_client
from ..core.exitcodes import ExitCode
from .children import unblock_after_fork
from .recoverer_keeper import Reaped
from .recovery import OrphanSweeper, Recovered, RecoveryPolicy, recover_identity


def run_recoverer(config: Any, read_fd: int) -> NoReturn:
    """The recoverer process's whole life, once forked (by the spawner, spawner.py): it never returns."""
    code = ExitCode.CRASH
    try:
        policy = RecoveryPolicy(config.max_interruptions, config.dead_max_jobs, config.dead_timeout)
        code = Recoverer(config.redis_url, policy, tuple(q.name for q in config.queues), config.threads).run(read_fd)
    except BaseException:
        log.exception("the recoverer crashed")
    finally:
        logging.shutdown()
        os._exit(code)

log = logging.getLogger("sidepunch.recoverer")
TITLE = "sidepunchd recoverer"


class Recoverer:
    """Recoverer side: reads tasks until end of file and does each with its own Redis client."""

    def __init__(self, url: str, policy: RecoveryPolicy, queue_names: tuple[str, ...], threads: int) -> None:
        self._url = url
        self._policy = policy
        self._queue_names = queue_names
        self._threads = threads

    def run(self, read_fd: int) -> int:
        setproctitle.setproctitle(TITLE)
        # Signals are the master's to handle; this process ends when the master closes the pipe (or dies).
        for name in ("SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGTSTP", "SIGHUP", "SIGTTIN"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # and CONT is SIG_DFL's to do
        signal.signal(signal.SIGCONT, signal.SIG_DFL)
        unblock_after_fork()  # the master blocked its signals across fork() (children.py)
        self._redis = make_client(self._url, max_connections=2)
        self._outage = Outage(self._url, log)
        self._sweeper = OrphanSweeper(self._redis, self._policy)
        for task in _lines(read_fd):
            self._do(task)
        return ExitCode.OK

    def _do(self, line: bytes) -> None:
        try:
            task = json.loads(line)
            if "sweep" in task:
                self._attempt(lambda: self._sweeper.sweep(exclude=frozenset(task["sweep"])), retry=False)
                return
            reaped = Reaped(**task["recover"])
        except Exception as exc:  # our own pipe, but one bad task must not stop the others
            log.error("recovery task %.200r failed (%s: %s)", line, type(exc).__name__, exc)
            return
        found = self._attempt(lambda: recover_identity(self._redis, reaped.identity, self._queue_names,
                                                       self._threads, self._policy, reaped.interrupted,
                                                       reaped.reason), retry=True)
        _report(reaped, found)

    def _attempt(self, work: Callable[[], Recovered], retry: bool) -> Recovered | None:
        """Run `work`; through an outage, again with backoff if `retry` (until it lands, or the master's grace
        at stop runs out and it kills this process)."""
        while True:
            try:
                result = work()
                self._outage.ok()
                return result
            except OUTAGE_ERRORS as exc:
                pause = self._outage.failed(exc)
            except Exception as exc:  # one job's or key's data: a later sweep tries again
                log.error("a recovery step failed (%s: %s)", type(exc).__name__, exc)
                return None
            if not retry:
                return None
            time.sleep(pause)


def _lines(fd: int) -> Iterator[bytes]:
    buffer = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return
        *lines, buffer = (buffer + chunk).split(b"\n")
        yield from lines


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
