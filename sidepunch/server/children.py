"""The master's side of its children: what it records of each worker and hears on its status pipe, and fork()
with the master's signals blocked; and the master's checks over its records (murder, healthy, status_line).

Between fork() and the moment a new process has installed its own handlers, it still runs the master's: a TERM
sent to a just-forked worker would be queued into the master's copied state, never read, and lost (the worker
would then run on, deaf to that stop). So `fork` blocks the master's signals across fork(); the parent restores
its mask at once, and the child calls `unblock_after_fork` only once its own handlers are in place, when a
signal that arrived meanwhile is delivered to them. Must not import the worker's code (launcher, pool).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

log = logging.getLogger("sidepunch.master")

ABORT_GRACE = 5.0        # after SIGABRT (stack dump), SIGKILL

#: The signals the master handles, and so those blocked across fork().
MASTER_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGTSTP", "SIGCONT", "SIGHUP", "SIGTTIN", "SIGCHLD"))


@dataclass
class ChildRecord:
    number: int
    nonce: str
    generation: int
    started: float
    status_fd: int
    identity: str                   # hostname:pid:nonce, as the worker names itself in Redis
    ready: bool = False
    last_beat: float = 0.0          # monotonic; 0 until the first beat
    busy: int = 0
    processed: int = 0
    kill_at: float | None = None    # set once the child was told to stop
    reason: str = ""                # why it is being retired, for the log
    buffer: bytes = field(default=b"", repr=False)
    #: With --metrics-port, where "tally <json>" lines go (observe/feed.py's Observer.heard).
    on_tally: Callable[[str], None] | None = field(default=None, repr=False)

    def hear(self, data: bytes, now: float) -> list[str]:
        """Take in what the worker wrote ("ready", "beat <busy> <processed>", "retire <reason>", "tally <json>"
        lines); returns the reasons of the retirements it asked for."""
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        retire = []
        for line in lines:
            words = line.decode(errors="replace").split(" ", 1)
            if words[0] == "ready":
                self.ready, self.last_beat = True, now
            elif words[0] == "beat":
                busy, processed = (words[1].split() + ["0", "0"])[:2]
                self.busy, self.processed, self.last_beat = int(busy), int(processed), now
            elif words[0] == "retire":
                retire.append(words[1])
            elif words[0] == "tally" and self.on_tally is not None and len(words) == 2:
                self.on_tally(words[1])
        return retire


#: Longest pause before restarting a process that keeps crashing (a worker slot, the spawner).
MAX_BACKOFF = 10.0


def restart_delay(crashes: int) -> float:
    """Seconds to wait before restarting a process after its `crashes`-th crash in a row: 0.1 s doubling per
    crash up to MAX_BACKOFF, none before the first."""
    return min(0.1 * 2 ** (crashes - 1), MAX_BACKOFF) if crashes > 0 else 0.0


def drain(record: ChildRecord) -> None:
    """Hear what a reaped worker left in its status pipe (its last tally lines; a SIGKILL does not lose them)."""
    os.set_blocking(record.status_fd, False)  # it may be the blocking eventfd of `silence` by now
    while True:
        try:
            data = os.read(record.status_fd, 65536)
        except OSError:
            return
        if not data:
            return
        record.hear(data, time.monotonic())


def over_memory(children: dict[int, ChildRecord], limit_mb: int) -> list[tuple[int, ChildRecord, float]]:
    """(pid, record, RSS in MB) of the workers not being stopped whose RSS is over `limit_mb` (0: no limit)."""
    if not limit_mb:
        return []
    over = []
    for pid, record in list(children.items()):
        if record.kill_at is not None:
            continue
        try:
            rss = psutil.Process(pid).memory_info().rss / 2 ** 20
        except psutil.Error:
            continue
        if rss > limit_mb:
            over.append((pid, record, rss))
    return over


def murder(children: dict[int, ChildRecord], worker_timeout: float, now: float) -> None:
    """SIGKILL workers past their stop deadline; SIGABRT (then SIGKILL) workers that stopped beating."""
    for pid, record in list(children.items()):
        if record.kill_at is not None and now >= record.kill_at:
            log.warning("worker %d (pid %d) did not stop in time; sending SIGKILL", record.number, pid)
            kill(pid, signal.SIGKILL)
            record.kill_at = now + 3600  # reap will collect it
        elif record.kill_at is None and now - max(record.last_beat, record.started) > worker_timeout:
            log.error("worker %d (pid %d) sent no heartbeat for %.0fs (stuck, e.g. in C code); sending "
                      "SIGABRT for a stack dump, then SIGKILL", record.number, pid, worker_timeout)
            record.reason = "stuck: no heartbeat"
            record.kill_at = now + ABORT_GRACE
            kill(pid, signal.SIGABRT)


def healthy(children: dict[int, ChildRecord], now: float, worker_timeout: float) -> bool:
    """The watchdog is fed only while every worker that should be beating does."""
    return all(now - max(r.last_beat, r.started) <= worker_timeout for r in children.values() if r.kill_at is None)


def status_line(children: dict[int, ChildRecord], threads: int, quiet: bool) -> str:
    """The STATUS= line for systemd."""
    live = [r for r in children.values() if r.kill_at is None]
    busy = sum(r.busy for r in live)
    processed = sum(r.processed for r in live)
    return (f"STATUS={len(live)} workers{' quiet' if quiet else ''}, {busy} of {len(live) * threads} threads "
            f"busy, {processed} jobs processed by the current workers")


def kill(pid: int, signum: int) -> None:
    """os.kill, for a child that may have exited already (it is then reaped on the next tick)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def exits_soon(pid: int) -> bool:
    """Whether child `pid` has exited, or does within 0.2 s (an exiting process closes its descriptors a moment
    before it can be waited for). It is left to be reaped."""
    for _ in range(20):
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.01)
    return False


def silence(fd: int) -> None:
    """A status pipe at end of file reads as EOF on every select (a busy loop) until its worker is reaped: an
    eventfd that is never written takes its number, and reap closes that."""
    quiet = os.eventfd(0)
    os.dup2(quiet, fd, inheritable=False)
    os.close(quiet)


def fork() -> int:
    """os.fork() with the master's signals blocked in the child (see above); the parent's mask is restored.
    The master is single-threaded (see recoverer.py), so the child inherits no held lock."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pid


def unblock_after_fork() -> None:
    """In a forked child, once its own handlers are installed: deliver what arrived since the fork."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
