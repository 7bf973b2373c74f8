"""The admin API (sidepunch.api) against a real redis-server.

Data is written by the real producers wherever one exists (Client.push, RetryPolicy, the heartbeat), and
by hand in Sidekiq's exact format where Ruby would have written it, so the API reads what is really there.
"""
import json
import logging
import random
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sidepunch import api
from sidepunch.core import keys
from sidepunch.core.connection import Outage
from sidepunch.server.fetch import UnitOfWork
from sidepunch.server.heartbeat import Heartbeat, add_counts
from sidepunch.core.payload import PayloadError, encode
from sidepunch.server.retry import DeadSet as DeadWriter
from sidepunch.server.retry import RetryPolicy, encode_backtrace
from sidepunch.server.state import ChildContext, LifecycleState

NOW = 1_795_380_000.0
RUBY_RETRY = (b'{"retry":true,"queue":"critical","class":"HardWorker","args":[1,"a/b"],'
              b'"jid":"0123456789abcdef01234567","created_at":1795379000.5,"enqueued_at":1795379000.6,"locale":"en","error_message":"boom",'
              b'"error_class":"RuntimeError","failed_at":1795379001.25,"retry_count":0}')


def clock():
    return NOW


def policy(r, now=NOW, dead=None):
    return RetryPolicy(r, dead or DeadWriter(10_000, 180 * 86400.0), max_retries=25,
                       ack_into=lambda pipe, unit: None, rng=random.Random(7), clock=lambda: now)


def fail(r, raw, queue="default", exc=None, now=NOW):
    """Run the real retry logic on a fetched payload; returns the member it wrote (retry or dead)."""
    before = {z: set(r.zrange(z, 0, -1)) for z in (keys.RETRY, keys.DEAD)}
    policy(r, now).handle(UnitOfWork(queue, raw), None, exc or RuntimeError("boom"))
    for z in (keys.RETRY, keys.DEAD):
        added = set(r.zrange(z, 0, -1)) - before[z]
        if added:
            return added.pop()
    raise AssertionError("the retry logic wrote nothing")


def push_and_fetch(client, r, **item):
    item.setdefault("args", [])
    jid = client.push(item)
    queue = item.get("queue", "default")
    return jid, r.lpop(keys.queue(queue))  # the newest job: the one just pushed


def heartbeat(r, redis_server, identity="web.1:4242:0a1b2c3d4e5f", pid=4242, tag="app", queues=("a", "b")):
    ctx = ChildContext(redis=r, config=None, identity=identity, state=LifecycleState(),
                       outage=Outage(redis_server.url, logging.getLogger("test")), resolver=None, retry=None)
    info = {"hostname": "web.1", "started_at": NOW - 100, "pid": pid, "tag": tag, "concurrency": 10,
            "queues": list(queues), "labels": ["x"], "identity": identity}
    received = []
    return Heartbeat(ctx, info, on_signal=received.append), ctx, received


# ------------------------------------------------------------------------------------------------ Stats

def test_stats_reads_counters_sizes_and_latency(r, client, redis_server):
    for i in range(3):
        client.push({"class": "A", "args": [i]})
    client.push_bulk({"class": "M", "args": [[1], [2]], "queue": "mail"})
    client.push({"class": "Later", "args": [], "at": NOW + 600})
    _, raw = push_and_fetch(client, r, **{"class": "R", "queue": "other"})
    fail(r, raw, "other")
    _, raw = push_and_fetch(client, r, **{"class": "D", "retry": 0, "queue": "other"})
    fail(r, raw, "other")
    pipe = r.pipeline()
    add_counts(pipe, 10, 3)
    pipe.execute()
    beat, ctx, _ = heartbeat(r, redis_server)
    ctx.work.start("t1", "a", b'{"class":"X","args":[]}')
    ctx.work.start("t2", "a", b'{"class":"Y","args":[]}')
    beat.beat()
    oldest = json.loads(r.lindex("queue:default", -1))["enqueued_at"]

    stats = api.Stats(r, clock=lambda: oldest + 7.5)
    assert (stats.processed, stats.failed) == (10, 3)
    assert stats.success_rate == pytest.approx(0.7)
    assert stats.queues == {"default": 3, "mail": 2, "other": 0}
    assert list(stats.queues) == ["default", "mail", "other"]  # largest first
    assert stats.enqueued == 5
    assert (stats.scheduled_size, stats.retry_size, stats.dead_size) == (1, 1, 1)
    assert (stats.processes_size, stats.workers_size) == (1, 2)
    assert stats.default_queue_latency == pytest.approx(7.5)
    summary = stats.summary()
    assert summary == {"processed": 10, "failed": 3, "success_rate": pytest.approx(0.7), "enqueued": 5,
                       "cancelled": 0, "expired": 0, "rate_limited": 0,
                       "scheduled_size": 1, "retry_size": 1, "dead_size": 1, "processes_size": 1,
                       "workers_size": 2, "default_queue_latency": pytest.approx(7.5),
                       "queues": {"default": 3, "mail": 2, "other": 0}}


def test_stats_of_an_empty_database(r):
    stats = api.Stats(r)
    assert (stats.processed, stats.failed, stats.success_rate, stats.enqueued) == (0, 0, None, 0)
    assert stats.default_queue_latency == 0.0
    assert stats.summary()["queues"] == {}


def test_history_reads_utc_day_keys_newest_first_with_missing_days_zero(r):
    r.mset({"stat:processed:2026-11-22": 40, "stat:failed:2026-11-22": 4, "stat:processed:2026-11-20": 7})
    # 2026-11-23 00:30 UTC is still the 22nd west of Greenwich; the keys are UTC dates.
    stats = api.Stats(r, clock=lambda: datetime(2026, 11, 23, 0, 30, tzinfo=timezone.utc).timestamp())
    assert stats.history(4) == [api.DayStats("2026-11-23", 0, 0), api.DayStats("2026-11-22", 40, 4),
                                api.DayStats("2026-11-21", 0, 0), api.DayStats("2026-11-20", 7, 0)]
    assert stats.history(1, end=datetime(2026, 11, 20, tzinfo=timezone.utc)) == [api.DayStats("2026-11-20", 7, 0)]
    assert stats.history(0) == []


def test_heartbeat_counts_show_up_in_history(r):
    pipe = r.pipeline()
    add_counts(pipe, 5, 2)
    pipe.execute()
    today = api.Stats(r).history(1)[0]
    assert (today.date, today.processed, today.failed) == (
        datetime.now(timezone.utc).strftime("%Y-%m-%d"), 5, 2)


def test_reset_zeroes_the_totals_named_and_keeps_day_keys(r):
    r.mset({"stat:processed": 9, "stat:failed": 4, "stat:failed:2026-11-22": 4})
    stats = api.Stats(r)
    stats.reset("failed")
    assert (stats.processed, stats.failed) == (9, 0)
    stats.reset()
    assert (stats.processed, stats.failed) == (0, 0)
    assert r.get("stat:processed") == b"0" and r.get("stat:failed:2026-11-22") == b"4"


# ------------------------------------------------------------------------------------------------ Queue

def test_queue_all_size_latency_and_known(r, client):
    client.push({"class": "A", "args": [], "queue": "zeta"})
    client.push({"class": "A", "args": [], "queue": "alpha"})
    client.push({"class": "A", "args": [], "queue": "alpha"})
    r.rpop("queue:zeta")  # an empty queue stays listed until cleared
    queues = api.Queue.all(r)
    assert [(q.name, q.size) for q in queues] == [("alpha", 2), ("zeta", 0)]
    assert queues[1].known and queues[1].latency == 0.0
    assert not api.Queue("nope", r).known
    oldest = json.loads(r.lindex("queue:alpha", -1))["enqueued_at"]
    assert api.Queue("alpha", r, clock=lambda: oldest + 3).latency == pytest.approx(3.0)
    r.rpush("queue:alpha", b"\xff not json")  # the next job to run is unreadable: no crash, no latency
    assert api.Queue("alpha", r).latency == 0.0


def test_queue_pages_newest_or_oldest_first(r, client):
    for i in range(1, 6):
        client.push({"class": "A", "args": [i]})
    q = api.Queue("default", r)
    assert [j.args for j in q.page(1, 2)] == [[5], [4]]
    assert [j.args for j in q.page(3, 2)] == [[1]]
    assert [j.args for j in q.page(1, 2, oldest_first=True)] == [[1], [2]]
    assert [j.args for j in q.page(3, 2, oldest_first=True)] == [[5]]
    assert q.page(4, 2) == [] and q.page(4, 2, oldest_first=True) == []
    assert [j.args[0] for j in q] == [5, 4, 3, 2, 1]


def test_queue_iteration_survives_deleting_what_it_yields(r, client):
    client.push_bulk({"class": "A", "args": [[i] for i in range(250)]})
    q = api.Queue("default", r)
    seen = []
    for record in q:
        seen.append(record.args[0])
        if record.args[0] % 2 == 0:
            assert record.delete()
    assert sorted(seen) == list(range(250))
    assert sorted(j.args[0] for j in q) == list(range(1, 250, 2))


def test_queue_find_job_and_delete_removes_exactly_one_copy(r, client):
    jid = client.push({"class": "A", "args": ["target"]})
    client.push({"class": "B", "args": [jid]})  # mentions the jid but is another job
    raw = r.lindex("queue:default", -1)
    r.lpush("queue:default", raw)  # a duplicate with identical bytes
    q = api.Queue("default", r)
    found = q.find_job(jid)
    assert found.jid == jid and found.klass == "A" and found.queue == "default"
    assert q.find_job("f" * 24) is None
    assert found.delete()
    assert q.size == 2 and q.find_job(jid) is not None
    assert q.delete(raw) and not q.delete(raw)
    assert [j.klass for j in q] == ["B"]


def test_queue_clear_unlinks_and_forgets_the_name(r, client):
    client.push_bulk({"class": "A", "args": [[1], [2], [3]], "queue": "bulk"})
    client.push({"class": "A", "args": []})
    assert api.Queue("bulk", r).clear() == 3
    assert not r.exists("queue:bulk") and r.smembers("queues") == {b"default"}
    assert api.Queue("default", r).size == 1


# -------------------------------------------------------------------------------------------- JobRecord

def test_job_record_of_an_unparseable_payload_still_displays():
    for raw in (b"\x00{not json", b"[1,2]", b'{"args":[]}'):
        record = api.JobRecord(raw, "default")
        assert not record.ok and record.parse_error
        assert (record.jid, record.klass, record.args, record.display_class) == (None, None, [], "<unparseable>")
        assert record.queue == "default" and record.error_backtrace is None and record.latency() == 0.0
        as_dict = record.to_dict()
        assert as_dict["raw"] == raw.decode("utf-8", "replace") and "payload" not in as_dict


def test_job_record_fields_of_a_failed_ruby_job():
    record = api.JobRecord(RUBY_RETRY)
    assert record.ok and record.jid == "0123456789abcdef01234567" and record.klass == "HardWorker"
    assert (record.queue, record.args, record.retry_count) == ("critical", [1, "a/b"], 0)
    assert (record.error_class, record.error_message) == ("RuntimeError", "boom")
    assert (record.created_at, record.enqueued_at, record.failed_at, record.retried_at) == (
        1795379000.5, 1795379000.6, 1795379001.25, None)
    assert record.latency(1795379010.6) == pytest.approx(10.0)
    assert record.to_dict()["payload"]["locale"] == "en"


def test_job_record_display_of_activejob_encrypted_backtrace_and_bad_fields():
    wrapped = {"class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "wrapped": "SignupMailer",
               "args": [{"job_class": "SignupMailer", "arguments": ["a@b.c", 2]}], "encrypt": True,
               "error_backtrace": encode_backtrace(["app.rb:1:in `x'", "app.rb:2:in `y'"]),
               "enqueued_at": "yesterday", "retry_count": "3", "tags": ["io"]}
    record = api.JobRecord(encode(wrapped))
    assert record.display_class == "SignupMailer"
    assert record.display_args == ["a@b.c", "[encrypted data]"]
    assert record.error_backtrace == ["app.rb:1:in `x'", "app.rb:2:in `y'"]
    assert record.enqueued_at is None and record.retry_count is None and record.tags == ["io"]
    old_style = api.JobRecord(encode({"class": "A", "args": [], "error_backtrace": ["l1", "l2"]}))
    assert old_style.error_backtrace == ["l1", "l2"]
    corrupt = api.JobRecord(encode({"class": "A", "args": [], "error_backtrace": "not base64 zlib!"}))
    assert corrupt.error_backtrace is None
    with pytest.raises(TypeError):
        record.delete()  # not read from a queue


# ------------------------------------------------------------------------------------------ sorted sets

def test_retry_set_entry_written_by_the_retry_logic(r, client):
    jid, raw = push_and_fetch(client, r, **{"class": "A", "args": [1], "queue": "q1", "retry_queue": "slow"})
    member = fail(r, raw, "q1", ValueError("bad value"))
    rs = api.RetrySet(r)
    assert rs.size == len(rs) == 1
    entry = rs.find_job(jid)
    assert entry.value == member and entry.jobset is rs
    assert (entry.queue, entry.retry_count, entry.failed_at) == ("slow", 0, NOW)
    assert (entry.error_class, entry.error_message) == ("ValueError", "bad value")
    assert NOW + 15 <= entry.score <= NOW + 24 and entry.at == entry.score
    assert entry.to_dict()["set"] == "retry" and entry.to_dict()["score"] == entry.score


def test_retry_now_enqueues_with_one_retry_fewer_and_fresh_enqueued_at(r, client):
    jid, raw = push_and_fetch(client, r, **{"class": "A", "args": [1], "custom": {"k": 1}})
    second = fail(r, fail(r, raw), now=NOW + 30)  # failed twice: retry_count 1, retried_at set
    r.zrem(keys.RETRY, *[m for m in r.zrange(keys.RETRY, 0, -1) if m != second])
    entry = api.RetrySet(r, clock=lambda: NOW + 100).find_job(jid)
    assert entry.retry_count == 1 and entry.retried_at == NOW + 30
    assert entry.retry()
    assert r.zcard(keys.RETRY) == 0
    job = json.loads(r.lindex("queue:default", 0))
    # Existing keys keep their places, as Ruby's hash would keep them.
    assert list(job) == ["retry", "queue", "class", "args", "custom", "jid", "created_at", "enqueued_at",
                         "error_message", "error_class", "failed_at", "retry_count", "retried_at"]
    assert (job["jid"], job["retry_count"], job["enqueued_at"], job["custom"]) == (jid, 0, NOW + 100, {"k": 1})
    assert job["error_class"] == "RuntimeError" and job["retried_at"] == NOW + 30
    assert not entry.retry()  # already gone: nothing pushed twice
    assert r.llen("queue:default") == 1


def test_retry_now_of_a_ruby_written_entry_keeps_its_bytes_compatible(r):
    r.zadd(keys.RETRY, {RUBY_RETRY: NOW + 20})
    entry = api.RetrySet(r, clock=lambda: 1795380100.5).find_job("0123456789abcdef01234567")
    assert entry.retry()
    assert r.smembers("queues") == {b"critical"}
    # Ruby's Client.push would write the same bytes: keys keep their places, enqueued_at is refreshed in place
    # and retry_count goes from 0 to -1 (Ruby's `if msg["retry_count"]` is true for 0).
    assert r.lindex("queue:critical", 0) == (
        b'{"retry":true,"queue":"critical","class":"HardWorker","args":[1,"a/b"],"jid":"0123456789abcdef01234567",'
        b'"created_at":1795379000.5,"enqueued_at":1795380100.5,"locale":"en","error_message":"boom",'
        b'"error_class":"RuntimeError","failed_at":1795379001.25,"retry_count":-1}')


def test_entries_sharing_a_score_are_told_apart_by_their_bytes(r):
    a = encode({"class": "A", "args": [], "jid": "a" * 24, "retry_count": 0})
    b = encode({"class": "B", "args": [], "jid": "b" * 24, "retry_count": 0})
    r.zadd(keys.RETRY, {a: NOW, b: NOW})
    rs = api.RetrySet(r)
    assert {e.jid for e in rs.fetch(NOW)} == {"a" * 24, "b" * 24}
    assert [e.value for e in rs.fetch(NOW, "b" * 24)] == [b]
    assert rs.fetch(NOW + 1) == []
    assert rs.find_job("a" * 24).delete()
    assert r.zrange(keys.RETRY, 0, -1) == [b]
    assert rs.find_job("b" * 24).retry()
    assert r.zcard(keys.RETRY) == 0 and json.loads(r.lindex("queue:default", 0))["class"] == "B"


def test_kill_moves_the_exact_bytes_to_dead_and_trims_it(r):
    writer = DeadWriter(max_jobs=3, timeout=1000.0)
    r.zadd(keys.DEAD, {b"ancient": NOW - 5000, b"d1": NOW - 30, b"d2": NOW - 20, b"d3": NOW - 10})
    raw = encode({"class": "A", "args": [], "jid": "c" * 24, "retry_count": 4})
    r.zadd(keys.RETRY, {raw: NOW + 50})
    entry = api.RetrySet(r, clock=clock, dead=writer).find_job("c" * 24)
    assert entry.kill()
    assert r.zcard(keys.RETRY) == 0
    assert r.zrange(keys.DEAD, 0, -1, withscores=True) == [(b"d2", NOW - 20), (b"d3", NOW - 10), (raw, NOW)]
    assert not entry.kill()  # gone: the dead set is not touched again
    assert r.zcard(keys.DEAD) == 3


def test_unparseable_entries_can_be_killed_or_deleted_but_not_retried(r):
    r.zadd(keys.RETRY, {b"{broken": NOW})
    entry = next(iter(api.RetrySet(r)))
    assert not entry.ok and entry.display_class == "<unparseable>"
    with pytest.raises(PayloadError):
        entry.retry()
    assert entry.kill()
    assert r.zrange(keys.DEAD, 0, -1) == [b"{broken"]
    r.zadd(keys.SCHEDULE, {b'{"class":"A","args":[NaN],"jid":"nan"}': NOW})  # Python parses it; JSON cannot
    nan = next(iter(api.ScheduledSet(r)))
    assert not nan.ok  # refused at decode, so it can never fail later at a write
    with pytest.raises(PayloadError):
        nan.add_to_queue()
    assert r.zcard(keys.SCHEDULE) == 1 and not r.exists("queue:default")
    dead = next(iter(api.DeadSet(r)))
    assert dead.delete() and r.zcard(keys.DEAD) == 0


def test_scheduled_add_to_queue_keeps_the_payload_and_adds_enqueued_at(r, client):
    jid = client.push({"class": "A", "args": [2], "at": NOW + 3600, "queue": "later"})
    entry = api.ScheduledSet(r, clock=clock).find_job(jid)
    assert entry.score == NOW + 3600 and entry.enqueued_at is None
    assert entry.add_to_queue()
    job = json.loads(r.lindex("queue:later", 0))
    assert job["jid"] == jid and job["enqueued_at"] == NOW and "at" not in job and "retry_count" not in job
    assert r.zcard(keys.SCHEDULE) == 0 and b"later" in r.smembers("queues")


def test_find_job_matches_the_jid_exactly_and_escapes_glob_characters(r):
    target = encode({"class": "A", "args": [], "jid": "d" * 24})
    mention = encode({"class": "B", "args": ["d" * 24], "jid": "e" * 24})
    copy = encode({"class": "A", "args": [1], "jid": "d" * 24})
    r.zadd(keys.DEAD, {target: NOW, mention: NOW + 1, copy: NOW + 2})
    ds = api.DeadSet(r)
    assert {e.value for e in ds.scan("d" * 24)} == {target, copy}
    assert ds.find_job("e" * 24).klass == "B"
    for pattern in ("*", "?" * 24, "[d]*", "d" * 23):
        assert ds.find_job(pattern) is None


def test_iteration_order_and_pages(r):
    r.zadd(keys.RETRY, {encode({"class": f"R{i}", "args": [], "jid": f"{i:024x}"}): NOW + i for i in (3, 1, 2)})
    r.zadd(keys.DEAD, {encode({"class": f"D{i}", "args": [], "jid": f"{i:024x}"}): NOW + i for i in (3, 1, 2)})
    assert [e.klass for e in api.RetrySet(r)] == ["R1", "R2", "R3"]
    assert [e.klass for e in api.DeadSet(r)] == ["D3", "D2", "D1"]
    assert [e.klass for e in api.RetrySet(r).page(2, 2)] == ["R3"]
    assert [e.klass for e in api.DeadSet(r).page(1, 2)] == ["D3", "D2"]
    assert [e.klass for e in api.DeadSet(r).page(1, 2, newest_first=False)] == ["D1", "D2"]


def test_iterating_while_deleting_visits_every_entry_once_even_with_equal_scores(r):
    members = {encode({"class": "A", "args": [i], "jid": f"{i:024x}"}): NOW + (i // 120) for i in range(300)}
    r.zadd(keys.SCHEDULE, members)
    seen = []
    for entry in api.ScheduledSet(r):
        seen.append(entry.args[0])
        if entry.args[0] % 3:
            entry.delete()
    assert sorted(seen) == list(range(300)) and len(seen) == 300
    assert r.zcard(keys.SCHEDULE) == 100


def test_clear_retry_all_and_kill_all(r, client):
    jids = [push_and_fetch(client, r, **{"class": "A", "args": [i]}) for i in range(130)]
    for _, raw in jids:
        fail(r, raw)
    r.zadd(keys.RETRY, {b"not json": NOW})
    rs = api.RetrySet(r, clock=clock)
    assert rs.retry_all() == 130
    assert r.zrange(keys.RETRY, 0, -1) == [b"not json"] and r.llen("queue:default") == 130
    assert all(json.loads(raw)["retry_count"] == -1 for raw in r.lrange("queue:default", 0, -1))
    for raw in r.lrange("queue:default", 0, 4):
        r.zadd(keys.SCHEDULE, {raw: NOW + 10})
    assert api.ScheduledSet(r, clock=clock).kill_all() == 5
    assert rs.kill_all() == 1
    assert r.zcard(keys.SCHEDULE) == r.zcard(keys.RETRY) == 0 and r.zcard(keys.DEAD) == 6
    assert api.DeadSet(r).clear() == 6 and not r.exists(keys.DEAD)
    assert api.RetrySet(r).clear() == 0


def test_dead_set_kill_adds_raw_jobs_with_trimming(r):
    ds = api.DeadSet(r, clock=clock, dead=DeadWriter(max_jobs=2, timeout=100.0))
    for i in range(3):
        ds.kill(f"job{i}")
    assert r.zrange(keys.DEAD, 0, -1) == [b"job1", b"job2"]


# ------------------------------------------------------------------------------------ processes, workers

def test_process_set_reads_heartbeat_records_and_prunes_dead_identities(r, redis_server):
    beat, ctx, _ = heartbeat(r, redis_server)
    beat.beat()
    r.sadd(keys.PROCESSES, "gone:1:ffffffffffff")  # its record expired: it died without deregistering
    processes = list(api.ProcessSet(r))
    assert [p.identity for p in processes] == ["web.1:4242:0a1b2c3d4e5f"]
    assert r.smembers(keys.PROCESSES) == {b"web.1:4242:0a1b2c3d4e5f"}
    p = processes[0]
    assert (p.hostname, p.pid, p.tag, p.concurrency, p.queues, p.labels) == ("web.1", 4242, "app", 10,
                                                                           ["a", "b"], ["x"])
    assert p.started_at == NOW - 100 and p.busy == 0 and not p.is_quiet and not p.stopping
    assert p.rss > 0 and p.rtt_us >= 0 and abs(p.beat - datetime.now().timestamp()) < 60
    assert p.to_dict()["identity"] == p.identity and api.ProcessSet(r).size == 1
    ctx.state.go_quiet()
    beat.beat()
    assert next(iter(api.ProcessSet(r))).is_quiet


def test_remote_signals_reach_the_heartbeat_one_per_beat_in_order(r, redis_server):
    beat, _, received = heartbeat(r, redis_server)
    beat.beat()
    p = api.ProcessSet(r).find("web.1")
    p.quiet()
    p.dump_threads()
    p.stop()
    signals_key = "web.1:4242:0a1b2c3d4e5f-signals"
    assert r.lrange(signals_key, 0, -1) == [b"TERM", b"TTIN", b"TSTP"]
    assert 0 < r.ttl(signals_key) <= 60
    for _ in range(4):
        beat.beat()
    assert received == ["TSTP", "TTIN", "TERM"]


def test_process_find_by_identity_prefix_or_pid(r, redis_server):
    for identity, pid in (("host-a:100:aaaaaaaaaaaa", 100), ("host-a:101:bbbbbbbbbbbb", 101),
                          ("host-b:100:cccccccccccc", 100)):
        heartbeat(r, redis_server, identity=identity, pid=pid)[0].beat()
    ps = api.ProcessSet(r)
    assert ps.find("host-a:101").identity == "host-a:101:bbbbbbbbbbbb"
    assert ps.find("host-b:100:cccccccccccc").pid == 100
    assert ps.find("101").identity == "host-a:101:bbbbbbbbbbbb"
    with pytest.raises(LookupError, match="matches 2 processes"):
        ps.find("host-a")
    with pytest.raises(LookupError, match="matches 2 processes"):
        ps.find("100")
    with pytest.raises(LookupError, match="no live process"):
        ps.find("host-z")


def test_workers_lists_running_jobs_of_live_processes_oldest_first(r, redis_server, client):
    beat, ctx, _ = heartbeat(r, redis_server)
    _, first = push_and_fetch(client, r, **{"class": "Slow", "args": [1], "queue": "a"})
    _, second = push_and_fetch(client, r, **{"class": "Slower", "args": [2], "queue": "b"})
    ctx.work.start("t2", "b", second)
    ctx.work.start("t1", "a", first)
    beat.beat()
    # A Sidekiq before the JSON-string change stored the payload as an object; a run_at earlier than ours.
    r.hset("web.1:4242:0a1b2c3d4e5f:workers", "old",
           json.dumps({"queue": "a", "payload": {"class": "Obj", "args": []}, "run_at": 5}))
    r.hset("web.1:4242:0a1b2c3d4e5f:workers", "junk", b"\xffnot json")
    # A process whose record expired does not count, even if its workers hash lingers.
    r.sadd(keys.PROCESSES, "ghost:1:000000000000")
    r.hset("ghost:1:000000000000:workers", "t9", json.dumps({"queue": "a", "payload": "{}", "run_at": 1}))
    works = list(api.Workers(r))
    assert [(w.tid, w.run_at, w.job.display_class) for w in works[:2]] == [("junk", 0, "<unparseable>"),
                                                                             ("old", 5, "Obj")]
    assert {(w.tid, w.job.klass, w.queue, w.job.value) for w in works[2:]} == {
        ("t1", "Slow", "a", first), ("t2", "Slower", "b", second)}
    assert all(abs(w.run_at - datetime.now().timestamp()) < 60 for w in works[2:])
    assert api.Workers(r).size == 2  # the busy count of the live process
    assert works[1].to_dict()["job"]["class"] == "Obj"


def test_server_code_never_imports_the_admin_api():
    package = Path(__file__).resolve().parent.parent / "sidepunch"
    admin_side = {"admin_output.py", "api.py", "api_records.py", "api_sets.py", "api_processes.py", "admin.py"}
    pattern = re.compile(r"^\s*(from\s+(sidepunch)?\.?(api|admin)\b|import\s+sidepunch\.(api|admin))", re.M)
    for path in package.glob("*.py"):
        if path.name not in admin_side:
            assert not pattern.search(path.read_text()), f"{path.name} imports the admin API"
