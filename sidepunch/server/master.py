"""Master: forks worker processes and keeps the right number of them alive. It never runs jobs.

Signal handlers only queue the signal (and wake the loop through set_wakeup_fd); the loop dispatches to
handle_<name>, reads what workers report on their status pipes, then runs reap -> murder (children.py) -> manage
on every tick. Restarting is reconciliation: manage spawns the shortfall of the current generation (with backoff for
slots that keep crashing) and retires workers that are over their limits or of an older generation (HUP).
When it reaps a worker it hands that worker's unfinished jobs to its recoverer process (no Redis I/O here).

It imports no redis-py and no worker code: its spawner process (spawner.py, spawnlink.py) holds them, runs the
start-up Redis check and forks workers and the recoverer as the master's children (it is their subreaper), sending
back each pid and status pipe: they are reaped, signalled and watched as if the master had forked them.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import os
import queue
import select
import signal
import sys
import time
import traceback
from typing import Any

import setproctitle

from ..core import identity as identities
from ..core.exitcodes import ExitCode
from .children import (MASTER_SIGNALS, ChildRecord, drain, exits_soon, fork, healthy, kill, murder, over_memory,
                       restart_delay, silence, status_line)
from .logs import enable_faulthandler
from .recoverer_keeper import Reaped, RecovererKeeper, RecovererProcess
from .spawnlink import SpawnerLink, become_subreaper, status_end
from .systemd import Notifier

log = logging.getLogger("sidepunch.master")

TICK = 0.5
QUIT_GRACE = 5.0
STABLE_AFTER = 10.0      # a child that lived this long resets its slot's crash count
STATUS_EVERY = 5.0       # seconds between STATUS= updates to systemd


class Master:
    def __init__(self, config: Any, notifier: Notifier | None = None, listener: Any = None) -> None:
        self.config = config
        self.listener = listener        # --metrics-port's bound socket (cli.py), else None
        self.notifier = notifier or Notifier({})
        self.children: dict[int, ChildRecord] = {}
        self.signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.generation = 0
        self.quiet = False
        self.stopping = False
        self.announced = False          # READY=1 sent for the current generation
        self.next_status = 0.0
        self.exit_code = ExitCode.OK
        self.crashes: dict[int, int] = {}
        self.not_before: dict[int, float] = {}
        self.stop_how: tuple[float, int, str] | None = None   # the stop under way: for workers heard of later
        self.checked: dict[str, Any] | None = None          # the spawner's answer to the start-up check
        self.recoverer: RecovererKeeper | None = None
        self.queue_names = [q.name for q in config.queues]

    def run(self) -> int:
        enable_faulthandler()  # a SIGABRT from systemd's watchdog leaves the master's stack in the log
        direct = not become_subreaper()  # first: every process the spawner forks must come back to the master
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, lambda signum, frame: self.signals.put(signal.Signals(signum).name))
        self.recoverer_pipe = RecovererProcess()  # before the spawner is forked: it inherits the read end
        self.observer = self._make_observer()
        self._set_title()
        self.lifeline = os.pipe()
        self.spawner = SpawnerLink(self.config, self.lifeline, self.recoverer_pipe.fds, direct=direct)
        try:
            if self._wait_for_redis():
                self._serve()
        finally:
            self.spawner.stop()
        return int(self.exit_code)

    def _serve(self) -> None:
        log.info("master %d starting %d worker(s) x %d threads on queues %s (%s fetch)", os.getpid(),
                 self.config.workers, self.config.threads, ",".join(self.queue_names), self.config.fetch)
        if self.checked and self.checked.get("recovers"):
            self.recoverer = RecovererKeeper(self.recoverer_pipe, lambda: self.spawner.ask(do="recoverer"))
        while not (self.stopping and not self.children and not self.spawner.pending):
            self._wait(min(TICK, self.notifier.seconds_to_next_ping() + 0.001))
            self.reap()
            murder(self.children, self.config.worker_timeout, time.monotonic())
            if not self.stopping:
                self.spawner.keep(fork, self._fds_to_close, self.stopping)
                self.manage()
                if self.recoverer is not None:
                    self.recoverer.tick({r.identity for r in self.children.values()})
        if self.recoverer is not None:
            self.recoverer.finish(self.config.grace)
        if self.observer is not None:
            self.observer.finish()
        log.info("master %d stopped", os.getpid())

    def _make_observer(self) -> Any:
        """With --metrics-port, the master's side of the metrics (observe/feed.py, imported only then)."""
        if self.listener is None:
            return None
        from .observe.feed import Observer
        return Observer(self.config, self.listener, fork)

    def _wait_for_redis(self) -> bool:
        """Have the spawner check until Redis answers (it logs the outage); False if told to stop meanwhile, or
        if Redis refuses the password (a bad setting: exit status 2, where waiting would never end)."""
        self._asked = False   # set again to False when the spawner dies (`_exited`)
        while not self.stopping:
            self.spawner.keep(fork, self._fds_to_close, self.stopping)
            answer, self.checked = self.checked, None
            if answer is not None and answer["check"] != "down":  # "ok", or "refused": exit status 2
                self.checked, self.exit_code = answer, ExitCode.OK if answer["check"] == "ok" else ExitCode.USAGE
                return answer["check"] == "ok"
            if answer is not None:  # Redis is down: ask again after the outage's pause
                self._wait(min(float(answer["pause"]) * 4, 5.0))
                self._asked = False
                continue
            if not self._asked:
                self._asked = self.spawner.ask(do="check")
            self._wait(TICK)
            self.reap()
        return False

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal, a worker's message, or the timeout; then act on what arrived."""
        fds = [self._wake_r, *self.spawner.fds] + [r.status_fd for r in self.children.values()]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            readable = []
        if set(self.spawner.fds) & set(readable):
            self._hear_spawner()
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        for pid, record in list(self.children.items()):
            if record.status_fd in readable:
                self._read_status(pid, record)
        if self.observer is not None:  # --metrics-port: from the start, while waiting for Redis, and at stop
            self.observer.tick(self.children.values(), time.monotonic(), (*self.lifeline, *self._fds_to_close()),
                               self.stopping)
        while True:
            try:
                name = self.signals.get_nowait()
            except queue.Empty:
                return
            handler = getattr(self, f"handle_{name[3:].lower()}", None)
            if handler:
                handler()

    def _read_status(self, pid: int, record: ChildRecord) -> None:
        try:
            data = os.read(record.status_fd, 65536)
        except (BlockingIOError, OSError):
            return
        if data:
            for reason in record.hear(data, time.monotonic()):
                if not self.stopping:
                    self._retire(pid, record, self.config.timeout + self.config.grace, reason, signal.SIGTERM)
            return
        # End of file: the worker exited (reap reports that), or the write end was closed inside a live worker,
        # which can then never beat again.
        if not exits_soon(pid) and record.kill_at is None:
            log.error("worker %d (pid %d) closed its status pipe (a job closed the process's file descriptors?); "
                      "stopping it and starting a replacement; its jobs are recovered when it exits",
                      record.number, pid)
            self._retire(pid, record, self.config.timeout + self.config.grace, "it closed its status pipe",
                         signal.SIGTERM)
        silence(record.status_fd)

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
        self.notifier.notify(status_line(self.children, self.config.threads, self.quiet))

    handle_tstp = handle_usr1

    def handle_cont(self) -> None:
        if self.stopping:
            return  # systemd sends CONT right after TERM; a stop is not undone by it
        log.info("resuming: workers fetch again")
        self.quiet = False
        self._signal_all(signal.SIGCONT)
        self._set_title()
        self.notifier.notify(status_line(self.children, self.config.threads, self.quiet))

    def handle_hup(self) -> None:
        if self.stopping:
            return
        self.generation += 1
        self.announced = False
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                             "STATUS=reloading: starting a new generation of workers")
        log.info("rolling restart: starting generation %d, then retiring the old workers", self.generation)

    def handle_ttin(self) -> None:
        log.warning("master %d stack:\n%s", os.getpid(), "".join(traceback.format_stack(sys._getframe(1))))
        self._signal_all(signal.SIGTTIN)

    def handle_chld(self) -> None:
        pass  # reap runs on every tick

    def stop(self, grace: float, signum: int, what: str) -> None:
        self.stop_how = (grace, signum, what)
        if not self.stopping:
            log.info("%s: telling %d worker(s) to stop", what, len(self.children))
            self.notifier.notify("STOPPING=1", f"STATUS={what}")
        self.stopping = True
        self._set_title()
        for pid, record in self.children.items():
            self._retire(pid, record, grace, what, signum)

    def _signal_all(self, signum: int) -> None:
        for pid, record in self.children.items():
            if record.kill_at is None:
                kill(pid, signum)

    # -- the loop: reap, murder, manage ---------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited(pid, status)

    def _exited(self, pid: int, status: int) -> None:
        """A child was reaped: the spawner, the recoverer, the metrics exporter, a worker, or a process the
        spawner has not told about yet (kept until it does, or forgotten: one that never started)."""
        if self.spawner.owns(pid):
            self._hear_spawner()  # what it sent before it died, first: those pids are the master's children
            self.spawner.exited(status, self.stopping)
            self._asked = False
            if self.recoverer is not None:
                self.recoverer.lost()
            return
        if self.recoverer is not None and self.recoverer.owns(pid):
            self.recoverer.exited(status, self.stopping)
            return
        if self.observer is not None and self.observer.owns(pid):
            self.observer.exited(status, self.stopping)
            return
        record = self.children.pop(pid, None)
        if record is None:
            self.spawner.remember_exit(pid, status)
            return
        if self.observer is not None:  # what it wrote before it died: counts of jobs it acknowledged
            drain(record)
        os.close(record.status_fd)
        self._reaped(pid, record, status)

    def _hear_spawner(self) -> None:
        """The spawner's answers: the start-up check, and the pid (and status pipe) of each process it forked.
        A process that exited before its pid came here is reaped now."""
        for answer, fds in self.spawner.answers():
            self.spawner.settled()
            if "check" in answer:
                self.checked = answer
                continue
            if "failed" in answer:  # logged by the spawner; asked again after a pause
                if answer["failed"] == "recoverer" and self.recoverer is not None:
                    self.recoverer.lost()
                self.not_before[int(answer["number"])] = time.monotonic() + 1.0
                continue
            pid = int(answer["pid"])
            if answer["spawned"] == "worker":
                self._adopt(pid, answer, status_end(fds))
            elif self.recoverer is not None:
                self.recoverer.started(pid)
            early = self.spawner.early_exit(pid, float(answer.get("forked_at", 0.0)))
            if early is not None:
                self._exited(pid, early)

    def _reaped(self, pid: int, record: ChildRecord, status: int) -> None:
        if os.WIFSIGNALED(status):
            how, clean = f"killed by {signal.Signals(os.WTERMSIG(status)).name}", False
        else:
            code = os.WEXITSTATUS(status)
            how, clean = f"exited with status {code}", code == ExitCode.OK
            if code in (ExitCode.BOOT_ERROR, ExitCode.USAGE) and not self.stopping:
                log.error("worker %d could not %s (its error is above); stopping instead of restarting it",
                          record.number, "load the app" if code == ExitCode.BOOT_ERROR else "accept the settings")
                self.exit_code = ExitCode(code)
                self.stop(self.config.timeout + self.config.grace, signal.SIGTERM, "boot error")
        recovered = self._recover(pid, record, interrupted=not clean, reason=how)
        if self.observer is not None and not self.stopping:
            self.observer.restarted(record.reason, clean)
        lived = time.monotonic() - record.started
        if not clean and not self.stopping and not record.reason:
            crashes = self.crashes[record.number] = \
                0 if lived > STABLE_AFTER else self.crashes.get(record.number, 0) + 1
            delay = restart_delay(crashes)
            self.not_before[record.number] = time.monotonic() + delay
            log.error("worker %d (pid %d) %s after %.1fs (crash); %s; restarting%s", record.number, pid, how,
                      lived, recovered, f" in {delay:.1f}s" if delay else "")
        else:
            log.info("worker %d (pid %d) %s%s; %s", record.number, pid, how,
                     f" ({'stopped' if self.stopping else 'replaced'}: {record.reason})" if record.reason else "",
                     recovered)

    def _recover(self, pid: int, record: ChildRecord, interrupted: bool, reason: str) -> str:
        """Hand the worker's jobs to the recoverer process: no Redis I/O in the master's loop."""
        if self.recoverer is None:
            return f"{self.config.fetch} fetch: nothing to recover"
        self.recoverer.recover(Reaped(record.number, pid, record.identity, interrupted, reason))
        return "putting its jobs back"

    def manage(self) -> None:
        now = time.monotonic()
        current = [r for r in self.children.values() if r.generation == self.generation and r.kill_at is None]
        numbers = {r.number for r in current} | {n for n, g in self.spawner.pending.values() if g == self.generation}
        for number in range(1, self.config.workers + 1):
            if number not in numbers and now >= self.not_before.get(number, 0.0):
                self.spawn(number)
        generation_ready = len(current) == self.config.workers and all(r.ready for r in current)
        for pid, record in list(self.children.items()):
            if record.kill_at is None and record.generation != self.generation and generation_ready:
                self._retire(pid, record, self.config.timeout + self.config.grace, "reload (HUP)", signal.SIGTERM)
        self._check_memory()
        if generation_ready and not self.announced:
            self.announced = True
            log.info("%d worker(s) of generation %d are fetching", len(current), self.generation)
            self.notifier.notify("READY=1", status_line(self.children, self.config.threads, self.quiet))
        if self.notifier.watchdog_due(now) and healthy(self.children, now, self.config.worker_timeout):
            self.notifier.ping(now)
        if self.notifier.enabled and now >= self.next_status:
            self.next_status = now + STATUS_EVERY
            self.notifier.notify(status_line(self.children, self.config.threads, self.quiet))
        self._set_title()

    def _check_memory(self) -> None:  # --max-memory
        for pid, record, rss in over_memory(self.children, self.config.max_memory):
            self._retire(pid, record, self.config.timeout + self.config.grace,
                         f"RSS {rss:.0f} MB over --max-memory {self.config.max_memory} MB", signal.SIGTERM)

    def _fds_to_close(self) -> tuple[int, ...]:
        """The master's descriptors no other child may hold (a copy of the recoverer's task pipe's write end
        would keep the recoverer from seeing end of file at stop); the spawner's children close its own."""
        return (self._wake_r, *self.recoverer_pipe.fds, *self.spawner.fds, *self._metrics_fds(),
                *(r.status_fd for r in self.children.values()))

    def _metrics_fds(self) -> tuple[int, ...]:
        """The metrics socket and the exporter's feed (--metrics-port): no other child may hold them."""
        return self.observer.fds if self.observer is not None else ()

    def spawn(self, number: int) -> None:
        """Ask the spawner for worker `number` (it comes to `_adopt`); if the spawner is down, manage asks again."""
        self.spawner.ask(do="worker", number=number, nonce=identities.new_nonce(), generation=self.generation,
                         quiet=self.quiet)

    def _adopt(self, pid: int, answer: dict[str, Any], status_r: int) -> None:
        """A worker the spawner forked, now the master's child: recorded, and told what the daemon was told since
        it was asked for (quiet, resume, stop)."""
        record = self.children[pid] = self.spawner.record(
            pid, answer, status_r, self.observer.heard if self.observer is not None else None)
        if self.stopping and self.stop_how is not None:
            grace, signum, what = self.stop_how
            self._retire(pid, record, grace, what, signum)
        elif bool(answer["quiet"]) != self.quiet:
            kill(pid, signal.SIGTSTP if self.quiet else signal.SIGCONT)

    def _retire(self, pid: int, record: ChildRecord, grace: float, reason: str, signum: int) -> None:
        if record.kill_at is None or signum == signal.SIGQUIT:
            if record.kill_at is None and not self.stopping:
                log.info("retiring worker %d (pid %d): %s", record.number, pid, reason)
            record.kill_at = min(record.kill_at or float("inf"), time.monotonic() + grace)
            record.reason = record.reason or reason
            kill(pid, signum)

    def _set_title(self) -> None:
        state = " stopping" if self.stopping else (" quiet" if self.quiet else "")
        setproctitle.setproctitle(f"sidepunchd master [{len(self.children)} workers] "
                                  f"queues={','.join(self.queue_names)}{state}")
