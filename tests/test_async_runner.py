"""Async jobs on a ProcessorPool's event loop, driven directly against a real redis-server (threads, no fork):
concurrency beyond --threads, outcomes, middleware, results, cancellation, timeouts and the stop deadline."""
import json
import sys
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch.core import keys
from conftest import join_all, make_pool, wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def drained(r):
    return r.llen("queue:default") == 0 and not r.keys("working:*")


def test_async_jobs_run_many_at_once_on_one_thread_each_exactly_once(r, client):
    pool, _ = make_pool(r, app="asyncjobs")  # --threads 1
    jids = [client.push({"class": asyncjobs.Nap, "args": [1.0]}) for _ in range(200)]
    pool.start()
    started = time.monotonic()
    wait_for(lambda: r.scard("ran") == 200 and drained(r), 15, message="200 naps")
    assert time.monotonic() - started < 6  # 200 one-second naps at once, not one after another
    assert all(r.get(f"runs:{jid}") == b"1" for jid in jids)
    assert pool.ctx.counters.take()[:2] == (200, 0)
    join_all(pool)


def test_in_flight_async_jobs_are_bounded_by_async_concurrency(r, client):
    pool, _ = make_pool(r, "--async-concurrency", "5", app="asyncjobs")
    for _ in range(20):
        client.push({"class": asyncjobs.Nap, "args": [0.5]})
    pool.start()
    peak = 0
    deadline = time.monotonic() + 15
    while r.scard("ran") < 20 and time.monotonic() < deadline:
        peak = max(peak, len(pool.ctx.work))
        time.sleep(0.01)
    assert r.scard("ran") == 20 and 1 <= peak <= 5 + 1  # 5 on the loop, at most one more being handed over
    join_all(pool)


def test_sync_and_async_jobs_share_a_queue(r, client):
    pool, _ = make_pool(r, "--threads", "2", app="asyncjobs")
    client.push({"class": asyncjobs.nap_function, "args": [0.2]})
    client.push({"class": testjobs.Record, "args": ["sync"]})
    pool.start()
    wait_for(lambda: sorted(r.lrange("done", 0, -1)) == [b"nap_function 0.2", b"sync"] and drained(r), 10,
             message="both jobs")
    join_all(pool)


def test_a_failing_async_job_goes_to_the_retry_set(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.AsyncFails, "args": []})
    pool.start()
    wait_for(lambda: r.zcard("retry") == 1 and drained(r), 10, message="the retry entry")
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and entry["error_class"] == "ValueError" and entry["retry"] == 2
    assert pool.ctx.counters.take()[:2] == (1, 1)
    join_all(pool)


def test_an_async_job_past_its_timeout_is_cancelled_and_retried(r, client):
    pool, retired = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Nap, "args": [30], "timeout": 0.3, "retry": 3})
    pool.start()
    wait_for(lambda: r.zcard("retry") == 1 and drained(r), 10, message="the timeout")
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    assert not r.sismember("ran", jid) and retired == []
    join_all(pool)


def test_an_async_job_that_blocks_the_loop_is_escalated_and_recorded_once(r, client):
    pool, retired = make_pool(r, "--interrupt-grace", "1", app="asyncjobs")
    jid = client.push({"class": asyncjobs.AsyncStubborn, "args": [1.5], "timeout": 0.2, "retry": 3})
    pool.start()
    wait_for(lambda: pool.enforce_timeouts() or retired, 10, interval=0.02, message="the escalation")
    assert r.zcard("retry") == 0
    pool.ctx.state.stop(time.monotonic())
    pool.stop(time.monotonic())
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    time.sleep(1.5)  # the sync call returns inside the stopping loop; nothing more is recorded
    assert r.zcard("retry") == 1 and not r.keys("working:*")


def test_async_middleware_wraps_async_jobs_and_sync_middleware_sync_ones(r, client):
    seen = []

    class Both(sidepunch.Middleware):
        def around_perform(self, instance, job, queue, call_next):
            seen.append(("sync", job["class"]))
            return call_next()

        async def around_perform_async(self, instance, job, queue, call_next):
            seen.append(("async", job["class"]))
            result = await call_next()
            seen.append(("async after", job["class"]))
            return result
    mw = Both(None)
    pool, _ = make_pool(r, "--threads", "2", app="asyncjobs", async_chain=(mw.around_perform_async,))
    pool.ctx.server_middleware = (mw.around_perform,)
    client.push({"class": asyncjobs.Nap, "args": [0.1]})
    client.push({"class": testjobs.Record, "args": ["x"]})
    pool.start()
    wait_for(lambda: r.scard("ran") == 1 and r.llen("done") == 1 and drained(r), 10, message="both jobs")
    assert sorted(seen) == [("async", "asyncjobs.Nap"), ("async after", "asyncjobs.Nap"),
                            ("sync", "testjobs.Record")]
    join_all(pool)


def test_an_async_middleware_can_reschedule(r, client):
    async def later(instance, job, queue, call_next):
        raise sidepunch.Reschedule(60)
    pool, _ = make_pool(r, app="asyncjobs", async_chain=(later,))
    client.push({"class": asyncjobs.Nap, "args": [0.1]})
    pool.start()
    wait_for(lambda: r.zcard("schedule") == 1 and drained(r), 10, message="the reschedule")
    assert r.scard("ran") == 0 and r.zcard("retry") == 0
    join_all(pool)


@pytest.mark.parametrize("job_class, args, expected", [
    (asyncjobs.AsyncKeeps, [2, 3], {"sum": 5}),
    (asyncjobs.SyncKeeps, ["v"], ["v", "v"]),
])
def test_a_class_with_keep_result_keeps_its_return_value(r, client, job_class, args, expected):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": job_class, "args": args})
    pool.start()
    wait_for(lambda: r.exists(keys.result(jid)) and drained(r), 10, message="the result")
    record = json.loads(r.get(keys.result(jid)))
    assert record["result"] == expected and record["jid"] == jid and 0 < r.ttl(keys.result(jid)) <= 60
    join_all(pool)


def test_a_result_that_is_not_json_is_recorded_as_an_error_and_the_job_is_done(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.SyncKeeps, "args": ["not json"]})
    client.push({"class": testjobs.Record, "args": ["plain"]})
    pool.start()
    wait_for(lambda: r.llen("done") == 1 and drained(r), 10, message="both jobs")
    assert "not JSON" in json.loads(r.get(keys.result(jid)))["error"]
    assert r.zcard("retry") == 0 and r.keys(keys.RESULT_PREFIX + "*") == [keys.result(jid).encode()]
    join_all(pool)


def test_a_plain_def_perform_returning_an_awaitable_fails_clearly(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    client.push({"class": asyncjobs.AwaitableFromPlainDef, "args": []})
    pool.start()
    wait_for(lambda: r.zcard("retry") == 1 and drained(r), 10, message="the failure")
    entry = json.loads(r.zrange("retry", 0, -1)[0])
    assert "async def" in entry["error_message"] and entry["error_class"].endswith("BadJob")
    join_all(pool)


def test_a_cancelled_async_job_is_stopped_and_its_async_on_cancel_runs(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.AsyncForever, "args": []})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    assert pool.running_jids() == [jid] and pool.stop_job(jid) is True
    wait_for(lambda: r.lrange("on_cancel", 0, -1) == [jid.encode()] and drained(r), 5, message="the cancel")
    assert r.zcard("retry") == r.zcard("dead") == r.llen("done") == 0
    assert pool.ctx.counters.take() == (1, 0, {"cancelled": 1})
    join_all(pool)


def test_at_the_stop_deadline_running_async_jobs_are_requeued_unchanged(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    raws = set()
    for _ in range(20):
        client.push({"class": asyncjobs.Nap, "args": [30]})
    raws = set(r.lrange("queue:default", 0, -1))
    pool.start()
    wait_for(lambda: r.scard("began") == 20, 10, message="20 naps to start")
    deadline = time.monotonic() + 0.3
    pool.ctx.state.stop(deadline)
    pool.stop(deadline)
    assert set(r.lrange("queue:default", 0, -1)) == raws and not r.keys("working:*")
    assert r.zcard("retry") == 0 and pool.ctx.counters.take()[:2] == (0, 0) and len(pool.ctx.work) == 0
