"""Job timeouts that stop the job, and cancellation of running jobs, on a ProcessorPool driven directly against a
real redis-server (threads, no fork). The process-level tests are in test_async_jobs.py."""
import json
import sys
import threading
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch.core import keys
from sidepunch.server.cancels import CancelWatcher
from conftest import join_all, make_pool, wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def enforce_until(pool, predicate, timeout, message):
    """The launcher's main loop, fast: enforce timeouts until `predicate()` holds."""
    return wait_for(lambda: pool.enforce_timeouts() or predicate(), timeout, interval=0.02, message=message)


def retry_entries(r):
    return [json.loads(raw) for raw in r.zrange("retry", 0, -1)]


def test_a_pure_python_loop_past_its_timeout_is_stopped_and_retried(r, client):
    pool, retired = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Spin, "args": [10], "timeout": 1, "retry": 3})
    pool.start()
    started = time.monotonic()
    enforce_until(pool, lambda: r.zcard("retry"), 6, "the job to be stopped")
    assert time.monotonic() - started < 5
    (entry,) = retry_entries(r)
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    assert "1s timeout" in entry["error_message"]
    client.push({"class": testjobs.Record, "args": ["next"]})  # the same thread goes on with the next job
    wait_for(lambda: r.lrange("done", 0, -1) == [b"next"] and not r.keys("working:*"), 5, message="the next job")
    assert retired == [] and pool.processors[0].thread.is_alive()
    assert r.lrange("done", 0, -1) == [b"next"]  # the stopped job never wrote its final side effect
    join_all(pool)


def test_a_job_blocked_in_a_c_call_is_escalated_and_recorded_once(r, client):
    pool, retired = make_pool(r, "--interrupt-grace", "1", app="asyncjobs")
    jid = client.push({"class": asyncjobs.Block, "args": [2.5], "timeout": 0.3, "retry": 3})
    pool.start()
    enforce_until(pool, lambda: retired, 5, "the process to retire")
    assert "did not stop" in retired[0] and r.zcard("retry") == 0  # recorded as the process exits, not before
    pool.ctx.state.stop(time.monotonic())
    pool.stop(time.monotonic())
    (entry,) = retry_entries(r)
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    assert r.keys("working:*") == [] and r.llen("queue:default") == 0
    # The C call returns; the interrupt waiting in the thread stops the job before its side effect, and the
    # abandoned thread records nothing.
    pool.processors[0].thread.join(5)
    assert not pool.processors[0].thread.is_alive()
    assert r.llen("done") == 0 and r.zcard("retry") == 1


def test_other_jobs_of_the_process_are_unaffected_by_an_interrupt(r, client):
    pool, retired = make_pool(r, "--threads", "2", app="asyncjobs")
    client.push({"class": testjobs.Sleep, "args": ["other", 1.5]})
    spin = client.push({"class": asyncjobs.Spin, "args": [10], "timeout": 0.5, "retry": 3})
    pool.start()
    enforce_until(pool, lambda: r.lrange("done", 0, -1) == [b"other"] and r.zcard("retry"), 8, "both jobs")
    assert [e["jid"] for e in retry_entries(r)] == [spin] and retired == []
    join_all(pool)


def test_timeouts_racing_with_job_ends_leave_each_job_in_exactly_one_place(r, client):
    """Interrupts sent as jobs end, over and over: an interrupt never lands in the processor's own code (the
    thread would die), and every job is recorded once: acknowledged as done, or in the retry set. (An interrupt
    that lands as perform returns stops a job after its last side effect: that job is a timeout too.)"""
    pool, retired = make_pool(r, "--threads", "2", app="asyncjobs")
    jids = [client.push({"class": asyncjobs.Spin, "args": [0.004 * (i % 5)], "timeout": 0.01, "retry": 3})
            for i in range(150)]
    pool.start()
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            for proc in pool.processors:
                proc.request_stop("timeout", time.monotonic())
    hammering = threading.Thread(target=hammer)
    hammering.start()
    try:
        wait_for(lambda: r.llen("queue:default") == 0 and not r.keys("working:*"), 30, message="the drain")
    finally:
        stop.set()
        hammering.join()
    retried = [e["jid"] for e in retry_entries(r)]
    processed, failed, _ = pool.ctx.counters.take()
    assert processed == len(jids) and failed == len(retried) == len(set(retried)) and set(retried) <= set(jids)
    ran = r.lrange("done", 0, -1)
    assert len(ran) == len(set(ran)) and 0 < len(retried) < len(jids)  # each ran once; both endings occurred
    assert all(p.thread.is_alive() for p in pool.processors) and retired == []
    join_all(pool)


def test_a_cancelled_sync_job_is_stopped_acknowledged_and_neither_retried_nor_dead(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Cooperative, "args": []})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    assert pool.running_jids() == [jid]
    assert pool.stop_job(jid) is True
    wait_for(lambda: r.lrange("on_cancel", 0, -1) == [jid.encode()], 5, message="on_cancel")
    wait_for(lambda: not r.keys("working:*"), 5, message="the acknowledgement")
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and r.llen("queue:default") == 0
    assert pool.ctx.counters.take() == (1, 0, {"cancelled": 1})
    assert pool.stop_job(jid) is False  # not running any more
    join_all(pool)


def test_the_cancel_watcher_acts_on_requests_for_running_jids_and_deletes_them(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Cooperative, "args": []})
    other = "not-running-here"
    r.set(keys.cancel_request(other), "{}", ex=60)
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    watcher = CancelWatcher(pool.ctx, pool.running_jids, pool.stop_job)
    assert watcher.check() == 0  # no request for what runs here; the other one is left alone
    r.set(keys.cancel_request(jid), json.dumps({"at": time.time()}), ex=60)
    assert watcher.check() == 1
    assert not r.exists(keys.cancel_request(jid)) and r.exists(keys.cancel_request(other))
    wait_for(lambda: r.llen("on_cancel") == 1 and not r.keys("working:*"), 5, message="the cancel")
    join_all(pool)


def test_a_timed_out_job_whose_cancel_comes_too_is_recorded_once(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Spin, "args": [10], "timeout": 0.3, "retry": 3})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    enforce_until(pool, lambda: pool.processors[0].stop_reason, 5, "the interrupt")
    pool.stop_job(jid)
    wait_for(lambda: r.zcard("retry") == 1 and not r.keys("working:*"), 5, message="the outcome")
    assert retry_entries(r)[0]["error_class"] == "sidepunch.JobTimeout"
    join_all(pool)


def test_the_main_loop_wakes_at_the_nearest_deadline_not_a_tick_later(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    assert pool.next_check() == 1.0  # nothing runs: the usual tick
    client.push({"class": asyncjobs.Spin, "args": [10], "timeout": 0.4, "retry": 3})
    pool.start()
    wait_for(lambda: pool.processors[0].deadline is not None, 5, message="the job to start")
    assert pool.next_check() <= 0.4
    enforce_until(pool, lambda: r.zcard("retry"), 5, "the timeout")
    assert pool.next_check() == 1.0
