"""The master's end of its spawner process (spawner.py): starting it (again, with backoff, if it dies), its
requests and answers, and the master as child subreaper, so that what the spawner forks becomes the master's
child. Never blocks; imports no redis-py and none of the worker's code.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

from ..core import identity as identities
from ..core.exitcodes import ExitCode
from .children import ChildRecord, restart_delay
from .spawner import MESSAGE_MAX, Spawner, _send

log = logging.getLogger("sidepunch.master")

PR_SET_CHILD_SUBREAPER = 36
EARLY_KEPT = 60.0        # seconds an exit of a pid not yet heard of is kept for the spawner's late answer
STOP_WAIT = 5.0


def _freeze() -> None:
    """Keep the cyclic GC off the objects that exist now: it would otherwise write to (and so unshare) every
    page that holds them, in the master and in each process forked from it."""
    gc.collect()
    gc.freeze()


def become_subreaper() -> bool:
    """Make orphaned descendants the master's children (Linux >= 3.4); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class SpawnerLink:
    """The master's end: starts the spawner (again, with backoff, if it dies), sends requests, reads answers."""

    def __init__(self, config: Any, lifeline: tuple[int, int], recoverer_fds: tuple[int, int],
                 direct: bool = False) -> None:
        self.config = config
        self.direct = direct
        self._lifeline = lifeline
        self._recoverer_fds = recoverer_fds
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self._local: Spawner | None = None
        self.pending: dict[str, tuple[int, int]] = {}    # nonce -> (number, generation) of asked workers
        self.early: dict[int, tuple[int, float]] = {}    # pid -> (status, when) of exits not yet heard of
        self._failures = 0
        self._not_before = 0.0

    @property
    def fds(self) -> tuple[int, ...]:
        """What any other child of the master must close."""
        return (self.sock.fileno(),) if self.sock is not None else ()

    @property
    def up(self) -> bool:
        return self.sock is not None

    def owns(self, pid: int) -> bool:
        return pid == self.pid

    def keep(self, fork: Callable[[], int], inherited: Callable[[], tuple[int, ...]], stopping: bool) -> None:
        """Start the spawner if it is not running and its backoff is over (it closes `inherited()`)."""
        if self.pid is not None or self.sock is not None or stopping or time.monotonic() < self._not_before:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)  # the master never waits on it but in select
        if self.direct:
            self.sock, self._local, self.pid = ours, Spawner(self.config, theirs, self._lifeline,
                                                               self._recoverer_fds, direct=True), None
            self._local.inherited = inherited
            return
        _freeze()
        pid = fork()
        if pid == 0:
            code = ExitCode.CRASH
            try:
                signal.set_wakeup_fd(-1)
                ours.close()
                for fd in {self._lifeline[1], self._recoverer_fds[1], *inherited()} - {self._recoverer_fds[0]}:
                    os.close(fd)
                code = Spawner(self.config, theirs, self._lifeline, self._recoverer_fds).run()
            except BaseException:
                log.exception("the spawner crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        self.pid, self.sock = pid, ours

    def ask(self, **request: Any) -> bool:
        """Send one request; False if the spawner is not there to take it (ask again later)."""
        if self.sock is None:
            return False
        if request["do"] == "worker":
            self.pending[request["nonce"]] = (request["number"], request["generation"])
        sent = _send(self.sock, request)
        if not sent:
            self.pending.pop(request.get("nonce", ""), None)
        elif self._local is not None:
            self._local.serve_one()
        return sent

    def answers(self) -> list[tuple[dict[str, Any], list[int]]]:
        """What the spawner sent, without blocking; at end of file its socket is closed (it is reaped later)."""
        found = []
        while self.sock is not None:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, MESSAGE_MAX, 4)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data, fds = b"", []
            if not data:
                self.sock.close()
                self.sock = None
                break
            found.append((json.loads(data), fds))
        for message, _fds in found:
            if "worker" in (message.get("spawned"), message.get("failed")):
                self.pending.pop(message["nonce"], None)
        return found

    def exited(self, status: int, stopping: bool) -> None:
        """The spawner was reaped: what it had not answered will not be (its processes exit unstarted)."""
        self.pid = None
        self.pending.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if stopping:
            return
        self._failures += 1
        delay = restart_delay(self._failures)
        self._not_before = time.monotonic() + delay
        code = os.waitstatus_to_exitcode(status)
        how = f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        log.error("the spawner process exited (%s); starting another in %.1fs", how, delay)

    def settled(self) -> None:
        """The spawner answered: its next death starts the backoff afresh."""
        self._failures = 0

    @staticmethod
    def record(pid: int, answer: dict[str, Any], status_r: int, on_tally: Callable[[str], None] | None) -> ChildRecord:
        """The master's record of a worker the spawner forked (`answer`), whose status pipe is `status_r`."""
        os.set_blocking(status_r, False)
        nonce = str(answer["nonce"])
        return ChildRecord(int(answer["number"]), nonce, int(answer["generation"]), time.monotonic(), status_r,
                           identities.make(identities.hostname(), pid, nonce), on_tally=on_tally)

    def remember_exit(self, pid: int, status: int) -> None:
        """An exit of a pid not yet heard of: a process whose pid is still on its way, or one that never started."""
        now = time.monotonic()
        self.early = {p: (s, t) for p, (s, t) in self.early.items() if now - t < EARLY_KEPT}
        self.early[pid] = (status, now)

    def early_exit(self, pid: int, forked_at: float) -> int | None:
        """The status of `pid`'s exit if it was reaped before its pid came; an exit reaped before the fork was
        another process's of that pid number (pids wrap; the subreaper master also reaps a job's orphans)."""
        status, when = self.early.pop(pid, (None, 0.0))
        return status if status is not None and when >= forked_at else None

    def stop(self) -> None:
        """At the master's exit: close the socket (the spawner ends at end of file) and reap it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is None:
            return
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def status_end(fds: list[int]) -> int:
    """The read end of a worker's status pipe, as the spawner's answer carried it. An answer whose descriptor the
    kernel dropped (the master was out of descriptors) gets the read end of a pipe already closed at the other
    end: the master then retires that worker as one that lost its status pipe, and recovers its jobs when it
    exits, instead of failing on the missing descriptor."""
    if fds:
        return fds[0]
    read_end, write_end = os.pipe()
    os.close(write_end)
    return read_end
