"""Master: forks worker processes and keeps the right number of them alive. It never runs jobs.

Signal handlers only queue the signal; the loop dispatches to handle_<name>, then runs reap -> murder ->
manage on every tick. Restarting is reconciliation: manage spawns the shortfall of the current generation
(with backoff for slots that keep crashing) and retires older generations once the new one runs (HUP).
When it reaps a child it first puts that child's unfinished jobs back on their queues.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import setproctitle

from .child import Child
from .connection import OUTAGE_ERRORS, Outage, make_client
from .exitcodes import ExitCode
from .heartbeat import hostname
from .recovery import OrphanSweeper, RecoveryPolicy, recover_identity

log = logging.getLogger("sidepunch.master")

SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGTSTP", "SIGCONT", "SIGHUP", "SIGTTIN", "SIGCHLD")
TICK = 0.5
QUIT_GRACE = 5.0
STABLE_AFTER = 10.0      # a child that lived this long resets its slot's crash count
MAX_BACKOFF = 10.0
SWEEP_EVERY = (10.0, 20.0)


@dataclass
class ChildRecord:
    number: int
    nonce: str
    generation: int
    started: float
    kill_at: float | None = None   # set once the child was told to stop
    reason: str = ""                # why it is being retired, for the log

    def identity(self, pid: int) -> str:
        return f"{hostname(dict(os.environ))}:{pid}:{self.nonce}"


class Master:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.children: dict[int, ChildRecord] = {}
        self.signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.generation = 0
        self.quiet = False
        self.stopping = False
        self.exit_code = ExitCode.OK
        self.crashes: dict[int, int] = {}
        self.not_before: dict[int, float] = {}
        self.policy = RecoveryPolicy(config.max_interruptions, config.dead_max_jobs, config.dead_timeout)
        self.queue_names = [q.name for q in config.queues]

    # -- setup ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        for name in SIGNALS:
            signal.signal(getattr(signal, name), lambda signum, frame: self.signals.put(signal.Signals(signum).name))
        self.redis = make_client(self.config.redis_url, max_connections=4)
        self.outage = Outage(self.config.redis_url, log)
        self.sweeper = OrphanSweeper(self.redis, self.policy)
        self.next_sweep = time.monotonic() + random.uniform(*SWEEP_EVERY)
        self._set_title()
        if not self._wait_for_redis():
            return int(self.exit_code)
        self.lifeline = os.pipe()
        log.info("master %d starting %d worker(s) x %d threads on queues %s (%s fetch)", os.getpid(),
                 self.config.workers, self.config.threads, ",".join(self.queue_names), self.config.fetch)
        while not (self.stopping and not self.children):
            self._dispatch_pending(TICK)
            self.reap()
            self.murder()
            if not self.stopping:
                self.manage()
                self._maybe_sweep()
        log.info("master %d stopped", os.getpid())
        return int(self.exit_code)

    def _wait_for_redis(self) -> bool:
        while True:
            try:
                self.redis.ping()
                self.outage.ok()
                return True
            except OUTAGE_ERRORS as exc:
                pause = self.outage.failed(exc)
            self._dispatch_pending(min(pause * 4, 5.0))
            if self.stopping:
                return False

    def _dispatch_pending(self, timeout: float) -> None:
        try:
            name: str | None = self.signals.get(timeout=timeout)
        except queue.Empty:
            return
        while name is not None:
            handler = getattr(self, f"handle_{name[3:].lower()}", None)
            if handler:
                handler()
            try:
                name = self.signals.get_nowait()
            except queue.Empty:
                name = None

    # -- signals -------------------------------------------------------------------------------------------
    def handle_term(self) -> None:
        self.stop(self.config.timeout + self.config.grace, signal.SIGTERM, "graceful stop")

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.stop(QUIT_GRACE, signal.SIGQUIT, "fast stop")

    def handle_usr1(self) -> None:
        log.info("quiet: workers stop fetching and finish their running jobs")
        self.quiet = True
        self._signal_all(signal.SIGTSTP)
        self._set_title()

    handle_tstp = handle_usr1

    def handle_cont(self) -> None:
        log.info("resuming: workers fetch again")
        self.quiet = False
        self._signal_all(signal.SIGCONT)
        self._set_title()

    def handle_hup(self) -> None:
        if self.stopping:
            return
        self.generation += 1
        log.info("rolling restart: starting generation %d, then retiring the old workers", self.generation)

    def handle_ttin(self) -> None:
        log.warning("master %d stack:\n%s", os.getpid(), "".join(traceback.format_stack(sys._getframe(1))))
        self._signal_all(signal.SIGTTIN)

    def handle_chld(self) -> None:
        pass  # reap runs on every tick

    def stop(self, grace: float, signum: int, what: str) -> None:
        if not self.stopping:
            log.info("%s: telling %d worker(s) to stop", what, len(self.children))
        self.stopping = True
        self._set_title()
        for pid, record in self.children.items():
            self._retire(pid, record, grace, what, signum)

    def _signal_all(self, signum: int) -> None:
        for pid, record in self.children.items():
            if record.kill_at is None:
                self._kill(pid, signum)

    # -- the loop: reap, murder, manage ---------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            record = self.children.pop(pid, None)
            if record is not None:
                self._reaped(pid, record, status)

    def _reaped(self, pid: int, record: ChildRecord, status: int) -> None:
        if os.WIFSIGNALED(status):
            how, clean = f"killed by {signal.Signals(os.WTERMSIG(status)).name}", False
        else:
            code = os.WEXITSTATUS(status)
            how, clean = f"exited with status {code}", code == ExitCode.OK
            if code == ExitCode.BOOT_ERROR and not self.stopping:
                log.error("worker %d could not load the app (its error is above); stopping instead of "
                          "restarting it", record.number)
                self.exit_code = ExitCode.BOOT_ERROR
                self.stop(self.config.timeout + self.config.grace, signal.SIGTERM, "boot error")
        recovered = self._recover(pid, record, interrupted=not clean, reason=how)
        lived = time.monotonic() - record.started
        if not clean and not self.stopping:
            self.crashes[record.number] = 0 if lived > STABLE_AFTER else self.crashes.get(record.number, 0) + 1
            crashes = self.crashes[record.number]
            delay = min(0.1 * 2 ** (crashes - 1), MAX_BACKOFF) if crashes else 0.0
            self.not_before[record.number] = time.monotonic() + delay
            log.error("worker %d (pid %d) %s after %.1fs; %s; restarting%s", record.number, pid, how, lived,
                      recovered, f" in {delay:.1f}s" if delay else "")
        else:
            log.info("worker %d (pid %d) %s%s; %s", record.number, pid, how,
                     f" ({record.reason})" if record.reason else "", recovered)

    def _recover(self, pid: int, record: ChildRecord, interrupted: bool, reason: str) -> str:
        if self.config.fetch != "reliable":
            return "basic fetch: nothing to recover"
        try:
            found = recover_identity(self.redis, record.identity(pid), self.queue_names, self.policy,
                                     interrupted, reason)
        except OUTAGE_ERRORS as exc:
            self.outage.failed(exc)
            return "Redis unreachable: its jobs will be recovered by the orphan sweep"
        if found.killed:
            return f"requeued {found.requeued} job(s), {found.killed} moved to the dead set as poison pills"
        return f"requeued {found.requeued} job(s)"

    def murder(self) -> None:
        now = time.monotonic()
        for pid, record in list(self.children.items()):
            if record.kill_at is not None and now >= record.kill_at:
                log.warning("worker %d (pid %d) did not stop in time; sending SIGKILL", record.number, pid)
                self._kill(pid, signal.SIGKILL)
                record.kill_at = now + 3600  # already killed; reap will collect it

    def manage(self) -> None:
        current = {r.number for r in self.children.values() if r.generation == self.generation and r.kill_at is None}
        now = time.monotonic()
        for number in range(1, self.config.workers + 1):
            if number not in current and now >= self.not_before.get(number, 0.0):
                self.spawn(number)
        ready = all(now - r.started >= 1.0 for r in self.children.values()
                    if r.generation == self.generation and r.kill_at is None)
        for pid, record in list(self.children.items()):
            if record.kill_at is None and (record.generation != self.generation and ready):
                self._retire(pid, record, self.config.timeout + self.config.grace, "replaced by a new generation",
                             signal.SIGTERM)
        self._set_title()

    def _maybe_sweep(self) -> None:
        if self.config.fetch != "reliable" or time.monotonic() < self.next_sweep:
            return
        self.next_sweep = time.monotonic() + random.uniform(*SWEEP_EVERY)
        try:
            self.sweeper.sweep()
        except OUTAGE_ERRORS as exc:
            self.outage.failed(exc)

    # -- process operations --------------------------------------------------------------------------------
    def spawn(self, number: int) -> None:
        nonce = secrets.token_hex(6)
        for handler in logging.getLogger().handlers:
            handler.flush()
        pid = os.fork()
        if pid == 0:
            try:
                Child(self.config, number, nonce, self.lifeline, self.generation, quiet=self.quiet).run()
            finally:
                os._exit(ExitCode.CRASH)
        self.children[pid] = ChildRecord(number, nonce, self.generation, time.monotonic())

    def _retire(self, pid: int, record: ChildRecord, grace: float, reason: str, signum: int) -> None:
        if record.kill_at is None or signum == signal.SIGQUIT:
            record.kill_at = min(record.kill_at or float("inf"), time.monotonic() + grace)
            record.reason = reason
            self._kill(pid, signum)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _set_title(self) -> None:
        state = " stopping" if self.stopping else (" quiet" if self.quiet else "")
        setproctitle.setproctitle(f"sidepunchd master [{len(self.children)} workers] "
                                  f"queues={','.join(self.queue_names)}{state}")
