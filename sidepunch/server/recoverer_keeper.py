"""RecovererKeeper: the master's upkeep of its recoverer process over time (recoverer.py is the process itself).

Duties: start the recoverer (and again, a second after it died), ask for an orphan sweep every 10-20 s, hand it
each reaped worker, and at stop let it finish what is queued within --grace, then kill it. Every call returns at
once but `finish`, which waits at most --grace: the master's loop does no Redis I/O. Must not import the
worker's code (launcher, pool).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import time
from typing import Callable

from .children import kill
from .recoverer import Reaped, RecovererProcess

log = logging.getLogger("sidepunch.master")

SWEEP_EVERY = (10.0, 20.0)
RESPAWN_AFTER = 1.0


def _how(status: int) -> str:
    """A waitpid status in words: "status N" or "signal NAME"."""
    code = os.waitstatus_to_exitcode(status)
    return f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"


class RecovererKeeper:
    def __init__(self, process: RecovererProcess, fork: Callable[[], int]) -> None:
        self._process = process
        self._fork = fork
        self._not_before = 0.0
        self._next_sweep = time.monotonic() + random.uniform(*SWEEP_EVERY)

    @property
    def fds(self) -> tuple[int, int]:
        """What a worker forked by the master must close."""
        return self._process.fds

    def owns(self, pid: int) -> bool:
        return pid == self._process.pid

    def recover(self, reaped: Reaped) -> None:
        self._process.recover(reaped)

    def tick(self, live: set[str], inherited: tuple[int, ...]) -> None:
        """Hand over queued tasks; restart a dead recoverer (it closes `inherited`); sweep when due, sparing the
        working lists of the `live` worker identities."""
        process = self._process
        process.flush()
        if process.pid is None and time.monotonic() >= self._not_before:
            process.spawn(self._fork, inherited)
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + random.uniform(*SWEEP_EVERY)
        process.sweep(exclude=live)

    def exited(self, status: int, stopping: bool) -> None:
        self._process.pid = None
        if not stopping:
            log.error("the recoverer process exited (%s); starting another", _how(status))
            self._not_before = time.monotonic() + RESPAWN_AFTER

    def finish(self, grace: float) -> None:
        """Let the recoverer do what is queued (the last workers' jobs) within `grace`, then kill it."""
        pid = self._process.pid
        if pid is None:
            return
        self._process.finish()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.05)
        log.error("the recoverer did not finish within --grace; the orphan sweep will put back what is left")
        kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
