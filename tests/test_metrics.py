"""Per-class execution metrics and per-process counts: the in-memory tally (server/stats.py), the heartbeat's
flush to `sidepunch:metrics:*` with expiry and its give-back on failure, the read side (sidepunch.api.metrics)
over every window and over hostile Redis data, and jobs run for real (threads and the async runner in-process,
then a daemon) showing up after a heartbeat."""
import json
import logging
import sys
import time
from pathlib import Path

import pytest
import redis

import sidepunch
from sidepunch import api
from sidepunch.api.metrics import WINDOWS, Metrics, Totals
from sidepunch.core import keys
from sidepunch.core.connection import Outage
from sidepunch.server.heartbeat import Heartbeat
from sidepunch.server.state import ChildContext, LifecycleState
from sidepunch.server.stats import BUCKETS, MAX_CLASSES, OTHER_CLASSES, Counters
from conftest import join_all, make_pool, wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402

IDENTITY = "metrics.1:4242:0a1b2c3d4e5f"


@pytest.fixture(autouse=True)
def configured(r):
    sidepunch.configure(redis=r)


def heartbeat(r, redis_server, counters=None):
    ctx = ChildContext(redis=r, config=None, identity=IDENTITY, state=LifecycleState(),
                       outage=Outage(redis_server.url, logging.getLogger("test")), resolver=None, retry=None,
                       counters=counters or Counters())
    info = {"hostname": "metrics.1", "started_at": time.time(), "pid": 4242, "concurrency": 1, "queues": ["default"]}
    return Heartbeat(ctx, info, on_signal=lambda name: None), ctx


def by_name(rows):
    return {m.name: m.totals for m in rows}


# ------------------------------------------------------------------------------------------ the tally

def test_record_tallies_runs_failures_time_and_histogram_per_class():
    c = Counters()
    c.record(False, False, "A", 0.0005)   # bucket 0 (< 1 ms)
    c.record(True, False, "A", 0.003)     # bucket 2 (2.5 .. 5 ms)
    c.record(False, True, "B", 400.0)     # the last bucket (>= 300 s)
    c.record(failed=False)                # no class: counted, not tallied
    tallies = c.take_tallies()
    assert set(tallies) == {"A", "B"}
    runs, failed, seconds, hist = tallies["A"]
    assert (runs, failed, round(seconds, 4)) == (2, 1, 0.0035) and len(hist) == BUCKETS
    assert hist[0] == 1 and hist[2] == 1 and sum(hist) == 2
    assert tallies["B"][3][-1] == 1 and c.take() == (4, 1, {"cancelled": 1})
    assert c.take_tallies() == {} and (c.total_processed, c.total_failed) == (4, 1)


def test_given_back_tallies_merge_with_new_ones():
    c = Counters()
    c.record(False, False, "A", 0.01)
    taken = c.take_tallies()
    c.record(True, False, "A", 0.01)
    c.give_back_tallies(taken)
    runs, failed, seconds, hist = c.take_tallies()["A"]
    assert (runs, failed, round(seconds, 3), sum(hist)) == (2, 1, 0.02, 2)


@pytest.mark.parametrize("klass, label", [(["a", "list"], "(not a string)"), ({"a": 1}, "(not a string)"),
                                          (17, "(not a string)"), ("x" * 5000, "x" * 200 + "...")])
def test_a_class_that_is_no_plain_name_is_tallied_under_a_label(klass, label):
    c = Counters()
    c.record(False, False, klass, 0.01)
    assert list(c.take_tallies()) == [label]


def test_a_flood_of_class_names_stays_bounded_in_memory():
    c = Counters()
    for i in range(MAX_CLASSES + 500):
        c.record(False, False, f"Made.Up{i}", 0.001)
    for i in range(3):  # later flushes: names beyond the process's first MAX_CLASSES stay folded
        c.take_tallies()
        c.record(False, False, f"Another{i}", 0.001)
    tallies = c.take_tallies()
    assert list(tallies) == [OTHER_CLASSES] and tallies[OTHER_CLASSES][0] == 1
    c.record(False, False, "Made.Up7", 0.001)  # a known name still counts as itself
    assert list(c.take_tallies()) == ["Made.Up7"]


# ------------------------------------------------------------------------------------------ the flush

def test_the_heartbeat_flushes_tallies_with_expiry_into_both_rollups(r, redis_server):
    beat, ctx = heartbeat(r, redis_server)
    for _ in range(3):
        ctx.counters.record(False, False, "Mailer", 0.020)
    ctx.counters.record(True, False, "Mailer", 0.2)
    ctx.counters.record(False, False, "Report", 3.0)
    before = time.time()
    assert beat.beat()
    for step, ttl in keys.METRICS_STEPS.items():
        [counts_key] = r.keys(f"sidepunch:metrics:j:{step}:*")
        slot = counts_key.decode().rsplit(":", 1)[1]
        assert slot in {keys.metrics_slot(before, step), keys.metrics_slot(time.time(), step)}
        assert r.hgetall(counts_key) == {b"Mailer|p": b"4", b"Mailer|f": b"1", b"Mailer|ms": b"260",
                                         b"Report|p": b"1", b"Report|ms": b"3000"}
        assert ttl - 60 < r.ttl(counts_key) <= ttl
        hist_key = keys.metrics_histogram(step, slot, "Mailer")
        assert r.hgetall(hist_key) == {b"4": b"3", b"7": b"1"} and ttl - 60 < r.ttl(hist_key) <= ttl
    assert ctx.counters.take_tallies() == {}
    before = {k: r.hgetall(k) for k in r.keys("sidepunch:metrics:*")}
    assert beat.beat()  # nothing new: nothing added
    assert {k: r.hgetall(k) for k in r.keys("sidepunch:metrics:*")} == before


def test_a_flush_that_fails_keeps_the_tallies_for_the_next_beat(r, redis_server):
    beat, ctx = heartbeat(r, redis_server)
    ctx.counters.record(True, False, "Mailer", 0.020)
    beat.ctx.redis = redis.Redis(port=1, socket_connect_timeout=0.2)  # Redis unreachable
    assert not beat.beat()
    assert r.keys("sidepunch:metrics:*") == []
    ctx.counters.record(False, False, "Mailer", 0.020)
    beat.ctx.redis = r
    assert beat.beat()
    assert by_name(Metrics(r).classes(1))["Mailer"] == Totals(2, 1, 40)
    assert r.get(keys.STAT_PROCESSED) == b"2" and r.get(keys.STAT_FAILED) == b"1"
    [hist_key] = r.keys("sidepunch:metrics:h:60:*")
    assert hist_key.endswith(b":Mailer") and sum(int(n) for n in r.hvals(hist_key)) == 2


def test_a_metrics_key_of_another_type_does_not_stop_the_beat_or_double_count(r, redis_server, caplog):
    beat, ctx = heartbeat(r, redis_server)
    now = time.time()
    r.set(keys.metrics_jobs(60, keys.metrics_slot(now, 60)), "not a hash")
    r.set(keys.metrics_jobs(60, keys.metrics_slot(now + 60, 60)), "not a hash")
    for _ in range(2):
        ctx.counters.record(False, False, "Mailer", 0.001)
        assert beat.beat()
    assert r.get(keys.STAT_PROCESSED) == b"2"  # the counters are not held back by the metrics
    assert ctx.counters.take_tallies() == {}  # the refused part is dropped, not given back to count twice
    assert len([x for x in caplog.records if "metrics write partly refused" in x.getMessage()]) == 1
    assert by_name(Metrics(r).classes(24))["Mailer"].processed == 2  # the 10-minute rollup took them


def test_the_process_record_carries_its_processed_and_failed_counts(r, redis_server):
    beat, ctx = heartbeat(r, redis_server)
    for failed in (False, True, False):
        ctx.counters.record(failed)
    assert beat.beat()
    assert r.hmget(IDENTITY, keys.PROCESS_PROCESSED, keys.PROCESS_FAILED) == [b"3", b"1"]
    assert r.hget(IDENTITY, "busy") == b"0" and json.loads(r.hget(IDENTITY, "info"))["pid"] == 4242
    process = api.ProcessSet(r).find(IDENTITY)
    assert (process.processed, process.failed) == (3, 1)
    assert process.to_dict()["processed"] == 3 and process.to_dict()["failed"] == 1
    r.hset(IDENTITY, mapping={keys.PROCESS_PROCESSED: "lots", keys.PROCESS_FAILED: "-3"})
    assert (api.ProcessSet(r).find(IDENTITY).processed, api.ProcessSet(r).find(IDENTITY).failed) == (0, 0)
    r.hdel(IDENTITY, keys.PROCESS_PROCESSED, keys.PROCESS_FAILED)  # as Ruby Sidekiq writes it
    assert api.ProcessSet(r).find(IDENTITY).processed == 0


# ------------------------------------------------------------------------------------------ the read side

def write_slot(r, step, start, fields, hist=None, klass="Mailer"):
    slot = keys.metrics_slot(start, step)
    r.hset(keys.metrics_jobs(step, slot), mapping=fields)
    if hist:
        r.hset(keys.metrics_histogram(step, slot, klass), mapping=hist)


@pytest.mark.parametrize("hours", WINDOWS)
def test_each_window_counts_its_slots_and_nothing_older(r, hours):
    now = 1_795_380_030.0
    step = 60 if hours <= 8 else 600
    metrics = Metrics(r, clock=lambda: now)
    got_step, slots = metrics.slots(hours)
    assert got_step == step and len(slots) == hours * 3600 // step and slots[-1][0] == now // step * step
    write_slot(r, step, now, {"Mailer|p": 3, "Mailer|f": 1, "Mailer|ms": 30}, {"0": 2, "5": 1})
    write_slot(r, step, slots[0][0], {"Mailer|p": 1, "Mailer|ms": 10})  # the oldest slot in the window
    write_slot(r, step, slots[0][0] - step, {"Mailer|p": 100, "Mailer|ms": 1000})  # just outside it
    assert by_name(metrics.classes(hours)) == {"Mailer": Totals(4, 1, 40)}
    report = metrics.job_class("Mailer", hours)
    assert report.totals == Totals(4, 1, 40) and report.totals.avg_ms == 10
    assert [c.count for c in report.histogram][:6] == [2, 0, 0, 0, 0, 1]
    assert report.series[-1] == (now // step * step, Totals(3, 1, 30)) and len(report.series) == len(slots)


def test_classes_are_sorted_by_total_time_and_names_keep_their_bars(r):
    now = time.time()
    write_slot(r, 60, now, {"Quick|p": 100, "Quick|ms": 50, "a|b|c|p": 2, "a|b|c|ms": 900, "Slow|p": 1,
                            "Slow|ms": 400})
    rows = Metrics(r).classes(1)
    assert [m.name for m in rows] == ["a|b|c", "Slow", "Quick"]
    assert rows[0].to_dict() == {"class": "a|b|c", "processed": 2, "failed": 0, "total_ms": 900, "avg_ms": 450}


def test_hostile_metrics_data_reads_as_nothing(r):
    now = time.time()
    slot = keys.metrics_slot(now, 60)
    r.hset(keys.metrics_jobs(60, slot), mapping={"Good|p": 2, "Good|ms": "20", "Bad|p": "NaN", "Bad|ms": "1e400",
                                                 "Neg|p": "-5", "nofield": 3, "X|zz": 9, b"\xff\xfe|p": 1,
                                                 "Huge|p": "9" * 40})
    r.set(keys.metrics_jobs(60, keys.metrics_slot(now - 60, 60)), "a string")
    r.rpush(keys.metrics_jobs(60, keys.metrics_slot(now - 120, 60)), "a list")
    r.hset(keys.metrics_histogram(60, slot, "Good"), mapping={"0": 1, "99": 5, "-1": 3, "x": 2, "3": "many"})
    rows = by_name(Metrics(r).classes(1))
    assert rows == {"Good": Totals(2, 0, 20), "\udcff\udcfe": Totals(1, 0, 0)}
    report = Metrics(r).job_class("Good", 1)
    assert report.totals == Totals(2, 0, 20) and [b.count for b in report.histogram][:4] == [1, 0, 0, 0]
    assert sum(b.count for b in report.histogram) == 1
    with pytest.raises(ValueError):
        Metrics(r).classes(3)


# ------------------------------------------------------------------------------------------ jobs run for real

def test_jobs_run_in_threads_and_the_async_runner_show_up_after_a_beat(r, client):
    pool, _ = make_pool(r, app="asyncjobs")
    for i in range(5):
        client.push({"class": asyncjobs.Nap, "args": [0.01]})
    client.push({"class": asyncjobs.AsyncFails, "args": []})
    client.push({"class": "testjobs.DoesNotExist", "args": []})
    pool.start()
    wait_for(lambda: pool.ctx.counters.total_processed == 7, 15, message="7 jobs")
    join_all(pool)
    beat = Heartbeat(pool.ctx, {"hostname": "testhost"}, on_signal=lambda name: None)
    assert beat.beat()
    rows = by_name(Metrics(r).classes(1))
    assert rows["asyncjobs.Nap"].processed == 5 and rows["asyncjobs.Nap"].failed == 0
    assert rows["asyncjobs.Nap"].total_ms >= 40
    assert rows["asyncjobs.AsyncFails"].failed == 1 and rows["testjobs.DoesNotExist"].failed == 1
    report = Metrics(r).job_class("asyncjobs.Nap", 1)
    assert sum(b.count for b in report.histogram) == 5 and report.histogram[4].count + report.histogram[5].count >= 4


def test_a_daemon_flushes_metrics_and_its_counts_at_its_heartbeat(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    for i in range(4):
        client.push({"class": testjobs.Noop, "args": [i]})
    client.push({"class": testjobs.Fail, "args": []})
    wait_for(lambda: by_name(Metrics(r).classes(1)).get("testjobs.Fail", Totals()).failed == 1
             and by_name(Metrics(r).classes(1)).get("testjobs.Noop", Totals()).processed == 4, 20,
             message="the metrics of 5 jobs")
    wait_for(lambda: any(p.processed >= 5 and p.failed >= 1 for p in api.ProcessSet(r)), 20,
             message="the worker's processed/failed counts")
    assert all(0 < r.ttl(k) <= keys.METRICS_STEPS[60] or b":600:" in k for k in r.keys("sidepunch:metrics:*"))
    assert d.proc.poll() is None


def test_stopping_flushes_the_last_tallies(r, redis_server):
    beat, ctx = heartbeat(r, redis_server)
    assert beat.beat()
    ctx.counters.record(False, False, "Last", 0.002)
    beat.stop()
    assert by_name(Metrics(r).classes(1))["Last"] == Totals(1, 0, 2) and r.get(keys.STAT_PROCESSED) == b"1"
    assert not r.sismember(keys.PROCESSES, IDENTITY)
