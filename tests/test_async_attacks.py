"""Attacks on the issue-11 worker (async jobs, timeouts, cancellation): hostile jobs, hooks and races, each
checked for "every fetched job ends in exactly one visible place, once, and the worker keeps going". Pool-level
tests drive a ProcessorPool against a real redis-server (threads, no fork); process-level ones run sidepunchd."""
import json
import logging
import sys
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
    return wait_for(lambda: pool.enforce_timeouts() or predicate(), timeout, interval=0.01, message=message)


def runs(r, jids):
    return [int(r.get(f"runs:{jid}") or 0) for jid in jids]


def drained(r):
    return r.llen("queue:default") == 0 and not r.keys("working:*")


def test_interrupts_landing_inside_logging_never_leave_a_logging_lock_held(r, client):
    chat = logging.getLogger("asyncjobs.chatty")
    handler = logging.StreamHandler(open("/dev/null", "w"))
    chat.addHandler(handler)
    chat.propagate = False
    try:
        pool, retired = make_pool(r, "--threads", "2", app="asyncjobs")
        for _ in range(150):
            client.push({"class": asyncjobs.Chatty, "args": [], "timeout": 0.02, "retry": False})
        pool.start()
        # One leaked lock stalls every other thread at its next log line: the dead set would stop growing.
        enforce_until(pool, lambda: pool.ctx.counters.total_processed == 150 and drained(r), 30,
                      "150 interrupted jobs")
        assert pool.ctx.counters.take()[:2] == (150, 150)
        assert retired == [] and all(p.thread.is_alive() for p in pool.processors)
        assert handler.lock.acquire(timeout=1)  # no processor thread kept it
        handler.lock.release()
        join_all(pool)
    finally:
        chat.removeHandler(handler)
        chat.propagate = True
        handler.stream.close()


BAD_KEEPS = ["an hour", -5, 1.5, True, 10 ** 30, [60], None, 0]


def test_a_keep_result_the_job_spoils_never_kills_its_thread_and_the_job_is_done_once(r, client):
    pool, retired = make_pool(r, app="asyncjobs")
    jids = [client.push({"class": asyncjobs.KeepsBadly, "args": [keep]}) for keep in BAD_KEEPS]
    jids.append(client.push({"class": asyncjobs.KeepsBadly, "args": [30]}))  # a good one still keeps its result
    pool.start()
    wait_for(lambda: pool.ctx.counters.total_processed == len(jids) and drained(r), 10, message="every job")
    assert [int(r.get(f"runs:{jid}")) for jid in jids] == [1] * len(jids)
    assert pool.ctx.counters.take()[:2] == (len(jids), 0)
    assert [r.exists(keys.result(jid)) for jid in jids] == [0] * len(BAD_KEEPS) + [1]
    assert pool.processors[0].thread.is_alive() and retired == []
    join_all(pool)


def test_one_async_job_that_cannot_be_recorded_spoils_nothing_for_the_others_of_its_batch(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    naps = [client.push({"class": asyncjobs.Nap, "args": [0.3]}) for _ in range(100)]
    bad = [client.push({"class": asyncjobs.AsyncKeepsBadly, "args": [keep]}) for keep in BAD_KEEPS]
    pool.start()
    total = len(naps) + len(bad)
    # Unacknowledged jobs would run again when this process exits: every one must be acknowledged now.
    wait_for(lambda: pool.ctx.counters.total_processed == total and drained(r), 15, message="every job")
    assert pool.ctx.counters.take()[:2] == (total, 0)
    assert [int(r.get(f"runs:{jid}")) for jid in naps + bad] == [1] * total
    join_all(pool)


def test_a_kept_result_whose_encoding_raises_is_kept_as_an_error_and_the_job_is_done(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.AsyncKeepsHostile, "args": []})
    pool.start()
    wait_for(lambda: r.exists(keys.result(jid)) and drained(r), 10, message="the result")
    assert "error" in json.loads(r.get(keys.result(jid))) and pool.ctx.counters.take()[:2] == (1, 0)
    join_all(pool)


def test_an_async_job_whose_recording_raises_fails_alone_and_its_batch_is_acknowledged(r, client, monkeypatch):
    pool, _ = make_pool(r, app="asyncjobs")
    outcomes = pool.runner._outcomes
    real_done = outcomes.done

    def done(unit, job, *rest):
        if job["args"] == [0.31]:
            raise RuntimeError("recording failed")
        return real_done(unit, job, *rest)
    monkeypatch.setattr(outcomes, "done", done)
    naps = [client.push({"class": asyncjobs.Nap, "args": [0.3]}) for _ in range(50)]
    bad = client.push({"class": asyncjobs.Nap, "args": [0.31]})
    pool.start()
    wait_for(lambda: r.zcard("retry") == 1 and pool.ctx.counters.total_processed == 51 and drained(r), 10,
             message="every job recorded")
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == bad and entry["error_message"] == "recording failed"
    assert pool.ctx.counters.take()[:2] == (51, 1) and runs(r, naps) == [1] * 50
    join_all(pool)


def stop_within(pool, seconds):
    """pool.stop(now) on a thread; True if it returned within `seconds`."""
    import threading
    pool.ctx.state.stop(time.monotonic())
    stopper = threading.Thread(target=pool.stop, args=(time.monotonic(),), daemon=True)
    stopper.start()
    stopper.join(seconds)
    return not stopper.is_alive()


def test_an_async_on_cancel_that_hangs_is_run_once_and_never_stalls_the_stop(r, client):
    pool, retired = make_pool(r, "--interrupt-grace", "1", app="asyncjobs")
    jid = client.push({"class": asyncjobs.HangingOnCancel, "args": []})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    assert pool.stop_job(jid)
    enforce_until(pool, lambda: drained(r), 8, "the cancelled job to be acknowledged")
    assert pool.ctx.counters.take()[:2] == (1, 0) and r.zcard("retry") == 0
    assert stop_within(pool, 6)
    assert r.lrange("on_cancel", 0, -1) == [jid.encode()]  # run once, not again when the process exits
    assert drained(r) and r.zcard("retry") == 0 and r.zcard("dead") == 0


def test_a_sync_on_cancel_that_hangs_cannot_leave_the_cancelled_job_to_run_again(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.SyncHangingOnCancel, "args": []})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    assert pool.stop_job(jid)
    # Acknowledged before the hook runs: if the process died while the hook hangs, the job must not come back.
    wait_for(lambda: r.llen("on_cancel") == 1 and drained(r), 4, message="the acknowledgement")
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0


def test_an_async_job_that_stops_the_event_loop_does_not_strand_the_others(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    naps = [client.push({"class": asyncjobs.Nap, "args": [0.5]}) for _ in range(20)]
    hostile = client.push({"class": asyncjobs.StopsTheLoop, "args": []})
    naps += [client.push({"class": asyncjobs.Nap, "args": [0.1]}) for _ in range(20)]
    pool.start()
    wait_for(lambda: pool.ctx.counters.total_processed == 41 and drained(r), 10, message="every job")
    assert [int(r.get(f"runs:{jid}")) for jid in [*naps, hostile]] == [1] * 41
    assert pool.processors[0].thread.is_alive()
    join_all(pool)


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError",
                                  "StopIteration", "StopAsyncIteration"])
def test_an_async_job_raising_a_base_exception_is_a_failure_and_the_worker_goes_on(r, client, name):
    pool, retired = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.AsyncRaises, "args": [name]})
    after = client.push({"class": asyncjobs.Nap, "args": [0.05]})
    pool.start()
    wait_for(lambda: r.zcard("retry") == 1 and r.sismember("ran", after) and drained(r), 10, message="both")
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and pool.ctx.counters.take()[:2] == (2, 1)
    assert retired == [] and pool.processors[0].thread.is_alive() and pool.runner._threads[0].is_alive()
    join_all(pool)


def test_perform_shapes_each_run_or_fail_clearly_once(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    for cls in (asyncjobs.StaticAsync, asyncjobs.CallableObjectPerform, asyncjobs.AsyncGeneratorPerform,
                asyncjobs.BorrowedPerform):
        client.push({"class": cls, "args": ["x"]})
    pool.start()
    wait_for(lambda: pool.ctx.counters.total_processed == 4 and drained(r), 10, message="4 jobs")
    assert sorted(r.lrange("done", 0, -1)) == [b"other x", b"static x"]
    failed = sorted(json.loads(raw)["class"] for raw in r.zrange("retry", 0, -1))
    assert failed == ["asyncjobs.AsyncGeneratorPerform", "asyncjobs.CallableObjectPerform"]
    assert all("instead of running" in json.loads(raw)["error_message"] for raw in r.zrange("retry", 0, -1))
    join_all(pool)


def test_a_job_swallowing_its_timeout_is_taken_once_and_recorded_once(r, client):
    pool, retired = make_pool(r, "--interrupt-grace", "1", app="asyncjobs")
    jid = client.push({"class": asyncjobs.SwallowsCancel, "args": [3], "timeout": 0.2})
    pool.start()
    enforce_until(pool, lambda: retired, 5, "the escalation")
    assert stop_within(pool, 5)
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout" and drained(r)
    time.sleep(3)  # it finishes on the abandoned loop: nothing more is recorded
    assert r.zcard("retry") == 1 and drained(r) and pool.ctx.counters.take()[:2] == (1, 1)


def test_interrupts_landing_inside_redis_calls_leave_no_connection_answering_for_another(r, client):
    pool, retired = make_pool(r, "--threads", "2", app="asyncjobs")
    for _ in range(150):
        client.push({"class": asyncjobs.RedisChatty, "args": [], "timeout": 0.02, "retry": False})
    pool.start()
    enforce_until(pool, lambda: pool.ctx.counters.total_processed == 150 and drained(r), 40, "150 stopped jobs")
    values = [str(i) for i in range(200)]
    for v in values:
        client.push({"class": testjobs.Record, "args": [v]})
    wait_for(lambda: r.llen("done") == 200 and drained(r), 15, message="the next jobs")
    assert sorted(r.lrange("done", 0, -1), key=int) == [v.encode() for v in values]
    assert r.llen("crosstalk") == 0 and retired == [] and all(p.thread.is_alive() for p in pool.processors)
    join_all(pool)


def test_a_sync_job_past_its_timeout_during_the_stop_wait_is_still_stopped_as_a_timeout(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    jid = client.push({"class": asyncjobs.Spin, "args": [30], "timeout": 1, "retry": 3})
    pool.start()
    wait_for(lambda: r.sismember("began", jid), 5, message="the job to start")
    began = time.monotonic()
    pool.ctx.state.stop(began + 10)  # TERM with --timeout 10, before the job's own timeout
    pool.stop(began + 10)
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]  # not requeued to spin again
    assert entry["jid"] == jid and entry["error_class"] == "sidepunch.JobTimeout"
    assert time.monotonic() - began < 5 and r.llen("queue:default") == 0 and drained(r)


def test_max_jobs_with_async_jobs_and_one_slot_puts_the_rest_back_untouched(r, client):
    pool, _ = make_pool(r, "--max-jobs", "10", "--async-concurrency", "1", "--threads", "2", app="asyncjobs")
    jids = [client.push({"class": asyncjobs.Nap, "args": [0.05]}) for _ in range(40)]
    pool.start()
    wait_for(lambda: pool.ctx.state.quiet and not pool.ctx.work.snapshot() and not r.keys("working:*"), 10,
             message="quiet after --max-jobs, nothing in hand")
    done = pool.ctx.counters.total_processed
    assert 10 <= done < 40 and done + r.llen("queue:default") == 40
    assert runs(r, jids).count(1) == done and runs(r, jids).count(0) == 40 - done
    join_all(pool)
    again, _ = make_pool(r, "--async-concurrency", "1", app="asyncjobs")  # the replacement worker
    again.start()
    wait_for(lambda: r.scard("ran") == 40 and drained(r), 10, message="the rest")
    assert runs(r, jids) == [1] * 40
    join_all(again)


def test_quiet_then_cont_with_async_jobs_waiting_for_the_one_slot(r, client):
    pool, _ = make_pool(r, "--async-concurrency", "1", "--threads", "3", app="asyncjobs")
    jids = [client.push({"class": asyncjobs.Nap, "args": [0.2]}) for _ in range(12)]
    pool.start()
    wait_for(lambda: r.scard("began") >= 1, 5, message="the first job")
    pool.ctx.state.go_quiet()  # TSTP while two threads wait for the slot with a job in hand
    wait_for(lambda: not pool.ctx.work.snapshot() and not r.keys("working:*"), 10, message="quiet")
    assert r.scard("ran") + r.llen("queue:default") == 12
    pool.ctx.state.resume()
    wait_for(lambda: r.scard("ran") == 12 and drained(r), 15, message="every job after CONT")
    assert runs(r, jids) == [1] * 12
    join_all(pool)


async def mw_raises(instance, job, queue, call_next):
    raise ValueError("middleware says no")


async def mw_reschedules(instance, job, queue, call_next):
    return sidepunch.Reschedule(60)


async def mw_swallows(instance, job, queue, call_next):
    return "skipped"


async def mw_forgets_to_await(instance, job, queue, call_next):
    return call_next()  # the job's coroutine, never awaited: the job must not count as done


def mw_not_async(instance, job, queue, call_next):
    return None


@pytest.mark.parametrize("middleware, place", [(mw_raises, "retry"), (mw_reschedules, "schedule"),
                                               (mw_swallows, "done"), (mw_forgets_to_await, "retry"),
                                               (mw_not_async, "retry")])
def test_async_middleware_that_misbehaves_leaves_the_job_in_exactly_one_place(r, client, middleware, place):
    import warnings
    pool, _ = make_pool(r, app="asyncjobs", async_chain=(middleware,))
    jid = client.push({"class": asyncjobs.Nap, "args": [0.01], "retry": 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.start()
        wait_for(lambda: pool.ctx.counters.total_processed == 1 and drained(r), 10, message="the job")
        join_all(pool)
    assert not [w for w in caught if "never awaited" in str(w.message)]
    where = {"retry": r.zcard("retry"), "schedule": r.zcard("schedule"), "queue": r.llen("queue:default")}
    assert where == {"retry": int(place == "retry"), "schedule": int(place == "schedule"), "queue": 0}
    assert not r.sismember("ran", jid)  # no middleware above let the job body finish
    if place == "retry":
        (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
        assert entry["jid"] == jid


HOSTILE_JIDS = ["j" * 100_000, "\u00e9\u4e2d\U0001f600", " ", "a:b:*?[", 7, 1.5, None, ["x"], {"a": 1}, True, ""]


@pytest.mark.parametrize("kind", [asyncjobs.AsyncForever, asyncjobs.Cooperative])
def test_cancel_floods_and_hostile_jids_end_every_job_in_one_place(r, client, kind):
    pool, retired = make_pool(r, "--threads", "3", "--interrupt-grace", "1", app="asyncjobs")
    pipe = r.pipeline(transaction=False)
    for i in range(5000):  # requests for jobs that run nowhere: never asked about, never touched
        pipe.set(keys.cancel_request(f"elsewhere-{i}"), "{}", ex=60)
    pipe.execute()
    for jid in HOSTILE_JIDS:
        payload = {"class": f"asyncjobs.{kind.__name__}", "args": [], "jid": jid, "queue": "default",
                   "retry": 3, "timeout": 3, "created_at": time.time(), "enqueued_at": time.time()}
        r.lpush("queue:default", json.dumps(payload))
    cancellable = [jid for jid in HOSTILE_JIDS if type(jid) is str and jid]
    for jid in cancellable:
        r.set(keys.cancel_request(jid), "{}", ex=60)
    pool.start()
    watcher = CancelWatcher(pool.ctx, pool.running_jids, pool.stop_job)
    acted = 0
    end = time.monotonic() + 15
    while time.monotonic() < end and pool.ctx.counters.total_processed < len(HOSTILE_JIDS):
        acted += watcher.check()
        pool.enforce_timeouts()
        time.sleep(0.05)
    wait_for(lambda: drained(r), 5, message="every job acknowledged")
    processed, failed, events = pool.ctx.counters.take()
    cancelled = events.get("cancelled", 0)
    assert (processed, cancelled) == (len(HOSTILE_JIDS), len(cancellable)) and acted == len(cancellable)
    assert failed == r.zcard("retry") == len(HOSTILE_JIDS) - len(cancellable)  # the rest timed out
    assert not any(r.exists(keys.cancel_request(jid)) for jid in cancellable)
    assert r.dbsize() >= 5000 and retired == []
    join_all(pool)


def test_a_stop_decided_for_the_previous_job_never_hits_the_next_one(r, client):
    """The main thread (timeouts) and the cancel watcher look at a thread, then act: the job they saw may have
    ended and the next begun in between. The next job must not be stopped, above all not as cancelled (it would
    be acknowledged without running: lost)."""
    pool, _ = make_pool(r, app="asyncjobs")
    first = client.push({"class": asyncjobs.Cooperative, "args": [], "timeout": 60})
    pool.start()
    wait_for(lambda: r.sismember("began", first), 5, message="the first job")
    proc = pool.processors[0]
    seen = proc.job  # what the watcher saw
    assert pool.stop_job(first)
    wait_for(lambda: r.lrange("on_cancel", 0, -1) == [first.encode()], 5, message="the first cancel")
    second = client.push({"class": asyncjobs.Cooperative, "args": [], "timeout": 60})
    wait_for(lambda: r.sismember("began", second), 5, message="the next job")
    assert not proc.request_stop("cancel", time.monotonic(), seen)  # aimed at the job that ended
    assert not proc.request_stop("timeout", time.monotonic())  # the next job is far from its deadline
    time.sleep(0.3)
    assert r.lrange("on_cancel", 0, -1) == [first.encode()] and proc.current is not None
    assert pool.stop_job(second)
    wait_for(lambda: r.llen("on_cancel") == 2 and drained(r), 5, message="the second cancel")
    assert pool.ctx.counters.take() == (2, 0, {"cancelled": 2})
    join_all(pool)


def test_a_held_job_is_never_reclaimed_by_the_replacement_thread_after_an_outage(r, client):
    pool, retired = make_pool(r, "--interrupt-grace", "1", app="asyncjobs")
    jid = client.push({"class": asyncjobs.Block, "args": [1.5], "timeout": 0.2, "retry": 3})
    pool.start()
    enforce_until(pool, lambda: retired, 5, "the escalation")
    old = pool.processors[0]
    old.thread.join(5)  # its C call returned; the abandoned thread ended
    pool.replace_dead()
    new = pool.processors[0]
    assert new is not old
    new.fetcher._in_doubt = True  # as after a failed fetch: it looks for undelivered jobs in its working list
    pool.ctx.state.resume()  # CONT reached the retiring worker
    time.sleep(2.5)
    assert r.llen("done") == 0  # the held job (stopped as its C call returned) is not run again here
    pool.ctx.state.stop(time.monotonic())
    pool.stop(time.monotonic())
    (entry,) = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert entry["jid"] == jid and drained(r) and r.llen("done") == 0


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt"])
def test_a_callback_raising_out_of_the_event_loop_does_not_kill_it(r, client, name):
    pool, _ = make_pool(r, app="asyncjobs")
    naps = [client.push({"class": asyncjobs.Nap, "args": [0.3]}) for _ in range(10)]
    hostile = client.push({"class": asyncjobs.ExitsFromACallback, "args": [name]})
    naps += [client.push({"class": asyncjobs.Nap, "args": [0.1]}) for _ in range(10)]
    pool.start()
    wait_for(lambda: pool.ctx.counters.total_processed == 21 and drained(r), 10, message="every job")
    assert runs(r, [*naps, hostile]) == [1] * 21 and pool.runner._threads[0].is_alive()
    join_all(pool)
