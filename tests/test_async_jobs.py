"""Issue 11 on the real sidepunchd (fork, signals, a real redis-server): async jobs, the TERM deadline with async
jobs in flight, timeouts that stop the job, cancellation through Redis, status and results by jid."""
import json
import signal
import sys
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch import api
from sidepunch.core import keys
from conftest import wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402


@pytest.fixture(autouse=True)
def configured(r):
    sidepunch.configure(redis=r)


def runs(r, jids):
    return [int(r.get(f"runs:{jid}") or 0) for jid in jids]


def test_one_worker_with_two_threads_runs_500_one_second_async_jobs_at_once(daemon, r, client):
    jids = [client.push({"class": asyncjobs.Nap, "args": [1]}) for _ in range(500)]
    d = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    d.wait_children(1)
    first = wait_for(lambda: r.scard("began") and time.monotonic(), 15, interval=0.01, message="the first job")
    wait_for(lambda: r.scard("ran") == 500, 15, interval=0.05, message="500 naps")
    assert time.monotonic() - first < 6  # each waits one second: together, not 500 seconds one after another
    assert runs(r, jids) == [1] * 500
    wait_for(lambda: not r.keys("working:*"), 5, message="the acknowledgements")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert int(r.get("stat:processed")) == 500 and int(r.get("stat:failed") or 0) == 0


def test_term_requeues_unfinished_async_jobs_and_a_new_daemon_finishes_them(daemon, r, client):
    jids = [client.push({"class": asyncjobs.Nap, "args": [1 + (i % 3) * 2]}) for i in range(500)]
    d = daemon("--workers", "1", "--threads", "2", "--async-concurrency", "300", "--timeout", "2",
               "-r", "asyncjobs")
    wait_for(lambda: r.scard("began") >= 300, 20, message="300 naps to start")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    finished = r.scard("ran")
    assert 0 < finished < 500 and not r.keys("working:*")
    assert finished + r.llen("queue:default") == 500  # every unfinished job is back in its queue
    assert "requeueing" in d.log()
    again = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    wait_for(lambda: r.scard("ran") == 500, 30, message="the rest")
    assert runs(r, jids) == [1] * 500  # none lost, none run twice
    again.signal(signal.SIGTERM)
    assert again.wait() == 0
    assert int(r.get("stat:processed")) == 500


def test_a_timed_out_pure_python_job_is_stopped_and_the_worker_keeps_running(daemon, r, client):
    jid = client.push({"class": asyncjobs.Spin, "args": [10], "timeout": 1, "retry": 3})
    d = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    (worker,) = d.wait_children(1)
    wait_for(lambda: r.zcard("retry") == 1, 8, message="the retry entry")
    entry = json.loads(r.zrange("retry", 0, -1)[0])
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    client.push({"class": testjobs.Record, "args": ["after"]})
    wait_for(lambda: r.lrange("done", 0, -1) == [b"after"], 5, message="the next job")
    assert [c.pid for c in d.children()] == [worker.pid] and "retiring" not in d.log()
    assert r.lrange("done", 0, -1) == [b"after"]  # the stopped job never wrote its side effect


def test_a_job_blocked_in_a_c_call_retires_its_worker_and_is_recorded_once(daemon, r, client):
    blocked = client.push({"class": asyncjobs.Block, "args": [20], "timeout": 1, "retry": 3})
    neighbour = client.push({"class": asyncjobs.Spin, "args": [3]})
    d = daemon("--workers", "1", "--threads", "2", "--interrupt-grace", "1", "--timeout", "8", "-r", "asyncjobs")
    (worker,) = d.wait_children(1)
    wait_for(lambda: r.scard("began") == 2, 10, message="both jobs to start")
    d.wait_log("retiring", 10)
    wait_for(lambda: r.zcard("retry") == 1, 15, message="the blocked job's record")
    entry = json.loads(r.zrange("retry", 0, -1)[0])
    assert entry["jid"] == blocked and entry["error_class"] == "sidepunch.JobTimeout"
    assert "interrupted_count" not in entry
    assert r.lrange("done", 0, -1) == [neighbour.encode()]  # its neighbour finished, untouched
    wait_for(lambda: worker.pid not in [c.pid for c in d.children()] and len(d.children()) == 1, 15,
             message="a replacement worker")
    time.sleep(1)
    assert r.zcard("retry") == 1 and r.llen("queue:default") == 0 and not r.keys("working:*")


def test_cancel_through_the_api_stops_running_sync_and_async_jobs_on_the_daemon(daemon, r, client):
    sync_jid = client.push({"class": asyncjobs.Cooperative, "args": []})
    async_jid = client.push({"class": asyncjobs.AsyncForever, "args": []})
    d = daemon("--workers", "1", "--threads", "3", "-r", "asyncjobs")
    wait_for(lambda: r.scard("began") == 2, 10, message="both jobs to start")
    queued = client.push({"class": testjobs.Record, "args": ["never"], "at": time.time() + 3600})
    assert api.status(queued, redis=r) == "scheduled" and api.cancel(queued, redis=r) == "removed"
    assert api.status(sync_jid, redis=r) == "running"
    assert api.cancel(sync_jid, redis=r) == "signalled" and api.cancel(async_jid, redis=r) == "signalled"
    wait_for(lambda: set(r.lrange("on_cancel", 0, -1)) == {sync_jid.encode(), async_jid.encode()}, 5,
             message="both jobs to stop")
    wait_for(lambda: not r.keys("working:*") and not r.keys(keys.CANCEL_PREFIX + "*"), 5,
             message="acknowledged, requests consumed")
    assert r.zcard("retry") == r.zcard("dead") == r.zcard("schedule") == 0 and r.llen("done") == 0
    assert api.cancel(sync_jid, redis=r) == "not_found" and api.status(async_jid, redis=r) == "unknown"
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert int(r.get(keys.STAT_CANCELLED)) == 2 and int(r.get("stat:failed") or 0) == 0
    assert "cancelled asyncjobs.Cooperative" in d.log()


def test_results_by_jid_from_the_daemon(daemon, r, client):
    kept = client.push({"class": asyncjobs.AsyncKeeps, "args": [20, 22]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    assert api.result(kept, timeout=15, redis=r) == {"sum": 42}
    assert api.status(kept, redis=r) == "done"
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


def test_ttin_dump_shows_running_async_tasks(daemon, r, client):
    client.push({"class": asyncjobs.Nap, "args": [30]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "asyncjobs")
    wait_for(lambda: r.scard("began") == 1, 10, message="the job to start")
    d.signal(signal.SIGTTIN)
    d.wait_log("thread dump", 5)
    wait_for(lambda: "Async job a1" in d.log() and "asyncjobs.py" in d.log(), 5, message="the task's stack")
    assert "Thread asyncio" in d.log()
