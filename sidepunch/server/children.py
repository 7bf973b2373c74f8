"""The master's side of its children: what it records of each worker, and fork() with its signals blocked.

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
from dataclasses import dataclass, field

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
