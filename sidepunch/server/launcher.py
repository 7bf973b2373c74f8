"""Launcher: one worker process, from just after the fork to os._exit (Sidekiq's launcher).

Duties: boot after the fork (signal handlers, then unblock the signals the master blocked across fork(); close
the master's descriptors; import the app, its middleware and death handlers), build the process's parts in one
place (`_build`: context, ProcessorPool, heartbeat, poller), dispatch signals on the main thread (handlers only
queue them), report to the master over the status pipe, watch the lifeline, retire over --max-jobs or after a
job timeout, and at stop compute the one deadline the pool waits for. The constructor is inert (it runs in the
master before the fork); leaving with os._exit keeps the master's atexit hooks from running twice.

The process also stops when the master's lifeline pipe closes, and when its status pipe to the master is found
closed under it (a job closed the process's file descriptors): it can then no longer tell the master it is
alive, and the descriptor's number may already belong to a Redis socket. Must not run jobs or fetch (the pool's
and the processors'), nor import the master.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import importlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, NoReturn

import setproctitle

from ..core import identity as identities
from ..core.exitcodes import ExitCode
from .children import unblock_after_fork
from .hooks import failure_hook, load_error_handlers, load_middleware
from .logs import enable_faulthandler
from ..client.periodic import declared
from .parts import build_parts, process_info
from .periodic import check_entries
from .resolver import JobResolver
from .retry import error_message
from .state import LifecycleState

log = logging.getLogger("sidepunch.child")

HANDLED = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGTSTP", "SIGCONT", "SIGTTIN", "SIGHUP")
MASTER_GONE = "MASTER_GONE"
STATUS_PIPE_LOST = "STATUS_PIPE_LOST"


def load_app(modules: tuple[str, ...]) -> None:
    """Import each -r module (a dotted name, or a path to a .py file or package directory)."""
    for target in modules:
        name = target
        if target.endswith(".py") or os.sep in target:
            path = os.path.abspath(target)
            folder, base = os.path.split(path[:-3] if path.endswith(".py") else path.rstrip(os.sep))
            sys.path.insert(0, folder)
            name = base
        importlib.import_module(name)


class StatusPipe:
    """The write end of this worker's pipe to the master. Lines never block (a full pipe drops one; the next
    beat repeats the state), and a descriptor closed or reused behind our back is never written again."""

    def __init__(self, fd: int, on_lost: Callable[[], None]) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._identity = _identity(fd)
        self._on_lost = on_lost

    def write(self, *words: object) -> None:
        if not self.intact():
            return
        try:
            os.write(self._fd, (" ".join(map(str, words)) + "\n").encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def try_write(self, line: bytes) -> bool:
        """Write one whole line (under PIPE_BUF, so all or nothing); False if the pipe cannot take it now."""
        if not self.intact():
            return True  # no master hears this process any more: nothing to keep the line for
        try:
            os.write(self._fd, line)
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def intact(self) -> bool:
        """One fstat, about once a second; the first time it fails, `on_lost` is called."""
        if self._fd < 0:
            return False
        try:
            intact = _identity(self._fd) == self._identity
        except OSError:
            intact = False
        if not intact:
            self._fd = -1  # never write to that number again: it may be a Redis socket by now
            self._on_lost()
        return intact


class Launcher:
    """Worker `number` of the daemon; `run()` is called in the forked process and never returns."""

    def __init__(self, config: Any, number: int, nonce: str, lifeline: tuple[int, int], status_fd: int,
                 inherited: tuple[int, ...] = (), quiet: bool = False) -> None:
        self.config = config
        self.number = number
        self.nonce = nonce
        self.lifeline = lifeline
        self.status_fd = status_fd      # write end of this worker's pipe to the master
        self.inherited = inherited      # the master's ends of other pipes, closed after the fork
        self.retiring = ""
        self.signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.state = LifecycleState()
        if quiet:  # a replacement started while the daemon is quiet must not fetch either
            self.state.go_quiet()

    def run(self) -> NoReturn:
        code = ExitCode.CRASH
        try:
            code = self._run()
        except BaseException:
            log.exception("worker %d crashed", self.number)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)

    def _run(self) -> ExitCode:
        self._prepare()
        try:
            load_app(self.config.require)
            middleware, death_handlers, async_middleware = load_middleware(self.config)
        except BaseException as exc:  # SystemExit too: an app that exits while imported cannot run jobs
            log.error("worker %d cannot load the app: %s: %s", self.number, type(exc).__name__, error_message(exc))
            return ExitCode.BOOT_ERROR
        try:  # settings that only the imported app can check: a bad one is a usage error of the daemon
            check_entries(self.config.periodic, JobResolver(self.config.require).resolve,
                          declared(self.config.require))
            error_handlers = load_error_handlers(self.config.error_handlers)
        except ValueError as exc:
            log.error("%s", exc)
            return ExitCode.USAGE
        self._build(middleware, death_handlers, async_middleware)
        self.ctx.on_failure = failure_hook(error_handlers, self.ctx.counters)
        if hasattr(self.ctx.counters, "report"):  # --metrics-port: job counts go to the master (observe/)
            self.ctx.counters.report = self.status.try_write
        if self._start():
            while not self.state.stopping:
                self._dispatch(self._next_signal(self.pool.next_check()))
                self.pool.replace_dead()
                self.pool.enforce_timeouts()
                self._check_job_limit()
        self._shutdown()
        return ExitCode.OK

    def _prepare(self) -> None:
        """What the process needs before the app is imported. A signal sent since the fork waited, blocked,
        until the handlers below were in place (children.py)."""
        for name in HANDLED:
            signal.signal(getattr(signal, name), lambda signum, frame: self.signals.put(signal.Signals(signum).name))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        unblock_after_fork()
        for fd in (self.lifeline[1], *self.inherited):
            if fd >= 0:  # -1: forked by the spawner, which holds no write end of the lifeline
                os.close(fd)
        self.status = StatusPipe(self.status_fd, on_lost=lambda: self.signals.put(STATUS_PIPE_LOST))
        sys.setswitchinterval(self.config.switch_interval / 1000)  # before the app, which may set its own
        enable_faulthandler()  # SIGABRT from the master (no heartbeat) dumps every thread's stack first
        self._set_title(busy=0)

    def _build(self, middleware: tuple[Any, ...], death_handlers: tuple[Any, ...],
               async_middleware: tuple[Any, ...] = ()) -> None:
        """Everything that exists once the app is loaded, built here and only here (nothing started yet)."""
        identity = identities.current(self.nonce)
        parts = build_parts(self.config, identity, self.state, self.number,
                            (middleware, death_handlers, async_middleware), retire=self.retire,
                            on_signal=self._remote_signal, info=process_info(self.config, identity), logger=log,
                            on_beat=self._set_title, on_tick=self._report_alive)
        self.parts = parts
        self.ctx, self.pool, self.cancels = parts.ctx, parts.pool, parts.cancels
        self.heartbeat, self.poller = parts.heartbeat, parts.poller

    def _start(self) -> bool:
        """Register (and be alive) before the first job is fetched; False if told to stop meanwhile."""
        while not self.heartbeat.beat():
            self._report_alive()  # booting during an outage is not being stuck
            self._dispatch(self._next_signal(1.0))
            if self.state.stopping:
                return False
        self.heartbeat.start()
        threading.Thread(target=self._watch_lifeline, name="lifeline", daemon=True).start()
        self.poller.start()
        self.pool.start()
        self.cancels.start()
        log.info("worker %d (pid %d) running %d threads on %s", self.number, os.getpid(), self.config.threads,
                 ",".join(q.name for q in self.config.queues))
        self.status.write("ready")
        return True

    def _report_alive(self) -> None:
        self.status.write("beat", len(self.ctx.work), self.ctx.counters.total_processed)

    def retire(self, reason: str) -> None:
        """Stop fetching and ask the master for a replacement; it then stops this process gracefully."""
        if self.retiring:
            return
        self.retiring = reason
        log.warning("worker %d retiring: %s", self.number, reason)
        self.handle_quiet()
        self.status.write("retire", reason)

    def _check_job_limit(self) -> None:
        limit = self.config.max_jobs
        if limit and self.ctx.counters.total_processed >= limit:
            self.retire(f"processed {self.ctx.counters.total_processed} jobs (--max-jobs {limit})")

    def _next_signal(self, timeout: float) -> str | None:
        try:
            return self.signals.get(timeout=timeout)
        except queue.Empty:
            return None

    def _dispatch(self, name: str | None) -> None:
        handler = {"SIGTERM": self.handle_term, "SIGINT": self.handle_term, "SIGQUIT": self.handle_quit,
                   "SIGUSR1": self.handle_quiet, "SIGTSTP": self.handle_quiet, "SIGCONT": self.handle_cont,
                   "SIGTTIN": self.handle_ttin, MASTER_GONE: self.handle_master_gone,
                   STATUS_PIPE_LOST: self.handle_status_pipe_lost}.get(name or "")
        if handler:
            handler()

    def handle_term(self) -> None:
        log.info("worker %d stopping: finishing running jobs for up to %gs", self.number, self.config.timeout)
        self.state.stop(time.monotonic() + self.config.timeout)

    def handle_quit(self) -> None:
        log.info("worker %d stopping now: requeueing running jobs", self.number)
        self.state.stop(time.monotonic())

    def handle_quiet(self) -> None:
        if not self.state.quiet:
            log.info("worker %d quiet: no new jobs will be fetched", self.number)
        self.state.go_quiet()
        self._set_title()

    def handle_cont(self) -> None:
        if self.retiring:  # a worker asked to be replaced stays quiet until the master stops it
            return
        if self.state.quiet and not self.state.stopping:
            log.info("worker %d resumes fetching", self.number)
        self.state.resume()
        self._set_title()

    def handle_ttin(self) -> None:
        log.warning("worker %d thread dump:\n%s", self.number, self.thread_dump())

    def handle_master_gone(self) -> None:
        log.warning("worker %d: the master process is gone; stopping", self.number)
        self.handle_term()

    def handle_status_pipe_lost(self) -> None:
        log.error("worker %d: its status pipe to the master was closed under it (did a job close the process's "
                  "file descriptors?); stopping, so that the master replaces it", self.number)
        # The master no longer hears this process, and murders it after --worker-timeout: finish well before,
        # so running jobs are requeued by this process rather than recovered as interrupted.
        self.state.stop(time.monotonic() + min(self.config.timeout, self.config.worker_timeout / 4))

    def thread_dump(self) -> str:
        jobs = self.pool.jobs_by_thread()
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = []
        for ident, frame in sys._current_frames().items():
            work = jobs.get(ident)
            doing = f" running {work.payload.decode('utf-8', 'replace')[:300]}" if work else ""
            parts.append(f"Thread {names.get(ident, ident)}{doing}\n" + "".join(traceback.format_stack(frame)))
        return "\n".join(parts + [self.pool.runner.dump()]).rstrip("\n")

    def _remote_signal(self, name: str) -> None:
        """A signal pushed through <identity>-signals (Sidekiq's web UI): the daemon acts as one process."""
        signum = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
        if signum is None:
            log.warning("ignoring unknown remote signal %r", name)
            return
        # The parent is the master: the spawner lets a worker start only once it is the master's child.
        target = os.getppid() if signum in (signal.SIGTERM, signal.SIGTSTP, signal.SIGUSR1, signal.SIGCONT,
                                            signal.SIGINT) else os.getpid()
        os.kill(target, signum)

    def _watch_lifeline(self) -> None:
        try:
            while os.read(self.lifeline[0], 1):
                pass
        except OSError:
            pass
        self.signals.put(MASTER_GONE)

    def _shutdown(self) -> None:
        # The one deadline: set by the first stop signal (the earliest if several came), passed down to the pool.
        self.parts.stop(self.state.hard_deadline or time.monotonic(), log)
        log.info("worker %d stopped", self.number)

    def _set_title(self, busy: int | None = None) -> None:
        busy = len(self.ctx.work) if busy is None else busy
        state = " stopping" if self.state.stopping else (" quiet" if self.state.quiet else "")
        setproctitle.setproctitle(
            f"sidepunch worker {self.number} [{busy} of {self.config.threads} busy]{state}")


def _identity(fd: int) -> tuple[int, int]:
    """What the descriptor refers to: a pipe keeps its (device, inode) for life, a reused number does not."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
