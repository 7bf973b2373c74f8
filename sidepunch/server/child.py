"""Child: one worker process. Imports the app, runs T processor threads, a heartbeat and a poller.

The constructor is inert (it runs in the master before the fork); `run()` does everything after the fork
and leaves with os._exit so the master's atexit hooks never run twice. Signal handlers only queue the
signal; the main thread dispatches. The child stops when the master's lifeline pipe closes, and when its status
pipe to the master is found closed under it (a job closed the process's file descriptors): it can then no longer
tell the master it is alive, and the descriptor's number may already belong to a Redis socket.
"""
from __future__ import annotations

import importlib
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

import redis
import setproctitle

from ..core import keys
from ..core.connection import OUTAGE_ERRORS, Outage, make_client
from ..core.errors import JobTimeout
from ..core.exitcodes import ExitCode
from .fetch import BasicFetch, ReliableFetch
from .heartbeat import Heartbeat, hostname
from .hooks import load_middleware
from .logs import enable_faulthandler
from .processor import Processor
from .resolver import JobResolver
from .retry import DeadSet, RetryPolicy, error_message
from .poller import Poller
from .state import ChildContext, LifecycleState

log = logging.getLogger("sidepunch.child")

HANDLED = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGTSTP", "SIGCONT", "SIGTTIN", "SIGHUP")
MASTER_GONE = "MASTER_GONE"
STATUS_PIPE_LOST = "STATUS_PIPE_LOST"


def load_callable(path: str) -> Any:
    """`package.module.function` -> the function; ImportError or AttributeError names what is missing."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path like myapp.hooks.notify")
    target = getattr(importlib.import_module(module_name), attr, None)
    if not callable(target):
        raise AttributeError(f"{path} is not a function in module {module_name}")
    return target


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


class Child:
    def __init__(self, config: Any, number: int, nonce: str, lifeline: tuple[int, int], status_fd: int,
                 inherited: tuple[int, ...] = (), generation: int = 0, quiet: bool = False) -> None:
        self.config = config
        self.number = number
        self.nonce = nonce
        self.lifeline = lifeline
        self.status_fd = status_fd      # write end of this child's pipe to the master
        self.inherited = inherited      # the master's ends of other pipes, closed after the fork
        self.generation = generation
        self.retiring = ""
        self.signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.state = LifecycleState()
        if quiet:  # a replacement started while the daemon is quiet must not fetch either
            self.state.go_quiet()
        self.processors: list[Processor] = []

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
        self._install_signals()
        for fd in (self.lifeline[1], *self.inherited):
            os.close(fd)
        os.set_blocking(self.status_fd, False)
        self._status_pipe = _identity(self.status_fd)
        enable_faulthandler()  # SIGABRT from the master (no heartbeat) dumps every thread's stack first
        self._set_title()
        try:
            load_app(self.config.require)
            self.middleware, self.death_handlers = load_middleware(self.config)
        except BaseException as exc:  # SystemExit too: an app that exits while imported cannot run jobs
            log.error("worker %d cannot load the app: %s: %s", self.number, type(exc).__name__, error_message(exc))
            return ExitCode.BOOT_ERROR
        identity = f"{hostname(dict(os.environ))}:{os.getpid()}:{self.nonce}"
        self.ctx = self._build_context(identity)
        self._start_threads()
        while not self.state.stopping:
            self._dispatch(self._next_signal(1.0))
            self._replace_dead_processors()
            self._enforce_timeouts()
            self._check_job_limit()
        self._shutdown()
        return ExitCode.OK

    def report(self, *words: object) -> None:
        """One line to the master; never blocks (a full pipe drops the line, the next beat repeats state)."""
        if not self._status_pipe_intact():
            return
        try:
            os.write(self.status_fd, (" ".join(map(str, words)) + "\n").encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def _status_pipe_intact(self) -> bool:
        """False once the status pipe's descriptor was closed (or reused) behind our back; the first time, this
        process is told to stop. One fstat, about once a second."""
        if self.status_fd < 0:
            return False
        try:
            intact = _identity(self.status_fd) == self._status_pipe
        except OSError:
            intact = False
        if not intact:
            self.status_fd = -1  # never write to that number again: it may be a Redis socket by now
            self.signals.put(STATUS_PIPE_LOST)
        return intact

    def retire(self, reason: str) -> None:
        """Stop fetching and ask the master for a replacement; it then stops this process gracefully."""
        if self.retiring:
            return
        self.retiring = reason
        log.warning("worker %d retiring: %s", self.number, reason)
        self.handle_quiet()
        self.report("retire", reason)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for proc in self.processors:
            if proc.deadline is not None and now >= proc.deadline:
                taken = proc.abandon()
                if taken is None:
                    continue
                unit, instance, seconds = taken
                exc = JobTimeout(f"job ran longer than its {seconds:g}s timeout")
                self.ctx.counters.record(failed=True)
                try:  # one attempt: this is the main thread, which must keep answering signals
                    outcome = self.ctx.retry.handle(unit, instance, exc)
                except OUTAGE_ERRORS as error:
                    outcome = f"not recorded ({error}); it stays in the working list and is recovered"
                log.error("job %.200s timed out after %gs: %s", unit.payload.decode("utf-8", "replace"),
                          seconds, outcome or "not recorded")
                self.retire(f"a job outlived its {seconds:g}s timeout and its thread cannot be stopped")

    def _check_job_limit(self) -> None:
        limit = self.config.max_jobs
        if limit and self.ctx.counters.total_processed >= limit:
            self.retire(f"processed {self.ctx.counters.total_processed} jobs (--max-jobs {limit})")

    def _install_signals(self) -> None:
        for name in HANDLED:
            signal.signal(getattr(signal, name), lambda signum, frame: self.signals.put(signal.Signals(signum).name))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _build_context(self, identity: str) -> ChildContext:
        config = self.config
        client = make_client(config.redis_url, max_connections=config.threads + 5)
        state = self.state
        outage = Outage(config.redis_url, log)
        dead = DeadSet(config.dead_max_jobs, config.dead_timeout)
        ack_into = ReliableFetch.ack_into if config.fetch == "reliable" else BasicFetch.ack_into
        retry = RetryPolicy(client, dead, config.max_retries, ack_into, death_handlers=self.death_handlers)
        return ChildContext(redis=client, config=config, identity=identity, state=state, outage=outage,
                            resolver=JobResolver(config.require), retry=retry, server_middleware=self.middleware)

    def _start_threads(self) -> None:
        ctx, config = self.ctx, self.config
        info = {"hostname": hostname(dict(os.environ)), "started_at": time.time(), "pid": os.getpid(),
                "tag": config.tag, "concurrency": config.threads,
                "queues": [q.name for q in config.queues], "labels": [], "identity": ctx.identity}
        self.heartbeat = Heartbeat(ctx, info, on_signal=self._remote_signal, on_beat=self._set_title,
                                   on_tick=self._report_alive)
        while not self.heartbeat.beat():  # registered (and alive) before the first job is fetched
            self._report_alive()  # booting during an outage is not being stuck
            self._dispatch(self._next_signal(1.0))
            if self.state.stopping:
                return
        self.heartbeat.start()
        threading.Thread(target=self._watch_lifeline, name="lifeline", daemon=True).start()
        self.poller = Poller(ctx, DeadSet(config.dead_max_jobs, config.dead_timeout))
        self.poller.start()
        for index in range(config.threads):
            self.processors.append(self._new_processor(index))
            self.processors[-1].start()
        log.info("worker %d (pid %d) running %d threads on %s", self.number, os.getpid(), config.threads,
                 ",".join(q.name for q in config.queues))
        self.report("ready")

    def _report_alive(self) -> None:
        self.report("beat", len(self.ctx.work), self.ctx.counters.total_processed)

    def _new_processor(self, index: int) -> Processor:
        config, ctx = self.config, self.ctx
        rng = random.Random()
        if config.fetch == "reliable":
            home = (self.number - 1) * config.threads + index
            fetcher: Any = ReliableFetch(ctx.redis, config.queues, rng, ctx.identity, index, home,
                                         share=config.workers * config.threads)
        else:
            fetcher = BasicFetch(ctx.redis, config.queues, rng)
        return Processor(index, ctx, fetcher)

    def _replace_dead_processors(self) -> None:
        for i, proc in enumerate(self.processors):
            if proc.thread is not None and not proc.thread.is_alive() and not self.state.stopping:
                self.processors[i] = self._new_processor(proc.index)
                self.processors[i].start()

    def _next_signal(self, timeout: float) -> str | None:
        try:
            return self.signals.get(timeout=timeout)
        except queue.Empty:
            return None

    def _dispatch(self, name: str | None) -> bool:
        handler = {"SIGTERM": self.handle_term, "SIGINT": self.handle_term, "SIGQUIT": self.handle_quit,
                   "SIGUSR1": self.handle_quiet, "SIGTSTP": self.handle_quiet, "SIGCONT": self.handle_cont,
                   "SIGTTIN": self.handle_ttin, MASTER_GONE: self.handle_master_gone,
                   STATUS_PIPE_LOST: self.handle_status_pipe_lost}.get(name or "")
        if handler:
            handler()
        return handler is not None

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
        running = self.ctx.work.snapshot() if hasattr(self, "ctx") else {}
        jobs = {p.thread.ident: running.get(p.tid) for p in self.processors if p.thread is not None}
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = []
        for ident, frame in sys._current_frames().items():
            work = jobs.get(ident)
            doing = f" running {work.payload.decode('utf-8', 'replace')[:300]}" if work else ""
            parts.append(f"Thread {names.get(ident, ident)}{doing}\n" + "".join(traceback.format_stack(frame)))
        return "\n".join(parts)

    def _remote_signal(self, name: str) -> None:
        """A signal pushed through <identity>-signals (Sidekiq's web UI): the daemon acts as one process."""
        signum = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
        if signum is None:
            log.warning("ignoring unknown remote signal %r", name)
            return
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
        self.poller.stop() if hasattr(self, "poller") else None
        deadline = self.state.hard_deadline or time.monotonic()
        for proc in self.processors:
            if proc.thread is not None:
                proc.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = self._requeue_unfinished()
        # Idle threads are inside a blocking fetch for up to 2 s and requeue whatever it returns: wait for them
        # (one shared 3 s, so the master's grace is not outrun) so nothing they fetch is left behind.
        end = time.monotonic() + 3.0
        for proc in self.processors:
            if proc.thread is not None and proc not in stuck:
                proc.thread.join(max(0.0, end - time.monotonic()))
        if hasattr(self, "heartbeat"):
            self.heartbeat.stop()
        log.info("worker %d stopped", self.number)

    def _requeue_unfinished(self) -> list[Processor]:
        """At the deadline: take back what threads still run (so they cannot also record it) and put it,
        with their prefetched jobs, back at the head of the queues. Returns the threads left running."""
        stuck = [p for p in self.processors if p.thread is not None and p.thread.is_alive() and p.current]
        held = []
        for proc in stuck:
            taken = proc.abandon()
            held.append((proc.fetcher, ([taken[0]] if taken else []) + proc.fetcher.buffered()))
        count = sum(len(units) for _, units in held)
        if count:
            log.warning("worker %d requeueing %d unfinished job(s)", self.number, count)
        for fetcher, units in held:
            try:
                fetcher.requeue(units)
            except redis.RedisError as exc:  # an outage or a refusal: the master recovers them when we exit
                log.error("could not requeue %d job(s) (%s); they stay in the working list for recovery",
                          len(units), exc)
        return stuck

    def _set_title(self) -> None:
        busy = len(self.ctx.work) if hasattr(self, "ctx") else 0
        state = " stopping" if self.state.stopping else (" quiet" if self.state.quiet else "")
        setproctitle.setproctitle(
            f"sidepunch worker {self.number} [{busy} of {self.config.threads} busy]{state}")


def _identity(fd: int) -> tuple[int, int]:
    """What the descriptor refers to: a pipe keeps its (device, inode) for life, a reused number does not."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
