"""Reliable fetch under fire: random SIGKILLs, a killed master, a dead host, a Redis restart.

Each test asserts that every job completed at least once and prints how many ran twice.
"""
import collections
import os
import random
import signal
import sys
import time

import pytest
import redis

import sidepunch
from sidepunch.embedded import RedisServer, free_port
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402


def report(r, expected, label):
    done = collections.Counter(v.decode() for v in r.lrange("done", 0, -1))
    lost = set(expected) - set(done)
    duplicates = sum(n - 1 for n in done.values())
    print(f"\n{label}: {len(expected)} jobs, lost {len(lost)}, duplicates {duplicates}")
    assert not lost, f"{len(lost)} jobs lost, e.g. {sorted(lost)[:5]}"
    return duplicates


def test_random_sigkills_lose_nothing(daemon, r, client):
    values = [str(i) for i in range(6000)]
    client.push_bulk({"class": testjobs.Chaos, "args": [[v] for v in values]})
    d = daemon("--workers", "2", "--threads", "5", "-r", "testjobs", "--max-interruptions", "1000")
    d.wait_children(2)
    rng = random.Random(42)
    kills = 0
    deadline = time.monotonic() + 90
    while r.llen("done") < len(values) * 0.9 and time.monotonic() < deadline and kills < 40:
        time.sleep(rng.uniform(0.2, 0.5))
        children = d.children()
        if len(children) == 2:
            os.kill(rng.choice(children).pid, signal.SIGKILL)
            kills += 1
    assert kills >= 10
    wait_for(lambda: len(set(r.lrange("done", 0, -1))) == len(values), 90, message="every job to complete")
    report(r, values, f"chaos ({kills} SIGKILLs)")
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
    assert r.keys("working:*") == [] and r.zcard("dead") == 0


def test_killed_master_then_new_master_loses_nothing(daemon, r, client):
    values = [str(i) for i in range(2000)]
    client.push_bulk({"class": testjobs.Chaos, "args": [[v] for v in values]})
    first = daemon("--workers", "2", "--threads", "5", "-r", "testjobs")
    children = first.wait_children(2)
    wait_for(lambda: r.llen("done") > 300, 30, message="some progress")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: not any(c.is_running() and c.status() != "zombie" for c in children), 30,
             message="orphaned workers to stop")
    second = daemon("--workers", "2", "--threads", "5", "-r", "testjobs")
    second.wait_children(2)
    wait_for(lambda: len(set(r.lrange("done", 0, -1))) == len(values), 60, message="every job to complete")
    report(r, values, "master SIGKILL + restart")
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0 and r.keys("working:*") == []


def test_dead_host_is_recovered_once_by_one_of_the_survivors(daemon, r, client):
    values = [f"h{i}" for i in range(4)]
    client.push_bulk({"class": testjobs.Sleep, "args": [[v, 4] for v in values]})
    doomed = daemon("--workers", "1", "--threads", "4", "-r", "testjobs")
    wait_for(lambda: r.llen("started") == 4, 15, message="the doomed host to take all jobs")
    survivors = [daemon("--workers", "1", "--threads", "4", "-r", "testjobs") for _ in range(2)]
    for s in survivors:
        s.wait_children(1)
    killed_at = time.monotonic()
    os.killpg(doomed.pid, signal.SIGKILL)  # the whole host: master and workers at once
    doomed.wait(10)
    assert sum(r.llen(k) for k in r.keys("working:*")) == 4  # its jobs are stranded in its working lists
    wait_for(lambda: r.llen("started") == 8, 60, interval=0.2, message="the dead host's jobs to restart")
    recovery = time.monotonic() - killed_at
    print(f"\nhost death: jobs restarted {recovery:.1f}s after the kill")
    assert recovery <= 60
    wait_for(lambda: r.llen("done") == 4, 15, message="recovered jobs to finish")
    starts = collections.Counter(v.decode() for v in r.lrange("started", 0, -1))
    assert starts == {v: 2 for v in values}  # requeued exactly once, whichever survivor swept
    assert "recovered 4 job(s)" in "".join(s.log() for s in survivors)


@pytest.fixture
def restartable_redis(tmp_path):
    port = free_port()
    servers = [RedisServer(port=port, directory=str(tmp_path), appendonly=True).start()]
    yield servers
    for s in servers:
        s.stop(cleanup=False)


def test_redis_restart_under_load(daemon, restartable_redis, tmp_path):
    server = restartable_redis[0]
    r = redis.Redis.from_url(server.url)
    client = sidepunch.Client(redis=r)
    values = [str(i) for i in range(3000)]
    client.push_bulk({"class": testjobs.ResilientRecord, "args": [[v] for v in values]})
    d = daemon("--workers", "2", "--threads", "5", "-r", "testjobs", "--poll-interval", "1", url=server.url)
    d.wait_children(2)
    wait_for(lambda: r.llen("done") > 300, 30, message="some progress")
    server.stop(cleanup=False)
    time.sleep(3)
    restartable_redis.append(RedisServer(port=server.port, directory=str(tmp_path), appendonly=True).start())
    r = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: len(set(r.lrange("done", 0, -1))) == len(values), 90, message="every job to complete")
    except AssertionError:
        missing = set(values) - {v.decode() for v in r.lrange("done", 0, -1)}
        print("MISSING", len(missing), sorted(missing, key=int)[:10])
        for key in r.keys("*"):
            t = r.type(key)
            print(key, t, r.llen(key) if t == b"list" else r.zcard(key) if t == b"zset" else "")
        print(d.log()[-5000:])
        raise
    report(r, values, "Redis restart")
    assert d.proc.poll() is None
    # An outage is over once commands have worked for a few seconds (connection.SETTLE), then it is logged.
    wait_for(lambda: "reachable again" in d.log(), 20, message="the end of the outage in the log")
    log = d.log()
    # One line per process per outage (master and two workers), not one per thread per retry.
    assert 1 <= log.count("cannot reach Redis") <= 3
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
    assert r.keys("working:*") == []
