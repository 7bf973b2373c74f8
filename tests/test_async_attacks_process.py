"""Attacks on the issue-11 worker on the real sidepunchd (fork, signals, a real redis-server): QUIT in a heavy
async drain, SIGKILL of a worker with hundreds of async jobs in flight, a Redis restart in an async drain. Each
checks that every job ends in exactly one place, once, and that the daemon logs no traceback."""
import collections
import signal
import sys
import time
from pathlib import Path

import pytest
import redis

import sidepunch
from sidepunch.embedded import RedisServer, free_port
from conftest import wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def runs(r, jids):
    return [int(r.get(f"runs:{jid}") or 0) for jid in jids]


def test_quit_in_a_heavy_async_drain_requeues_the_rest_and_nothing_runs_twice(daemon, r, client):
    jids = [client.push({"class": asyncjobs.Nap, "args": [0.5 + (i % 4)]}) for i in range(800)]
    d = daemon("--workers", "1", "--threads", "2", "--async-concurrency", "400", "-r", "asyncjobs")
    wait_for(lambda: r.scard("ran") >= 100, 30, interval=0.02, message="100 naps done")
    d.signal(signal.SIGQUIT)
    assert d.wait() == 0
    finished = r.scard("ran")
    assert finished < 800 and not r.keys("working:*") and r.zcard("retry") == 0
    # The rest is back in its queue, none lost. A job the stop took while its body was between its two writes
    # (`ran`, then `runs:<jid>`) is in both: it was still running, so it is requeued (at-least-once); that none
    # ran its body to the end twice is checked below (every `runs:<jid>` is 1 after the rerun).
    assert finished + r.llen("queue:default") >= 800
    again = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    wait_for(lambda: r.scard("ran") == 800 and not r.keys("working:*"), 40, message="the rest")
    assert runs(r, jids) == [1] * 800
    again.signal(signal.SIGTERM)
    assert again.wait() == 0
    assert int(r.get("stat:processed")) == 800 and int(r.get("stat:failed") or 0) == 0
    for log in (d.log(), again.log()):
        assert "Traceback" not in log and "died" not in log


def test_sigkill_of_a_worker_with_hundreds_of_async_jobs_in_flight_loses_none(daemon, r, client):
    jids = [client.push({"class": asyncjobs.Nap, "args": [4]}) for _ in range(400)]
    d = daemon("--workers", "1", "--threads", "2", "--async-concurrency", "500", "-r", "asyncjobs")
    (worker,) = d.wait_children(1)
    wait_for(lambda: r.scard("began") >= 300, 20, interval=0.02, message="300 naps in flight")
    worker.kill()
    assert r.scard("ran") == 0  # none had finished: the master's recovery must put back every one
    wait_for(lambda: r.scard("ran") == 400 and not r.keys("working:*"), 60, message="every job after the kill")
    assert runs(r, jids) == [1] * 400
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert "Traceback" not in d.log()


@pytest.fixture
def restartable_redis(tmp_path):
    port = free_port()
    servers = [RedisServer(port=port, directory=str(tmp_path), appendonly=True).start()]
    yield servers
    for s in servers:
        s.stop(cleanup=False)


def _loaded(r):
    """Whether a just restarted Redis answers (it refuses commands with LOADING while it reads its AOF)."""
    try:
        return r.ping()
    except redis.BusyLoadingError:
        return False


def test_a_redis_restart_in_an_async_drain_loses_nothing_and_logs_no_flood(daemon, restartable_redis, tmp_path):
    server = restartable_redis[0]
    r = redis.Redis.from_url(server.url)
    sidepunch.configure(redis=r)
    values = [str(i) for i in range(3000)]
    sidepunch.Client(redis=r).push_bulk({"class": asyncjobs.ResilientNap, "args": [[v, 1.0] for v in values]})
    d = daemon("--workers", "2", "--threads", "2", "--async-concurrency", "300", "-r", "asyncjobs", url=server.url)
    wait_for(lambda: r.llen("done") > 300, 30, message="some progress")
    server.stop(cleanup=False)
    time.sleep(3)
    restartable_redis.append(RedisServer(port=server.port, directory=str(tmp_path), appendonly=True).start())
    r = redis.Redis.from_url(server.url)
    wait_for(lambda: _loaded(r), 30, message="the restarted Redis to load its append-only file")
    wait_for(lambda: len(set(r.lrange("done", 0, -1))) == len(values) and not r.keys("working:*"), 90,
             message="every job")
    done = collections.Counter(r.lrange("done", 0, -1))
    print(f"\nasync drain through a Redis restart: duplicates {sum(n - 1 for n in done.values())}")
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and d.proc.poll() is None
    log = d.log()
    assert "died" not in log and "could not" not in log and log.count("Traceback") == 0


def test_many_sync_jobs_interrupted_on_the_real_daemon_never_kill_a_thread(daemon, r, client):
    import testjobs
    for i in range(40):
        cls = asyncjobs.Spin if i % 2 else asyncjobs.RedisChatty
        client.push({"class": cls, "args": [30] if i % 2 else [], "timeout": 0.1, "retry": False})
    d = daemon("--workers", "1", "--threads", "4", "--interrupt-grace", "1", "-r", "asyncjobs")
    wait_for(lambda: r.llen("queue:default") == 0 and not r.keys("working:*"), 60, message="40 stopped jobs")
    values = [str(i) for i in range(100)]
    for v in values:
        client.push({"class": testjobs.Record, "args": [v]})
    wait_for(lambda: r.llen("done") == 100 and not r.keys("working:*"), 20, message="the next jobs")
    assert r.llen("crosstalk") == 0 and len(d.children()) == 1
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    log = d.log()
    assert "died" not in log and "Traceback" not in log and "retiring" not in log
    assert int(r.get("stat:failed")) == 40 and int(r.get("stat:processed")) == 140
