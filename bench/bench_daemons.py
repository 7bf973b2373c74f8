"""Starting, watching and stopping what the benchmarks run: sidepunchd, Sidekiq processes, enqueue scripts.

Every process is started here and stopped by its pid (graceful SIGTERM, then SIGKILL after a bound), and
each daemon asks the kernel to send it SIGTERM if the harness dies (PR_SET_PDEATHSIG), so an interrupted run
leaves nothing behind. Nothing is ever stopped by name.
"""
from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

BENCH = Path(__file__).resolve().parent
RUBY_DIR = BENCH / "ruby"
SIDEKIQ_BIN = "/usr/bin/sidekiq"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0   # sidepunchd: --timeout 25 + --grace 5 + slack; Sidekiq: -t 25 + slack


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM me when the harness exits, however it exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def sidepunchd_command() -> list[str]:
    script = Path(sys.executable).parent / "sidepunchd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidepunch.server.cli"]


def stop_process(proc: subprocess.Popen, timeout: float, extra: list[psutil.Process] = (),
                 signalled: bool = False) -> None:
    """SIGTERM (unless already sent), wait up to `timeout`, then SIGKILL it and any of `extra` (its
    children) still alive."""
    if proc.poll() is None:
        if not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! pid {proc.pid} did not stop in {timeout:.0f}s; SIGKILL", file=sys.stderr)
            proc.kill()
            proc.wait()
    for child in extra:
        try:
            child.kill()   # psutil checks the pid still names the same process (create time)
        except psutil.Error:
            pass


class Daemon:
    """A running job processor: start(), wait_ready(), processes(), stop()."""

    label = "daemon"
    expected = 1   # entries it puts in Redis's `processes` set once it can fetch

    def __init__(self, redis_url: str, logdir: Path, env: dict[str, str], level: str = "info") -> None:
        self.redis_url = redis_url
        self.logdir = logdir
        # The same level for both systems: "info" (both log a start and a done line per job, their default)
        # or "warn" (no per-job lines).
        self.level = level
        self.env = dict(env, REDIS_URL=redis_url, SIDEPUNCH_LOG_LEVEL="info" if level == "info" else "warning",
                        BENCH_SIDEKIQ_LOG_LEVEL=level)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self._children: list[psutil.Process] = []

    def commands(self) -> list[list[str]]:
        raise NotImplementedError

    def start(self) -> "Daemon":
        for i, cmd in enumerate(self.commands()):
            log = self.logdir / f"{self.label}-{int(time.time() * 1000)}-{i}.log"
            self.logs.append(log)
            with open(log, "wb") as fh:
                self.procs.append(subprocess.Popen(cmd, cwd=BENCH, env=self.env, stdout=fh,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   preexec_fn=_die_with_parent))
        return self

    def wait_ready(self, r: redis.Redis, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from start until every process has registered (its first heartbeat)."""
        started = time.perf_counter()
        deadline = started + timeout
        while r.scard("processes") < self.expected:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {proc.returncode} while booting:\n"
                                       f"{self.log_tail()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.label} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.01)
        boot = time.perf_counter() - started
        self._children = self._find_children()
        return boot

    def _find_children(self) -> list[psutil.Process]:
        return []

    def processes(self) -> dict[str, list[psutil.Process]]:
        """{"master": [...], "workers": [...]} — the processes whose memory the RSS workload samples."""
        raise NotImplementedError

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            stop_process(proc, STOP_TIMEOUT, self._children, signalled=True)
        self.procs = []

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in self.logs:
            try:
                out += log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out)


class SidepunchDaemon(Daemon):
    def __init__(self, redis_url: str, logdir: Path, env: dict[str, str], workers: int, threads: int,
                 fetch: str, level: str = "info", module: str = "bench_jobs") -> None:
        super().__init__(redis_url, logdir, env, level)
        self.workers, self.threads, self.fetch, self.module = workers, threads, fetch, module
        self.expected = workers
        self.label = f"sidepunchd-{fetch}-w{workers}-{level}"

    def commands(self) -> list[list[str]]:
        return [sidepunchd_command() + ["--workers", str(self.workers), "--threads", str(self.threads),
                                        "--fetch", self.fetch, "-q", "default", "-r", self.module,
                                        "--redis-url", self.redis_url]]

    def _find_children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.procs[0].pid).children()
        except psutil.Error:
            return []

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The recoverer (the master's helper process for Redis work, which runs no jobs) is counted with
        the master: together they are what the daemon costs beside its workers."""
        master = psutil.Process(self.procs[0].pid)
        children = master.children()
        helpers = [p for p in children if _is_recoverer(p)]
        workers = [p for p in children if p not in helpers]
        return {"master": [master, *helpers], "workers": sorted(workers, key=lambda p: p.pid)}


def _is_recoverer(process: psutil.Process) -> bool:
    try:
        return "recoverer" in " ".join(process.cmdline())
    except psutil.Error:
        return False


class SidekiqDaemon(Daemon):
    """`sidekiq -c THREADS` once per worker process: Sidekiq 6 has no prefork master."""

    def __init__(self, redis_url: str, logdir: Path, env: dict[str, str], workers: int, threads: int,
                 level: str = "info") -> None:
        super().__init__(redis_url, logdir, env, level)
        self.workers, self.threads = workers, threads
        self.expected = workers
        self.label = f"sidekiq-w{workers}-{level}"

    def commands(self) -> list[list[str]]:
        return [[SIDEKIQ_BIN, "-r", str(RUBY_DIR / "jobs.rb"), "-c", str(self.threads), "-q", "default",
                 "-g", f"bench{i}"] for i in range(self.workers)]

    def processes(self) -> dict[str, list[psutil.Process]]:
        return {"master": [], "workers": [psutil.Process(p.pid) for p in self.procs]}


@dataclass
class Enqueuer:
    """Runs one system's enqueue script (bench/enqueue.py or bench/ruby/enqueue.rb) in a fresh process."""
    lang: str   # "python" or "ruby"
    env: dict[str, str]

    def __call__(self, redis_url: str, *args: object, timeout: float = 300.0) -> dict:
        if self.lang == "python":
            cmd = [sys.executable, str(BENCH / "enqueue.py")]
        else:
            cmd = ["ruby", str(RUBY_DIR / "enqueue.rb")]
        proc = subprocess.Popen(cmd + [str(a) for a in args], cwd=BENCH, env=dict(self.env, REDIS_URL=redis_url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            stop_process(proc, 5.0)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} {args} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])
