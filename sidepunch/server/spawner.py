"""The spawner: a process forked by the master at start that holds redis-py and the worker and recoverer code, runs
the master's start-up Redis checks and forks, on the master's request, the processes that need Redis (workers,
the recoverer). The master itself then never imports redis-py (its RSS stays small), while every worker still
shares the spawner's pages copy-on-write, as it shared the master's before.

Each process is forked twice (spawner -> a middle process that exits at once -> the process), and the master is
a child subreaper (PR_SET_CHILD_SUBREAPER), so the process becomes the master's child: the master reaps it, reads
its exit status and signals it by pid exactly as if it had forked it. The spawner sends the pid (and the read
end of a worker's status pipe, by SCM_RIGHTS) to the master over a SOCK_SEQPACKET socketpair, and only then lets
the process go on ("go" pipe): a process whose pid the master never learnt (the spawner died first) exits
before doing anything, and a running process's getppid() is the master's pid.

This module is the spawner's side (`Spawner`, run in the forked process); the master's side is spawnlink.py
(`SpawnerLink`). Where the subreaper is unavailable (not Linux), `SpawnerLink(direct=True)` runs the same Spawner
inside the master, which then forks each process itself, as it did before (and imports redis-py).
Also `check_url_apart`: the daemon's check of --redis-url, in a short-lived child.
The spawner's signals stay blocked as the master's fork() left them (it is told what to do over its socket, and
ends at end of file there); each process it forks installs its own handlers, then unblocks them.

Must not import at module level: redis, the worker's code (launcher) or the recoverer; nor sidepunch.api/admin.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, NoReturn

import setproctitle

from ..core.exitcodes import ExitCode

log = logging.getLogger("sidepunch.master")

MESSAGE_MAX = 65536
URL_OK = b"\0ok"   # check_url_apart's child: the URL is good (no error message starts with NUL)


def _send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> bool:
    try:
        socket.send_fds(sock, [json.dumps(message).encode()], list(fds))
        return True
    except OSError:
        return False


class Spawner:
    """The spawner process: answers requests one at a time, until end of file on its socket."""

    def __init__(self, config: Any, sock: socket.socket, lifeline: tuple[int, int], recoverer_fds: tuple[int, int],
                 direct: bool = False) -> None:
        self.config = config
        self.sock = sock
        self.lifeline_r = lifeline[0]
        self.lifeline_w = lifeline[1] if direct else -1   # in the master (direct): closed in what it forks
        self.recoverer_r = recoverer_fds[0]
        self.direct = direct
        #: direct: the master's descriptors a child must close (its status pipes, ...), as of the fork
        self.inherited: Callable[[], tuple[int, ...]] = tuple
        self._client: Any = None
        self._outage: Any = None
        self.forked_at = 0.0     # CLOCK_MONOTONIC (system-wide), sent with each pid

    def run(self) -> int:
        setproctitle.setproctitle("sidepunchd spawner")
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from . import launcher, recoverer  # noqa: F401  imported once here, shared by every process forked
        gc.collect()  # and kept from the cyclic GC, which would unshare their pages (spawnlink._freeze)
        gc.freeze()
        while self.serve_one():
            pass
        return ExitCode.OK

    def serve_one(self) -> bool:
        """Answer one request; False at end of file."""
        while True:
            try:
                data = self.sock.recv(MESSAGE_MAX)
                break
            except InterruptedError:
                continue
            except OSError:
                return False
        if not data:
            return False
        request = json.loads(data)
        try:
            getattr(self, f"_do_{request['do']}")(request)
        except Exception as exc:  # e.g. fork() refused (EAGAIN): the master asks again later
            log.error("the spawner could not do %r: %s: %s", request["do"], type(exc).__name__, exc)
            _send(self.sock, {"failed": request["do"], "nonce": request.get("nonce", ""),
                              "number": request.get("number", 0),
                              **({"check": "down", "pause": 1.0} if request["do"] == "check" else {})})
        return True

    def _do_check(self, request: dict[str, Any]) -> None:
        """One attempt at the master's start-up check; the master asks again after an outage's pause."""
        import redis
        from ..core.connection import OUTAGE_ERRORS, Outage, make_client
        from .fetch import fetcher_class
        from .unlistened import warn_unlistened_queues
        if self._client is None:
            self._client = make_client(self.config.redis_url, max_connections=1)
            self._outage = self._outage or Outage(self.config.redis_url, log)
        try:
            self._client.ping()
            self._outage.ok()
        except redis.AuthenticationError as exc:  # a bad setting: the master exits with status 2
            log.error("%s; stopping", self._outage.describe(exc))
            _send(self.sock, {"check": "refused"})
            return
        except (*OUTAGE_ERRORS, redis.RedisError) as exc:  # RedisError: something that is not Redis (yet)
            # answers there (a proxy, another service): one line per outage too, not one per attempt
            self._client.connection_pool.disconnect()  # the next attempt starts from a fresh connection
            _send(self.sock, {"check": "down", "pause": self._outage.failed(exc)})
            return
        _send(self.sock, {"check": "ok", "recovers": fetcher_class(self.config).recovers_on_death})
        warn_unlistened_queues(self._client, [q.name for q in self.config.queues])
        self._client.connection_pool.disconnect()  # no connection of the spawner's is inherited by its children
        self._client = None

    def _do_worker(self, request: dict[str, Any]) -> None:
        from .launcher import Launcher
        status_r, status_w = os.pipe()

        def worker() -> NoReturn:
            Launcher(self.config, request["number"], request["nonce"], (self.lifeline_r, -1),
                     status_w, (), quiet=request["quiet"]).run()
            raise AssertionError("unreachable")  # Launcher.run ends with os._exit
        try:
            pid, go = self._fork(worker, f"sidepunch worker {request['number']} [starting]", close=(status_r,))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        answer = {"spawned": "worker", "pid": pid, "forked_at": self.forked_at,
                  **{k: request[k] for k in ("number", "nonce", "generation", "quiet")}}
        self._release(go, pid is not None and _send(self.sock, answer, (status_r,)))
        os.close(status_r)
        if pid is None:
            raise OSError("the process could not be forked")

    def _do_recoverer(self, request: dict[str, Any]) -> None:
        def recoverer() -> NoReturn:
            from .recoverer import run_recoverer
            run_recoverer(self.config, self.recoverer_r)
        pid, go = self._fork(recoverer, "sidepunchd recoverer", close=(), keep_recoverer=True)
        answer = {"spawned": "recoverer", "pid": pid, "forked_at": self.forked_at}
        self._release(go, pid is not None and _send(self.sock, answer))
        if pid is None:
            raise OSError("the process could not be forked")

    def _fork(self, main: Callable[[], NoReturn], title: str, close: tuple[int, ...],
              keep_recoverer: bool = False) -> tuple[int | None, int]:
        """Fork `main` as the master's child (directly, or twice so that it is reparented to the master); it
        waits for the "go" byte on the pipe whose write end is returned, and exits at once without it."""
        from .children import fork
        go_r, go_w = os.pipe()
        pid_r, pid_w = os.pipe()
        shed = {go_w, pid_r, pid_w, self.sock.fileno(), *close, *self.inherited(), self.recoverer_r, self.lifeline_w}
        shed -= {-1, self.recoverer_r} if keep_recoverer else {-1}
        self.forked_at = time.monotonic()  # an exit the master reaped before this is not the new process's
        try:
            middle = fork()
        except OSError:
            for fd in (go_r, go_w, pid_r, pid_w):
                os.close(fd)
            raise
        if middle == 0:
            try:
                child = os.fork() if not self.direct else 0
                if child == 0:
                    _become(main, title, shed, go_r)
                os.write(pid_w, str(child).encode())
            finally:
                os._exit(0)
        os.close(pid_w)
        os.close(go_r)
        if self.direct:
            os.close(pid_r)
            return middle, go_w
        data = _read_all(pid_r)
        os.close(pid_r)
        os.waitpid(middle, 0)  # the process is the master's child from here on
        return (int(data) if data else None), go_w

    @staticmethod
    def _release(go_w: int, go: bool) -> None:
        """Let the forked process start (the master knows its pid), or exit unstarted."""
        try:
            if go:
                os.write(go_w, b"g")
        except BrokenPipeError:  # it was killed while it waited: the master has its pid and reaps it
            pass
        finally:
            os.close(go_w)


def _become(main: Callable[[], NoReturn], title: str, shed: set[int], go_r: int) -> NoReturn:
    """In the forked process: close the spawner's descriptors, wait for "go", run `main`."""
    try:
        setproctitle.setproctitle(title)
        for fd in shed:
            os.close(fd)
        go = _read_all(go_r, 1)
        os.close(go_r)
        if go == b"g":
            main()
    finally:
        os._exit(ExitCode.CRASH)


def _read_all(fd: int, limit: int = 64) -> bytes:
    """Up to `limit` bytes from `fd`, until end of file; the caller closes it."""
    data = b""
    while len(data) < limit:
        try:
            chunk = os.read(fd, limit - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def check_url_apart(url: str) -> None:
    """core.connection.check_url (ValueError with a one-line message for a URL no client can be built for), run
    in a short-lived child: it needs redis-py, which the master must not import. Fails closed: a child that
    ends without saying "ok" (it crashed, or was killed) makes the URL a bad setting, not a good one."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: check here, at the cost of redis-py in this process
        os.close(r)
        os.close(w)
        from ..core.connection import check_url
        check_url(url)
        return
    if pid == 0:
        try:
            os.close(r)
            from ..core.connection import check_url
            check_url(url)
            os.write(w, URL_OK)
        except ValueError as exc:
            os.write(w, str(exc).encode("utf-8", "replace")[:MESSAGE_MAX] or b"bad Redis URL")
        finally:
            os._exit(0)
    os.close(w)
    message = _read_all(r, MESSAGE_MAX)
    os.close(r)
    os.waitpid(pid, 0)
    if message != URL_OK:
        from ..core.urls import mask_url
        raise ValueError(message.decode("utf-8", "replace") if message else
                         f"bad Redis URL {mask_url(url)}: it could not be checked (the check's process failed)")
