"""sidepunch.api.ops used directly, as a dashboard would: plain results, clear errors, nothing printed, and every
job in exactly one place after each operation."""
from __future__ import annotations

import json
import time

import pytest

from sidepunch.api import ops
from sidepunch.api.sets import SortedEntry
from sidepunch.core import identity, keys
from sidepunch.core.payload import PayloadError, encode

NOW = time.time()


def job(jid, queue="default", **extra):
    return encode({"class": "A", "args": [1], "jid": jid, "queue": queue, "retry": True, **extra})


def places(r, payload_jid):
    """Where a jid is: queue lists, then the three sets (one entry per copy found)."""
    found = []
    for name in r.smembers(keys.QUEUES):
        found += [f"queue:{name.decode()}" for raw in r.lrange(keys.queue(name), 0, -1) if payload_jid.encode() in raw]
    for zset in (keys.RETRY, keys.SCHEDULE, keys.DEAD):
        found += [zset for raw in r.zrange(zset, 0, -1) if payload_jid.encode() in raw]
    return found


@pytest.fixture
def admin(r, capsys):
    yield ops.AdminOps(r)
    assert capsys.readouterr() == ("", "")  # the operations never print


def test_retry_moves_from_retry_then_dead_and_names_where_it_went(r, admin):
    r.zadd(keys.RETRY, {job("j1", "mail", retry_count=2): NOW + 60})
    r.zadd(keys.DEAD, {job("j2"): NOW})
    assert admin.retry("j1") == ops.Retried("j1", keys.RETRY, "mail")
    assert admin.retry("j2") == ops.Retried("j2", keys.DEAD, "default")
    assert places(r, "j1") == ["queue:mail"] and places(r, "j2") == ["queue:default"]
    assert json.loads(r.lindex(keys.queue("mail"), 0))["retry_count"] == 1


def test_unknown_jids_raise_not_found_with_the_sets_searched(admin):
    for call, sets in ((admin.retry, "retry or dead"), (admin.delete, "retry or scheduled or dead"),
                       (admin.kill, "retry or scheduled")):
        with pytest.raises(ops.NotFound, match=f"no job with jid 'nope' in the {sets} set"):
            call("nope")
    assert issubclass(ops.NotFound, LookupError) and issubclass(ops.BadRequest, ValueError)


def test_an_entry_that_left_meanwhile_raises_gone_and_stays_put(r, admin, monkeypatch):
    r.zadd(keys.RETRY, {job("j1"): NOW})
    for name in ("retry", "delete", "kill"):
        monkeypatch.setattr(SortedEntry, name, lambda self: False)
    for call, verb in ((admin.retry, "retried"), (admin.delete, "deleted"), (admin.kill, "killed")):
        with pytest.raises(ops.Gone, match=verb):
            call("j1")
    assert places(r, "j1") == [keys.RETRY]


def test_retry_of_an_unenqueueable_entry_raises_and_keeps_it(r, admin):
    r.zadd(keys.RETRY, {b"{not json": NOW})
    [entry] = ops.SETS["retry"](r).page()
    with pytest.raises(PayloadError, match="unparseable"):
        admin.retry(entry.id)
    assert r.zrange(keys.RETRY, 0, -1) == [b"{not json"]


def test_retry_all_enqueues_what_it_can_and_lists_the_rest(r, admin):
    r.zadd(keys.RETRY, {job("a"): NOW, job("b"): NOW + 1, b"\xff garbage": NOW + 2})
    result = admin.retry_all()
    assert result.done == 2 and len(result.left) == 1 and result.left[0][0].startswith("raw:")
    assert "unparseable" in result.left[0][1] and r.zcard(keys.RETRY) == 1 and r.llen(keys.queue("default")) == 2


def test_delete_removes_every_copy_from_every_set(r, admin):
    r.zadd(keys.RETRY, {job("j1"): NOW})
    r.zadd(keys.SCHEDULE, {job("j1", "other"): NOW + 5})
    r.zadd(keys.DEAD, {job("j1", "x"): NOW})
    r.hset(keys.DEAD_REASONS, job("j1", "x"), "why")
    done = admin.delete("j1")
    assert done == ops.Removed("j1", [keys.RETRY, keys.SCHEDULE, keys.DEAD]) and places(r, "j1") == []
    assert not r.exists(keys.DEAD_REASONS)


def test_kill_moves_to_dead_from_retry_and_schedule_only(r, admin):
    r.zadd(keys.RETRY, {job("j1"): NOW})
    r.zadd(keys.SCHEDULE, {job("j1", "other"): NOW + 5})
    assert admin.kill("j1") == ops.Removed("j1", [keys.RETRY, keys.SCHEDULE])
    assert places(r, "j1") == [keys.DEAD, keys.DEAD]
    with pytest.raises(ops.NotFound):
        admin.kill("j1")  # a dead job cannot be killed again


def test_clear_sets_by_any_alias_and_queues(r, admin, client):
    client.push({"class": "A", "args": [], "queue": "retry"})  # a queue named like a set
    r.zadd(keys.DEAD, {job("d"): NOW})
    assert admin.clear("morgue") == ops.Cleared("set", keys.DEAD, 1)
    assert admin.clear("queue:retry") == ops.Cleared("queue", "retry", 1)
    assert not r.sismember(keys.QUEUES, "retry")
    with pytest.raises(ops.NotFound, match="no queue named 'missing'"):
        admin.clear("missing")


def test_enqueue_pushes_a_checked_job_or_says_what_is_wrong(r, admin):
    done = admin.enqueue("Mailer", [1, "two"], "mail")
    assert done.queue == "mail" and done.job_class == "Mailer" and places(r, done.jid) == ["queue:mail"]
    assert admin.enqueue("A", []).queue == "default"
    for args, queue in (([], ""), ([], "a,b"), ((1, 2), None), ([float("nan")], None), ({"a": 1}, None)):
        with pytest.raises(ops.BadRequest):
            admin.enqueue("A", args, queue)  # type: ignore[arg-type]
    assert r.llen(keys.queue("mail")) == 1 and r.llen(keys.queue("default")) == 1


def beat(r, ident, pid):
    r.sadd(keys.PROCESSES, ident)
    r.hset(keys.process(ident), mapping={"info": json.dumps({"pid": pid}), "busy": 0, "beat": NOW})


def test_signals_reach_one_process_by_identity_prefix_or_pid_or_all(r, admin):
    a, b = identity.make("web", 100, "aaaa"), identity.make("web", 101, "bbbb")
    beat(r, a, 100)
    beat(r, b, 101)
    assert admin.quiet("web:100") == [a] and admin.stop("101") == [b]
    assert admin.signal("quiet") == [a, b]
    assert r.lrange(keys.signals(a), 0, -1) == [b"TSTP", b"TSTP"] and r.lrange(keys.signals(b), 0, -1) == [b"TSTP", b"TERM"]
    with pytest.raises(ops.NotFound, match="matches 2 processes"):
        admin.stop("web")
    with pytest.raises(ops.NotFound, match="no live process matches 'db'"):
        admin.stop("db")
    with pytest.raises(ops.BadRequest):
        admin.signal("kill", a)


def test_a_pid_is_read_from_the_identity_when_the_record_has_none(r, admin):
    ident = identity.make("host", 4242, "cccc")
    r.sadd(keys.PROCESSES, ident)
    r.hset(keys.process(ident), mapping={"info": "{}", "busy": 0})
    assert admin.stop("4242") == [ident]


def test_no_live_processes_is_not_found(admin):
    with pytest.raises(ops.NotFound, match="no live processes"):
        admin.stop()
