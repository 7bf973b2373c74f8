"""Shared fixtures: a real redis-server for the whole run, a clean database per test, and `daemon`, which
runs the real sidepunchd in its own process group and always kills that group afterwards (by pid)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

import sidepunch
from sidepunch.embedded import RedisServer

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def client(r):
    return sidepunch.Client(redis=r)


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Daemon:
    """A running sidepunchd; `log()` reads what it printed so far."""

    def __init__(self, args, url, tmp_path, env=None):
        self.logfile = tmp_path / f"sidepunchd-{time.monotonic_ns()}.log"
        full_env = dict(os.environ, REDIS_URL=url, PYTHONPATH=os.pathsep.join([str(APPS), str(ROOT)]),
                        PYTHONUNBUFFERED="1")
        full_env.pop("REDIS_PROVIDER", None)
        full_env.update(env or {})
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sidepunch.cli", *args], cwd=APPS, env=full_env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def children(self):
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, n, timeout=15.0):
        return wait_for(lambda: len(self.children()) == n and self.children(), timeout,
                        message=f"{n} worker processes")

    def wait_log(self, text, timeout=15.0):
        wait_for(lambda: text in self.log(), timeout, message=f"{text!r} in the daemon log")

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait(self, timeout=40.0):
        return self.proc.wait(timeout)

    def kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def daemon(redis_server, tmp_path):
    started: list[Daemon] = []

    def start(*args, url=None, env=None):
        d = Daemon(list(args), url or redis_server.url, tmp_path, env)
        started.append(d)
        return d

    yield start
    for d in started:
        group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == d.pid]
        d.kill_group()
        for p in group:
            try:
                p.wait(5)
            except psutil.Error:
                pass


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
