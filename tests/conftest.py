"""Shared fixtures: a real redis-server for the whole run (one per pytest-xdist worker), a clean database per
test, and `daemon`, which runs the real sidepunchd in its own process group and always kills that group
afterwards (by pid)."""
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
CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember a failed test body, so fixtures can add what helps diagnose it (see `daemon`)."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.stash[CALL_FAILED] = True


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
            self.proc = subprocess.Popen([sys.executable, "-m", "sidepunch.server.cli", *args], cwd=APPS, env=full_env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def children(self):
        try:
            return [p for p in psutil.Process(self.pid).children() if not _is_recoverer(p)]
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, n, timeout=15.0):
        def counted():
            kids = self.children()  # one look: a second could see another process (a recoverer not yet titled)
            return kids if len(kids) == n else None
        return wait_for(counted, timeout, message=f"{n} worker processes")

    def wait_log(self, text, timeout=15.0):
        wait_for(lambda: text in self.log(), timeout, message=f"{text!r} in the daemon log")

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait(self, timeout=40.0):
        """The master's exit status (as Popen.returncode gives it) once it exits. The exited master is left
        unreaped until `kill_group`: while its pid is taken, no other process (another xdist worker's daemon,
        with pids wrapping at pid_max) can get that number, so the group `kill_group` kills is still ours."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # already reaped through self.proc
                return self.proc.wait(0)
            if info is not None and info.si_pid == self.pid:
                return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
            time.sleep(0.02)

    def kill_group(self, server=None):
        """SIGKILL the master's whole process group; returns once every member has died and `server` (a
        RedisServer the next test reuses) has dropped their connections. A member counts as dead once it is a
        zombie (the orphaned ones are reaped by init on its own schedule, over a second on some hosts). Redis
        may not have read the closed sockets yet: until it has, a fetch the dead worker left blocked would
        still take the next test's first job into a dead working list."""
        group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == self.pid]
        clients = _clients_of(group, server.port) if server else set()
        if self.proc.returncode is None:  # unreaped (see `wait`): the group id cannot belong to anyone else
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        elif all(p.pid != self.pid for p in group):  # reaped by the test: orphans, unless a new leader took the id
            for p in group:
                try:
                    p.kill()  # psutil refuses a pid that was reused since the snapshot
                except psutil.Error:
                    pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _wait_gone(group, server, clients, time.monotonic() + 10)


@pytest.fixture
def daemon(redis_server, tmp_path, request):
    started: list[Daemon] = []

    def start(*args, url=None, env=None):
        d = Daemon(list(args), url or redis_server.url, tmp_path, env)
        started.append(d)
        return d

    yield start
    failed = request.node.stash.get(CALL_FAILED, False)
    if failed and started:  # shown with the failure: what was in Redis and what the daemons saw
        _print_redis(redis_server)
    for d in started:
        d.kill_group(redis_server)
        if failed:
            print(f"--- {d.logfile.name} (sidepunchd {' '.join(d.proc.args[3:])}), last 60 lines:")
            print("\n".join(d.log().splitlines()[-60:]))


@pytest.fixture
def cli(redis_server, r, capsys, monkeypatch):
    """cli(*argv) -> (status, stdout, stderr) of the `sidepunch` command, against the test server; any
    exception escaping main(), or a traceback or a second line on stderr, fails the test."""
    from sidepunch.admin import command
    monkeypatch.delenv("REDIS_PROVIDER", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)

    def run(*argv, url=redis_server.url):
        status = command.main([*argv, "--redis-url", url] if url else list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in err and err.count("\n") <= 1, err
        return status, out, err
    return run


def _is_recoverer(process):
    """Any child of the master but a worker: the recoverer, the spawner, the master's short-lived URL check
    (they run no jobs); tests count worker processes, which are titled from their fork (server/spawner.py)."""
    try:
        return not " ".join(process.cmdline()).startswith("sidepunch worker")
    except psutil.Error:  # gone, or a zombie not reaped yet (the URL check child that just exited): not a worker
        return True


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _wait_gone(processes, server, clients, deadline):
    """Until the processes are dead (zombies count) and `server` no longer lists their connections."""
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    if clients:
        with redis.Redis(host="127.0.0.1", port=server.port) as probe:
            while clients & {c["addr"] for c in probe.client_list()} and time.monotonic() < deadline:
                time.sleep(0.02)


def _clients_of(processes, port):
    """The "ip:port" addresses, as Redis's CLIENT LIST shows them, of the processes' connections to `port`."""
    found = set()
    for p in processes:
        try:
            connections = p.net_connections("inet") if hasattr(p, "net_connections") else p.connections("inet")
            found |= {f"{c.laddr.ip}:{c.laddr.port}" for c in connections if c.raddr and c.raddr.port == port}
        except psutil.Error:
            pass
    return found


def _print_redis(server):
    try:
        with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as probe:
            print("--- redis clients:")
            for c in probe.client_list():
                print(f"  {c['addr']} cmd={c['cmd']} flags={c['flags']} age={c['age']} idle={c['idle']}")
            print("--- redis keys (db 0):")
            for key in sorted(probe.scan_iter(count=1000))[:100]:
                kind = probe.type(key).decode()
                size = {"list": probe.llen, "zset": probe.zcard, "set": probe.scard, "hash": probe.hlen}.get(kind)
                print(f"  {key!r} {kind} {size(key) if size else ''}")
    except redis.RedisError as exc:
        print(f"--- redis not readable: {exc}")


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie; psutil checks the start time, so a reused pid does not count."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_processor(r, app, identity, middleware=(), deaths=(), fetch="reliable", features=None):
    """A Processor over the real test Redis for `app` (a module in tests/apps), with a fixed rng and no outage
    settling, for tests that call Processor.process directly."""
    import logging
    import random

    from sidepunch.core.connection import Outage
    from sidepunch.server.config import build_config
    from sidepunch.server.fetch import BasicFetch, ReliableFetch
    from sidepunch.server.processor import Processor
    from sidepunch.server.resolver import JobResolver
    from sidepunch.server.retry import DeadSet, RetryPolicy
    from sidepunch.server.state import ChildContext, LifecycleState
    from sidepunch.features import FeatureSet

    features = features or FeatureSet()
    config = build_config(["-r", app, "--fetch", fetch], {"REDIS_URL": "redis://unused"})
    fetch_class = ReliableFetch if fetch == "reliable" else BasicFetch
    retry = RetryPolicy(r, DeadSet(config.dead_max_jobs, config.dead_timeout), config.max_retries,
                        fetch_class.ack_into, death_handlers=deaths, rng=random.Random(1), features=features)
    ctx = ChildContext(redis=r, config=config, identity=identity, state=LifecycleState(),
                       outage=Outage("redis://x", logging.getLogger("test.outage"), settle=0.0),
                       resolver=JobResolver([app]), retry=retry, server_middleware=tuple(middleware),
                       features=features)
    if fetch == "basic":
        return Processor(0, ctx, BasicFetch(r, config.queues, random.Random(1)))
    return Processor(0, ctx, ReliableFetch(r, config.queues, random.Random(1), identity, 0, 0, batch=1))



def make_pool(r, *args, fetcher=None, app="testjobs", async_chain=()):
    """A ProcessorPool of worker 1 over the real test Redis (threads, no fork); returns (pool, retire reasons)."""
    import logging
    import random

    from sidepunch.core.connection import Outage
    from sidepunch.server.config import build_config
    from sidepunch.server.fetch import fetcher_class
    from sidepunch.server.pool import ProcessorPool
    from sidepunch.server.resolver import JobResolver
    from sidepunch.server.retry import DeadSet, RetryPolicy
    from sidepunch.server.state import ChildContext, LifecycleState

    config = build_config(["-r", app, "--threads", "1", *args], {"REDIS_URL": "redis://unused"})
    fetcher = fetcher or fetcher_class(config)
    retry = RetryPolicy(r, DeadSet(config.dead_max_jobs, config.dead_timeout), config.max_retries,
                        fetcher.ack_into, rng=random.Random(1))
    ctx = ChildContext(redis=r, config=config, identity="testhost:1234:abcdefabcdef", state=LifecycleState(),
                       outage=Outage("redis://x", logging.getLogger("test")), resolver=JobResolver([app]),
                       retry=retry)
    retired: list[str] = []
    pool = ProcessorPool(ctx, fetcher, 1, retire=retired.append, async_chain=async_chain)
    _POOLS.append(pool)
    return pool, retired


_POOLS: list = []  # pools the running test made; stopped after it, even if it failed half-way


@pytest.fixture(autouse=True)
def _stop_pools():
    yield
    while _POOLS:
        pool = _POOLS.pop()
        pool.ctx.state.stop(time.monotonic())
        for proc in pool.processors:
            if proc.thread is not None and not proc.abandoned:
                proc.thread.join(10)
        pool.runner.close(5)


def join_all(pool, timeout=10.0):
    """Let every thread the test started end before the next test flushes Redis."""
    pool.ctx.state.stop(time.monotonic())
    for proc in pool.processors:
        proc.thread.join(timeout)
        assert not proc.thread.is_alive()
    pool.runner.close(timeout)
