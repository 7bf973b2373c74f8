"""Expiring jobs (issue 16 point 5): `expires_in` becomes `expires_at` on push (from the push, or from `at` for a
scheduled job); a job fetched after it is acknowledged without running, logged and counted in stat:expired (not
failed, not dead), sync and async, first run or retry; hostile `expires_at` values run the job. Against a real
redis-server, with processors and with a real daemon."""
from __future__ import annotations

import json
import logging
import sys
import time

import pytest

import conftest
import sidepunch
import sidepunch.api
from conftest import APPS, wait_for
from sidepunch import Outcome
from sidepunch.core import keys
from sidepunch.features import FeatureSet
from sidepunch.features.expiry import ExpiryFeature, deadline_of

sys.path.insert(0, str(APPS))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


class Fresh(sidepunch.Job):
    expires_in = 60

    def perform(self, value):
        pass


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def payloads(r, key):
    if r.type(key) == b"zset":
        return [json.loads(raw) for raw in r.zrange(key, 0, -1)]
    return [json.loads(raw) for raw in r.lrange(key, 0, -1)]


def processor(r):
    return conftest.make_processor(r, "testjobs", IDENTITY, features=FeatureSet([ExpiryFeature(None)]))


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return proc.process(unit)


# -------------------------------------------------------------------------------------------- push

def test_push_stamps_expires_at_from_now_or_from_the_scheduled_time(r, client):
    before = time.time()
    Fresh.perform_async(1)
    testjobs.Record.set(expires_in=5).perform_async("x")
    later = Fresh.perform_in(3600, 2)
    now_job, set_job = payloads(r, keys.queue("default"))[::-1]
    assert before + 60 <= now_job["expires_at"] <= time.time() + 60 and now_job["expires_in"] == 60
    assert before + 5 <= set_job["expires_at"] <= time.time() + 5
    scheduled = payloads(r, keys.SCHEDULE)[0]
    assert scheduled["jid"] == later
    assert abs(scheduled["expires_at"] - (r.zscore(keys.SCHEDULE, r.zrange(keys.SCHEDULE, 0, 0)[0]) + 60)) < 1e-3


def test_a_bulk_push_stamps_every_job(r, client):
    before = time.time()
    jids = Fresh.perform_bulk([[1], [2], [3]])
    jobs = payloads(r, keys.queue("default"))
    assert sorted(j["jid"] for j in jobs) == sorted(jids)
    assert all(before + 60 <= j["expires_at"] <= time.time() + 60 for j in jobs)


def test_a_plain_push_gets_no_field(r, client):
    testjobs.Record.perform_async("plain")
    assert "expires_at" not in payloads(r, keys.queue("default"))[0]


@pytest.mark.parametrize("bad", ["10", float("nan"), float("inf"), -1, 0, 10 ** 9, True, [5], {"s": 1}])
def test_a_bad_expires_in_in_a_raw_push_is_refused_and_nothing_is_written(r, client, bad):
    with pytest.raises((TypeError, ValueError)):
        client.push({"class": "Anything", "args": [], "expires_in": bad})
    with pytest.raises((TypeError, ValueError)):
        testjobs.Record.set(expires_in=bad)
    assert r.llen(keys.queue("default")) == 0


# -------------------------------------------------------------------------------------------- run

def test_an_expired_job_is_acknowledged_not_run_and_counted(r, client, caplog):
    caplog.set_level(logging.INFO)
    proc = processor(r)
    client.push({"class": testjobs.Record, "args": ["late"], "expires_in": 0.05})
    client.push({"class": testjobs.Record, "args": ["fresh"], "expires_in": 60})
    time.sleep(0.1)
    assert run_next(proc) is Outcome.EXPIRED and run_next(proc) is Outcome.DONE
    proc.fetcher.send_acks()
    assert r.lrange("done", 0, -1) == [b"fresh"]
    assert proc.ctx.counters.take() == (1, 0, {"expired": 1})
    assert r.zcard(keys.RETRY) == r.zcard(keys.DEAD) == 0 and not r.keys("working:*")
    assert "expired testjobs.Record" in caplog.text


def test_a_retry_past_its_deadline_is_dropped(r, client):
    proc = processor(r)
    client.push({"class": testjobs.Fail, "args": [], "expires_in": 0.3})
    assert run_next(proc) is Outcome.RETRY
    failed = r.zrange(keys.RETRY, 0, 0)[0]
    time.sleep(0.35)
    r.zrem(keys.RETRY, failed)
    r.lpush(keys.queue("default"), failed)  # as the poller moves a due retry
    assert run_next(proc) is Outcome.EXPIRED
    assert r.zcard(keys.RETRY) == r.zcard(keys.DEAD) == 0


@pytest.mark.parametrize("value", ["soon", "1e300", None, True, False, [], {}, 0, -5, -1e300, 1e300, 10 ** 400,
                                   2 ** 63, 1.5e11])
def test_an_unreadable_expires_at_runs_the_job(r, value, caplog):
    assert deadline_of(value) is None
    r.lpush(keys.queue("default"), json.dumps({"class": "testjobs.Record", "args": ["ran"], "jid": "j1",
                                               "expires_at": value, "created_at": time.time()}))
    proc = processor(r)
    assert run_next(proc) is Outcome.DONE
    assert r.lrange("done", 0, -1) == [b"ran"] and "which is no deadline" in caplog.text


def test_hostile_payloads_each_end_in_one_place_and_good_jobs_flow(r):
    """NaN and overflowing numbers cannot be decoded at all: they go to the dead set as they are."""
    raws = [b'{"class":"testjobs.Record","args":["nan"],"jid":"n","expires_at":NaN}',
            b'{"class":"testjobs.Record","args":["big"],"jid":"b","expires_at":1e999}',
            b'{"class":"testjobs.Record","args":["past"],"jid":"p","expires_at":1000.5}',
            b'{"class":"testjobs.Record","args":["deep"],"jid":"d","expires_at":[[[[1]]]]}',
            json.dumps({"class": "testjobs.Record", "args": ["good"], "jid": "g", "expires_in": 60,
                        "expires_at": time.time() + 60}).encode()]
    r.lpush(keys.queue("default"), *raws)
    proc = processor(r)
    outcomes = [run_next(proc) for _ in raws]
    assert outcomes == [Outcome.DEAD, Outcome.DEAD, Outcome.EXPIRED, Outcome.DONE, Outcome.DONE]
    assert sorted(r.lrange("done", 0, -1)) == [b"deep", b"good"] and r.zcard(keys.DEAD) == 2
    assert r.llen(keys.queue("default")) == 0


# -------------------------------------------------------------------------------------------- a real daemon

def test_a_daemon_drops_expired_jobs_sync_and_async_and_counts_them(daemon, r, client):
    client.push({"class": testjobs.Record, "args": ["late"], "expires_in": 0.01})
    client.push({"class": asyncjobs.Nap, "args": [0], "jid": "async-late", "expires_in": 0.01})
    client.push({"class": asyncjobs.Nap, "args": [0], "jid": "async-fresh", "expires_in": 600})
    client.push({"class": testjobs.Record, "args": ["fresh"], "expires_in": 600})
    late_retry = json.dumps({"class": "testjobs.Record", "args": ["late-retry"], "jid": "lr", "retry": True,
                             "retry_count": 0, "queue": "default", "expires_in": 1, "expires_at": time.time() - 5,
                             "created_at": time.time() - 10, "failed_at": time.time() - 6})
    r.zadd(keys.RETRY, {late_retry: time.time() - 1})  # expired while it waited in the retry set
    time.sleep(0.05)
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "-r", "asyncjobs")
    wait_for(lambda: r.lrange("done", 0, -1) == [b"fresh"] and r.sismember("ran", "async-fresh"), 20,
             message="the fresh jobs to run")
    wait_for(lambda: sidepunch.api.Stats(r).expired == 3, 20, message="three expirations counted")
    time.sleep(0.5)
    assert r.lrange("done", 0, -1) == [b"fresh"] and not r.sismember("ran", "async-late")
    assert r.zcard(keys.RETRY) == r.zcard(keys.DEAD) == 0 and r.llen(keys.queue("default")) == 0
    assert int(r.get(keys.STAT_FAILED) or 0) == 0
    log = d.log()
    assert log.count("expired testjobs.Record") == 2 and log.count("expired asyncjobs.Nap") == 1
    assert "Traceback" not in log


def test_inside_a_batch_an_expired_job_finishes_it_as_a_success(r, redis_server, monkeypatch):
    """The real BUILTIN order (batch outside expiry): the batch sees the expired job as finished."""
    import batchjobs
    from sidepunch.core.middleware import MiddlewareContext
    from sidepunch.features import build_features
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    sidepunch.configure(redis_server.url)
    features = build_features(MiddlewareContext(r))
    proc = conftest.make_processor(r, "batchjobs", IDENTITY, features=features)
    batch = sidepunch.Batch(description="t", on_success=batchjobs.Callback, on_complete=batchjobs.Callback)
    with batch:
        batchjobs.Work.set(expires_in=0.01).perform_async(1)
        batchjobs.Work.perform_async(2)
    time.sleep(0.05)
    assert sorted(run_next(proc) for _ in range(2)) == sorted([Outcome.EXPIRED, Outcome.DONE])
    assert r.lrange("batchtest:ran", 0, -1) == [b"2"]
    while r.llen(keys.queue("default")):  # the callbacks the batch pushed
        run_next(proc)
    assert r.lrange("batchtest:cb:success", 0, -1) == [batch.bid.encode()]
