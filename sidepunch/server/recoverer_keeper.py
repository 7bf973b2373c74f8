"""The master's side of its recoverer process (recoverer.py is the process itself): the task pipe
(RecovererProcess) and its upkeep over time (RecovererKeeper).

Duties: have the recoverer started (by the spawner, spawner.py; again, a second after it died), ask for an orphan
sweep every 10-20 s, hand it each reaped worker, and at stop let it finish what is queued within --grace, then
kill it. Every call returns at once but `finish`, which waits at most --grace: the master's loop does no Redis
I/O. Must not import redis-py, the recoverer process's code (recoverer.py) or the worker's (launcher, pool).
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .children import kill

log = logging.getLogger("sidepunch.master")

SWEEP_EVERY = (10.0, 20.0)
RESPAWN_AFTER = 1.0


@dataclass(frozen=True)
class Reaped:
    """A worker that exited: whose jobs to put back, and whether they count as interrupted."""
    number: int
    pid: int
    identity: str
    interrupted: bool
    reason: str


class RecovererProcess:
    """Master side: the pipe, the pid, a backlog for when the pipe is full. No call here blocks. The master
    keeps both ends of the pipe (made before the spawner is forked, which inherits the read end)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._backlog = b""
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)

    @property
    def fds(self) -> tuple[int, int]:
        """What a worker forked by the master must close."""
        return self.read_fd, self.write_fd

    def recover(self, reaped: Reaped) -> None:
        self._send({"recover": asdict(reaped)})

    def sweep(self, exclude: set[str]) -> None:
        """Ask for a sweep, unless the recoverer is behind (the pipe is full): it will sweep again later."""
        if self._backlog:
            return
        self._send({"sweep": sorted(exclude)})

    def _send(self, task: dict[str, Any]) -> None:
        self._backlog += json.dumps(task).encode() + b"\n"
        self.flush()

    def flush(self) -> None:
        """Write what the pipe takes now; the rest waits for the next tick."""
        while self._backlog and self.write_fd >= 0:
            try:
                sent = os.write(self.write_fd, self._backlog)
            except BlockingIOError:
                return
            self._backlog = self._backlog[sent:]

    def finish(self) -> None:
        """No more tasks: the recoverer exits once it has done the queued ones."""
        self.flush()
        if self._backlog:
            log.error("%d recovery task(s) could not be handed over; the orphan sweep will do them",
                      self._backlog.count(b"\n"))
        os.close(self.write_fd)
        self.write_fd = -1


def _how(status: int) -> str:
    """A waitpid status in words: "status N" or "signal NAME"."""
    code = os.waitstatus_to_exitcode(status)
    return f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"


class RecovererKeeper:
    """`request()` asks the spawner for a recoverer (False if it cannot now); its pid comes to `started`."""

    def __init__(self, process: RecovererProcess, request: Callable[[], bool]) -> None:
        self._process = process
        self._request = request
        self._asked = False
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

    def started(self, pid: int) -> None:
        self._process.pid = pid
        self._asked = False

    def lost(self) -> None:
        """The spawner died before it answered, or could not fork: ask again in a second."""
        self._asked = False
        self._not_before = time.monotonic() + RESPAWN_AFTER

    def tick(self, live: set[str]) -> None:
        """Hand over queued tasks; have a dead recoverer restarted; sweep when due, sparing the working lists of
        the `live` worker identities."""
        process = self._process
        process.flush()
        if process.pid is None and not self._asked and time.monotonic() >= self._not_before:
            self._asked = self._request()
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
        self._process.finish()
        if pid is None:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.05)
        log.error("the recoverer did not finish within --grace; the orphan sweep will put back what is left")
        kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
