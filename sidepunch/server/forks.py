"""Keeps the forked child of a job out of Sidepunch.

Job code may call os.fork(). If the child then returns (or raises) into Sidepunch instead of ending with
os._exit, it would go on as a second, unsupervised copy of the worker thread: fetching and running jobs from its
parent's working lists, ignoring signals and outliving the daemon. Wherever control comes back from job code
(perform, middleware, hooks, death handlers), `ForkGuard.check` ends such a child at once; the parent, which
still runs the job, records it as usual.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("sidepunch.processor")


class ForkGuard:
    """Built in the worker process; `check` returns at once there (one getpid call) and exits anywhere else."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def check(self, where: str, status: int = 0) -> None:
        if os.getpid() != self.pid:
            self._leave(where, status)

    def _leave(self, where: str, status: int) -> None:
        try:
            log.error("process %d, forked by a job, came back into Sidepunch from %s; it exits now (a job's "
                      "child must end with os._exit)", os.getpid(), where)
            for handler in logging.getLogger().handlers:
                handler.flush()
        finally:
            os._exit(status)
