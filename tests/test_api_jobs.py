"""One job by jid against a real Redis: `api.status`, `api.cancel`, `api.result` and their commands.

Running jobs are written as the daemon writes them: a working list filled by the real reliable fetch, a workers
hash by the real heartbeat. Stopping a running job is the worker's part (tested with a real daemon elsewhere);
here `cancel` must leave the request for it.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time

import pytest

import sidepunch
from sidepunch import api
from sidepunch.api import jobs
from sidepunch.client import push
from sidepunch.core import keys
from sidepunch.core.connection import Outage
from sidepunch.core.errors import ResultError, ResultTimeout
from sidepunch.server.fetch.reliable import ReliableFetch
from sidepunch.server.heartbeat import Heartbeat
from sidepunch.server.settings import QueueSpec
from sidepunch.server.state import ChildContext, LifecycleState

from hostile import cases

IDENTITY = "web.1:4242:0a1b2c3d4e5f"
NOW = time.time()


def job(jid, **fields):
    return json.dumps({"class": "Work", "args": [1], "jid": jid, "queue": "default", **fields}).encode()


def enqueue(r, jid, queue="default", **fields):
    raw = job(jid, queue=queue, **fields)
    r.sadd(keys.QUEUES, queue)
    r.lpush(keys.queue(queue), raw)
    return raw


def fetch_reliably(r, queue="default", identity=IDENTITY):
    """The real reliable fetch of one thread: the job (and any it prefetches) moves to its working list."""
    fetcher = ReliableFetch(r, [QueueSpec(queue)], random.Random(0), identity, 0, 0)
    return fetcher.fetch()


def beat_running(r, redis_server, payload, identity=IDENTITY):
    """The real heartbeat of a process running `payload` in thread t1: record and workers hash."""
    ctx = ChildContext(redis=r, config=None, identity=identity, state=LifecycleState(),
                       outage=Outage(redis_server.url, logging.getLogger("test")), resolver=None, retry=None)
    info = {"hostname": "web.1", "started_at": NOW, "pid": 4242, "concurrency": 2, "queues": ["default"],
            "identity": identity}
    ctx.work.start("t1", "default", payload)
    Heartbeat(ctx, info, on_signal=lambda _: None).beat()


def keep(r, jid, **record):
    r.set(keys.result(jid), json.dumps({"jid": jid, "class": "Work", "finished_at": NOW, **record}), ex=60)


def request(r, jid):
    return r.get(keys.cancel_request(jid))


def everything(r):
    """Every list and sorted set with its entries, to show an operation touched nothing else."""
    out = {}
    for key in r.scan_iter():
        kind = r.type(key)
        if kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
    return out


# ------------------------------------------------------------------------------------------------ status

def test_status_names_every_state(r, redis_server, client):
    queued = client.push({"class": "Work", "args": []})
    scheduled = client.push({"class": "Work", "args": [], "at": NOW + 600})
    r.zadd(keys.RETRY, {job("in-retry", error_class="RuntimeError", retry_count=0): NOW + 30})
    r.zadd(keys.DEAD, {job("in-dead", error_class="RuntimeError"): NOW})
    keep(r, "finished", result=42)
    assert api.status(queued, r) == "queued"
    assert api.status(scheduled, r) == "scheduled"
    assert api.status("in-retry", r) == "retry"
    assert api.status("in-dead", r) == "dead"
    assert api.status("finished", r) == "done"
    assert api.status("never-pushed", r) == "unknown"
    assert set(api.STATES) == {"queued", "scheduled", "retry", "running", "dead", "done", "unknown"}


def test_status_running_from_a_working_list_and_from_a_workers_hash(r, redis_server):
    enqueue(r, "fetched")
    unit = fetch_reliably(r)
    assert unit is not None and r.llen(keys.working("default", IDENTITY, 0)) == 1
    assert api.status("fetched", r) == "running"
    # --fetch basic: the job is only in the workers hash of a live process.
    beat_running(r, redis_server, job("basic"), identity="web.2:7:0a1b2c3d4e5f")
    assert api.status("basic", r) == "running"


def test_a_workers_hash_of_a_process_whose_record_expired_is_not_running(r):
    r.sadd(keys.PROCESSES, "ghost:1:000000000000")
    r.hset(keys.workers("ghost:1:000000000000"), "t1",
           json.dumps({"queue": "default", "payload": job("ghostly").decode(), "run_at": 1}))
    assert api.status("ghostly", r) == "unknown"
    assert api.cancel("ghostly", r) == "not_found"


@pytest.mark.parametrize("fetch, state", [("reliable", "unknown"), ("basic", "running"), (None, "running")])
def test_a_reliable_processs_workers_hash_is_not_trusted_after_the_job_ended(r, fetch, state):
    """The workers hash is rewritten every beat; a job that just ended is still in it. A reliable-fetch process
    says so in its record, and its working lists (empty here: the job was acknowledged) decide instead."""
    identity = "web.3:9:0a1b2c3d4e5f"
    info = {"hostname": "web.3", "pid": 9, "identity": identity}
    r.sadd(keys.PROCESSES, identity)
    r.hset(keys.process(identity), mapping={"info": json.dumps(info), "beat": 1,
                                           **({keys.PROCESS_FETCH: fetch} if fetch else {})})
    r.hset(keys.workers(identity), "p0", json.dumps({"queue": "default", "payload": job("ended").decode(),
                                                      "run_at": 1}))
    assert api.status("ended", r) == state


def test_status_uses_the_configured_client_without_redis(r, monkeypatch):
    monkeypatch.setattr(push, "_default", sidepunch.Client(redis=r))
    jid = push.default_client().push({"class": "Work", "args": []})
    assert api.status(jid) == "queued"
    assert api.cancel(jid) == "removed"
    keep(r, jid, result=[1])
    assert api.result(jid) == [1]


def test_a_jid_is_a_string(r):
    for call in (api.status, api.cancel, api.result):
        with pytest.raises(TypeError, match="jid is a string"):
            call(b"abc", redis=r)


# ------------------------------------------------------------------------------------------------ cancel

def test_cancel_removes_a_queued_job_and_nothing_else(r, client):
    others = [client.push({"class": "Work", "args": [i]}) for i in range(3)]
    target = client.push({"class": "Work", "args": ["x"]})
    client.push({"class": "Work", "args": [], "queue": "other"})
    before = everything(r)
    assert api.cancel(target, r) == "removed"
    after = everything(r)
    assert [json.loads(raw)["jid"] for raw in after[b"queue:default"]] == others[::-1]
    assert {k: v for k, v in before.items() if k != b"queue:default"} == \
        {k: v for k, v in after.items() if k != b"queue:default"}
    assert request(r, target) is None  # nothing is left for a worker to act on
    assert api.status(target, r) == "unknown"
    assert api.cancel(target, r) == "not_found"


@pytest.mark.parametrize("zset", [keys.SCHEDULE, keys.RETRY])
def test_cancel_removes_a_scheduled_or_retry_entry_and_only_it(r, zset):
    entries = {job(f"j{i}", retry_count=i): NOW + i for i in range(5)}
    entries[job("same-score")] = NOW + 2  # shares a score with j2
    r.zadd(zset, entries)
    before = r.zrange(zset, 0, -1, withscores=True)
    assert api.cancel("j2", r) == "removed"
    assert r.zrange(zset, 0, -1, withscores=True) == [row for row in before if row[0] != job("j2", retry_count=2)]
    assert request(r, "j2") is None


def test_cancel_removes_every_waiting_copy_of_a_jid(r):
    enqueue(r, "twice")
    r.zadd(keys.SCHEDULE, {job("twice", at_note=1): NOW + 60})
    r.zadd(keys.RETRY, {job("twice", retry_count=1): NOW + 60})
    enqueue(r, "twice", queue="other")
    assert api.cancel("twice", r) == "removed"
    assert everything(r) == {}


def test_cancel_signals_a_job_in_a_working_list(r):
    for jid in ("first", "prefetched"):
        enqueue(r, jid)
    assert fetch_reliably(r) is not None
    working = keys.working("default", IDENTITY, 0)
    held = r.lrange(working, 0, -1)
    for jid in (json.loads(raw)["jid"] for raw in held):  # the one started and any the fetch batched
        assert api.cancel(jid, r) == "signalled"
        assert json.loads(request(r, jid))["at"] == pytest.approx(time.time(), abs=5)
        assert keys.CANCEL_TTL - 5 < r.ttl(keys.cancel_request(jid)) <= keys.CANCEL_TTL
    assert r.lrange(working, 0, -1) == held  # the worker acks or records it, not the API


@pytest.mark.parametrize("jid", ["busy", 'zürich "q" \\ *'])
def test_cancel_signals_a_job_in_a_workers_hash(r, redis_server, jid):
    # The heartbeat writes the payload as a JSON string inside JSON, non-ASCII as \uXXXX escapes.
    beat_running(r, redis_server, json.dumps({"class": "W", "args": [], "jid": jid}, ensure_ascii=False).encode())
    assert api.status(jid, r) == "running"
    assert api.cancel(jid, r) == "signalled"
    assert json.loads(r.get(keys.cancel_request(jid).encode())) == {"at": pytest.approx(time.time(), abs=5)}


def test_cancel_does_not_remove_a_job_a_fetch_took_meanwhile_and_signals_it(r, monkeypatch):
    enqueue(r, "raced")
    real = jobs._list_members

    def read_then_fetch(r_, key, needle):
        found = real(r_, key, needle)
        if key == keys.queue("default").encode():
            fetch_reliably(r)  # a worker takes the job between the read and the LREM
        return found
    monkeypatch.setattr(jobs, "_list_members", read_then_fetch)
    assert api.cancel("raced", r) == "signalled"
    assert request(r, "raced") is not None


def test_cancel_finds_a_job_that_failed_into_retry_during_the_search(r, monkeypatch):
    real = jobs._running

    def fails_meanwhile(r_, needle):
        r.zadd(keys.RETRY, {job("flaky", retry_count=0): NOW + 30})
        return real(r_, needle)
    monkeypatch.setattr(jobs, "_running", fails_meanwhile)
    assert api.cancel("flaky", r) == "removed"
    assert r.zcard(keys.RETRY) == 0 and request(r, "flaky") is None


def test_cancel_of_a_dead_finished_or_unknown_job_is_not_found_and_leaves_no_request(r):
    dead = job("gone", error_class="RuntimeError")
    r.zadd(keys.DEAD, {dead: NOW})
    keep(r, "finished", result=1)
    for jid in ("gone", "finished", "nothing-like-it"):
        assert api.cancel(jid, r) == "not_found"
        assert request(r, jid) is None
    assert r.zrange(keys.DEAD, 0, -1) == [dead]  # a dead job is not cancelled


def test_cancel_leaves_an_earlier_request_in_place(r):
    r.set(keys.cancel_request("asked"), json.dumps({"at": NOW - 10}), ex=keys.CANCEL_TTL)
    assert api.cancel("asked", r) == "not_found"
    assert json.loads(request(r, "asked")) == {"at": NOW - 10}


# ------------------------------------------------------------------------------------- matching the jid

@pytest.mark.parametrize("jid", ["abc", "a*", "a?c", "[ab]c", "a\\c", 'a"c', "a'c", "", " ", "zürich", "a\nb",
                                 "a%c", "x" * 5000])
def test_a_jid_matches_only_itself(r, jid):
    neighbours = ["abc", "abcd", "xabc", "a*c", "ab", "bc", "a", "A*", "ac", "[ab]c2", 'a"cc', "zurich", "x" * 4999]
    for other in neighbours:
        if other != jid:
            r.zadd(keys.SCHEDULE, {job(other): NOW + 60})
            enqueue(r, other)
    r.zadd(keys.RETRY, {job(jid): NOW + 60})
    # The same jid written by a JSON writer that escapes everything it may (\\uXXXX for non-ASCII).
    escaped = json.dumps({"class": "W", "args": [], "jid": jid}, ensure_ascii=True).encode()
    r.sadd(keys.QUEUES, "esc")
    r.lpush(keys.queue("esc"), escaped)
    before = everything(r)
    assert api.status(jid, r) == "retry"
    assert api.cancel(jid, r) == "removed"
    after = everything(r)
    assert after.get(b"retry") is None and after.get(b"queue:esc") is None
    assert {k: v for k, v in before.items() if k not in (b"retry", b"queue:esc")} == after


def test_a_jid_in_args_or_in_another_field_does_not_match(r):
    r.zadd(keys.SCHEDULE, {json.dumps({"class": "W", "args": ["target"], "jid": "other"}): NOW,
                           json.dumps({"class": "W", "args": [], "note": {"jid": "target"}}): NOW,
                           json.dumps({"class": "W", "args": [], "jid": ["target"]}): NOW})
    assert api.status("target", r) == "unknown"
    assert api.cancel("target", r) == "not_found"
    assert r.zcard(keys.SCHEDULE) == 3


# ------------------------------------------------------------------------------------------------ hostile

def fill_with_hostile(r, redis_server, seed):
    """Every hostile payload in a queue, the schedule, retry, dead, a working list and a live workers hash;
    odd names in `queues` and `processes`, and keys of the wrong type."""
    bad = [c.raw for c in cases(seed)]
    r.sadd(keys.QUEUES, "default", b"\xff\xfe", "not-a-list", "a*")
    r.lpush(keys.queue("default"), *bad)
    r.lpush(keys.queue(b"\xff\xfe"), *bad)
    r.lpush(keys.queue("a*"), *bad)
    r.set(keys.queue("not-a-list"), "x")
    for zset in (keys.SCHEDULE, keys.RETRY, keys.DEAD):
        r.zadd(zset, {raw: NOW + i for i, raw in enumerate(bad)})
    r.lpush(keys.working("default", "h:1:0a1b2c3d4e5f", 0), *bad)
    r.set("working:queue:x:h:2:0a1b2c3d4e5f.0", "a string named like a working list")
    beat_running(r, redis_server, job("placeholder"))
    r.hset(keys.workers(IDENTITY), mapping={f"t{i}": raw for i, raw in enumerate(bad)})
    r.hset(keys.workers(IDENTITY), mapping={"obj": json.dumps({"payload": {"jid": "old-writer"}}), "arr": "[1]",
                                            "payload-num": json.dumps({"payload": 5})})
    r.sadd(keys.PROCESSES, b"\xff:1:x", "string-key")
    r.set(keys.workers("string-key"), "x")
    r.set("string-key", "x")
    return bad


@pytest.mark.parametrize("seed", range(3))
def test_hostile_entries_never_crash_and_stay_where_they_are(r, redis_server, seed):
    fill_with_hostile(r, redis_server, seed)
    before = everything(r)
    assert api.status("no-such-jid", r) == "unknown"
    assert api.cancel("no-such-jid", r) == "not_found"
    assert api.status("old-writer", r) == "running"
    assert everything(r) == before
    # A good job among them is still found and removed, and only it.
    r.zadd(keys.SCHEDULE, {job("good"): NOW})
    enqueue(r, "good-queued")
    assert (api.status("good", r), api.cancel("good", r)) == ("scheduled", "removed")
    assert (api.status("good-queued", r), api.cancel("good-queued", r)) == ("queued", "removed")
    assert everything(r) == before


def test_a_hostile_payload_with_its_jid_is_removed_from_every_waiting_place_only(r, redis_server):
    bad = fill_with_hostile(r, redis_server, 0)
    case = next(c for c in cases(0) if c.kind == "unicode and escapes")
    assert api.status(case.tag, r) == "scheduled"
    before = everything(r)
    assert api.cancel(case.tag, r) == "removed"
    after = everything(r)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {b"schedule", b"retry", b"queue:default", b"queue:\xff\xfe", b"queue:a*"}
    assert all(case.raw not in [m if isinstance(m, bytes) else m[0] for m in after[k]] for k in changed)
    assert api.status(case.tag, r) == "running"  # still in the working list and the dead set: not waiting
    assert len(bad) == len(after[b"dead"])


def test_hostile_payloads_with_a_readable_jid_are_found(r):
    """A payload the daemon could not run (NaN, a huge int in args) is still found by its jid, so it can be
    removed; the search reads leniently."""
    odd = [b'{"class":"W","args":[NaN],"jid":"nan-job"}', b'{"jid":"dup","jid":"dup-last","args":[]}',
           b'{"class":"W","args":[1e999],"jid":"inf-job"}']
    r.zadd(keys.RETRY, {raw: NOW for raw in odd})
    assert [api.status(j, r) for j in ("nan-job", "dup-last", "dup", "inf-job")] == ["retry", "retry", "unknown",
                                                                                   "retry"]
    assert api.cancel("nan-job", r) == "removed" and r.zcard(keys.RETRY) == 2


@pytest.mark.parametrize("raw", [b"[" * 200_000 + b"]" * 200_000, b'{"jid":' * 100_000, b"\xff" * 10,
                                 b'{"jid":"deep","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_entries_nested_past_the_recursion_limit_match_nothing(r, raw):
    r.zadd(keys.SCHEDULE, {raw: NOW})
    r.lpush(keys.working("default", IDENTITY, 0), raw)
    for jid in ("deep", 'x"'):
        assert api.status(jid, r) == "unknown"
        assert api.cancel(jid, r) == "not_found"
    assert r.zcard(keys.SCHEDULE) == 1


def test_a_client_that_decodes_responses_works_too(redis_server, r):
    import redis
    text = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        enqueue(r, "t1")
        r.zadd(keys.RETRY, {job("t2"): NOW})
        keep(r, "t3", result="ok")
        assert [api.status(j, text) for j in ("t1", "t2", "t3")] == ["queued", "retry", "done"]
        assert api.result("t3", redis=text) == "ok"
        assert api.cancel("t1", text) == api.cancel("t2", text) == "removed"
        assert api.cancel("t1", text) == "not_found" and request(r, "t1") is None
    finally:
        text.close()


def test_a_wrong_typed_set_or_queues_key_is_skipped(r, redis_server):
    r.set(keys.SCHEDULE, "x")
    r.set(keys.QUEUES, "x")
    r.hset(keys.PROCESSES, "a", "b")
    r.zadd(keys.RETRY, {job("findable"): NOW})
    assert api.status("findable", r) == "retry"
    assert api.cancel("findable", r) == "removed"
    assert api.status("x", r) == "unknown"


# ------------------------------------------------------------------------------------------------ result

@pytest.mark.parametrize("value", [42, None, "zürich \u2028", [1, {"a": [True]}], {"nested": {"x": 1.5}}, 0, ""])
def test_result_returns_the_kept_value(r, value):
    keep(r, "j", result=value)
    assert api.result("j", redis=r) == value
    assert api.result("j", timeout=0, redis=r) == value


def test_result_waits_for_the_value(r):
    writer = threading.Timer(0.3, keep, args=(r, "later"), kwargs={"result": {"ok": True}})
    writer.start()
    try:
        started = time.monotonic()
        assert api.result("later", timeout=10, redis=r) == {"ok": True}
        assert 0.25 < time.monotonic() - started < 5
    finally:
        writer.cancel()


def test_result_with_no_timeout_waits_as_long_as_it_takes(r):
    writer = threading.Timer(0.5, keep, args=(r, "patient"), kwargs={"result": 7})
    writer.start()
    try:
        assert api.result("patient", redis=r) == 7
    finally:
        writer.cancel()


def test_result_times_out(r):
    started = time.monotonic()
    with pytest.raises(ResultTimeout, match="no result"):
        api.result("never", timeout=0.3, redis=r)
    assert 0.3 <= time.monotonic() - started < 3
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # ResultTimeout is one
        api.result("never", timeout=0, redis=r)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("timeout", [float("nan"), "1", True])
def test_result_refuses_a_timeout_that_is_no_number(r, timeout):
    with pytest.raises(ValueError):
        api.result("x", timeout=timeout, redis=r)


def test_result_error_record_raises_result_error(r):
    keep(r, "bad-return", error="return value is not JSON: TypeError: Object of type set is not serializable")
    with pytest.raises(ResultError, match="not kept: return value is not JSON"):
        api.result("bad-return", redis=r)


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"[1,2]", b'"text"', b"{}", b'{"jid":"g"}',
                                 b'{"result":NaN}', b'{"result":' + b"[" * 200 + b"]" * 200 + b"}",
                                 b'{"error":' + b"[" * 50 + b"]" * 50 + b"}", b"", b'{"result":1}}'])
def test_garbage_in_the_result_key_is_a_result_error(r, raw):
    r.set(keys.result("g"), raw)
    with pytest.raises(ResultError):
        api.result("g", timeout=5, redis=r)


def test_a_result_key_of_another_type_is_a_result_error(r):
    r.rpush(keys.result("listed"), "x")
    with pytest.raises(ResultError, match="unreadable"):
        api.result("listed", redis=r)
    assert api.status("listed", r) == "done"  # the key is there; what it holds is result()'s to judge


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_status(cli, r, client):
    jid = client.push({"class": "Work", "args": []})
    assert cli("status", jid) == (0, "queued\n", "")
    assert cli("status", "nope") == (1, "unknown\n", "")
    status, out, _ = cli("status", jid, "--json")
    assert status == 0 and json.loads(out) == {"jid": jid, "status": "queued"}


def test_cli_cancel(cli, r, redis_server, client):
    jid = client.push({"class": "Work", "args": []})
    beat_running(r, redis_server, job("running-one"))
    assert cli("cancel", jid) == (0, "removed\n", "")
    assert cli("cancel", "running-one") == (0, "signalled\n", "")
    assert cli("cancel", jid) == (1, "not_found\n", "")
    status, out, _ = cli("--json", "cancel", "nope")
    assert status == 1 and json.loads(out) == {"jid": "nope", "outcome": "not_found"}


def test_cli_result(cli, r):
    keep(r, "kept", result={"a": [1, "é\x7f\x1b[31m"]})
    status, out, err = cli("result", "kept")
    assert (status, err) == (0, "") and json.loads(out) == {"a": [1, "é\x7f\x1b[31m"]}
    assert out.isascii() and "\x1b" not in out and "\x7f" not in out
    status, out, _ = cli("result", "kept", "--json")
    assert status == 0 and json.loads(out) == {"jid": "kept", "result": {"a": [1, "é\x7f\x1b[31m"]}}
    status, out, err = cli("result", "missing")
    assert (status, out) == (1, "") and "has no result" in err
    keep(r, "broken", error="return value is not JSON")
    status, out, err = cli("result", "broken")
    assert (status, out) == (1, "") and "not kept" in err


def test_cli_result_waits_with_timeout(cli, r):
    writer = threading.Timer(0.3, keep, args=(r, "soon"), kwargs={"result": "here"})
    writer.start()
    try:
        assert cli("result", "soon", "--timeout", "10") == (0, '"here"\n', "")
    finally:
        writer.cancel()
    status, _, err = cli("result", "never", "--timeout", "0.2")
    assert status == 1 and "within 0.2s" in err


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x", "1e9"])
def test_cli_result_refuses_a_bad_timeout(cli, value):
    status, out, err = cli("result", "j", "--timeout", value)
    assert (status, out) == (2, "") and "--timeout" in err


def test_cli_takes_a_jid_that_is_not_utf8(cli, r):
    raw_jid = b"\xffjid".decode("utf-8", "surrogateescape")
    assert cli("status", raw_jid) == (1, "unknown\n", "")
    assert cli("cancel", raw_jid) == (1, "not_found\n", "")
    status, out, err = cli("result", raw_jid)
    assert status == 1 and "\\xff" in err
