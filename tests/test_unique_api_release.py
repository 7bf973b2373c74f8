"""Unique locks released when an admin removes the job, against a real redis-server: deleted from a queue, the
retry set or the schedule, killed to the dead set, its queue or set cleared, or cancelled while it waited; each
time a new push of the same job is accepted after. Only the compare-and-delete of the job's own value is ever
used, so a lock held by another jid survives every one of them; a clear releases in pipelined batches."""
import json
import sys

import pytest
import redis

import sidepunch
import sidepunch.api as api
from sidepunch.api import unlock
from sidepunch.api.ops import AdminOps
from sidepunch.core import keys
from conftest import APPS

sys.path.insert(0, str(APPS))
import uniquejobs  # noqa: E402


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def locks(r):
    return {k.decode(): r.get(k) for k in r.scan_iter(keys.UNIQUE_PREFIX + "*")}


def push(value, into="queue"):
    """Push a unique job; with `into` "retry" or "dead", move its payload there as a failure would."""
    r = sidepunch.default_client().redis
    jid = uniquejobs.Unique.perform_async(value)
    assert jid
    if into != "queue":
        raw = r.rpop("queue:default")
        r.zadd(into, {raw: 1_000_000})
    return jid


def accepted_again(value):
    """A new push is accepted now, and the lock it took holds (a second one is refused)."""
    return bool(uniquejobs.Unique.perform_async(value)) and uniquejobs.Unique.perform_async(value) is None


@pytest.mark.parametrize("into, jobset", [("retry", api.RetrySet), ("dead", api.DeadSet)])
def test_deleting_from_a_set_releases_the_lock(r, into, jobset):
    jid = push("x", into)
    assert len(locks(r)) == 1 and uniquejobs.Unique.perform_async("x") is None
    assert jobset(r).find_job(jid).delete()
    assert not locks(r) and accepted_again("x")


def test_deleting_a_scheduled_job_and_killing_a_retry_release_their_locks(r):
    jid = uniquejobs.Unique.perform_in(600, "s")
    assert jid and uniquejobs.Unique.perform_in(600, "s") is None
    assert api.ScheduledSet(r).find_job(jid).delete()
    assert not locks(r)
    jid = push("k", "retry")
    assert api.RetrySet(r).find_job(jid).kill()
    assert r.zcard("dead") == 1 and not locks(r) and accepted_again("k")


def test_deleting_a_queued_job_releases_its_lock_by_record_and_by_bytes(r):
    jid = push("q")
    assert api.Queue("default", r).find_job(jid).delete()
    assert not locks(r)
    push("q2")
    raw = r.lindex("queue:default", 0)
    assert api.Queue("default", r).delete(raw) and not locks(r) and accepted_again("q2")


def test_admin_ops_delete_kill_and_cancel_release_the_lock(r):
    ops = AdminOps(r)
    ops.delete(push("d", "retry"))
    assert not locks(r)
    ops.kill(push("k", "retry"))
    assert not locks(r) and r.zcard("dead") == 1
    jid = push("c")
    assert api.cancel(jid, redis=r) == "removed" and not locks(r) and accepted_again("c")
    scheduled = uniquejobs.Unique.perform_in(60, "cs")
    assert api.cancel(scheduled, redis=r) == "removed" and accepted_again("cs")


@pytest.mark.parametrize("target", ["queue:default", "retry", "scheduled", "dead"])
def test_clearing_a_queue_or_set_releases_every_lock_in_pipelined_batches(r, target, monkeypatch):
    into = {"queue:default": "queue", "retry": "retry", "scheduled": "schedule", "dead": "dead"}[target]
    values = [f"v{i}" for i in range(250)]
    for value in values:
        if into == "schedule":
            assert uniquejobs.Unique.perform_in(600, value)
        else:
            push(value, into)
    plain = sidepunch.Client(redis=r).push({"class": "Plain", "args": [1], "queue": "default"})
    assert plain and len(locks(r)) == 250
    executes = []
    real = redis.client.Pipeline.execute
    monkeypatch.setattr(redis.client.Pipeline, "execute",
                        lambda self, *a, **kw: executes.append(self.transaction) or real(self, *a, **kw))
    monkeypatch.setattr(unlock, "CLEAR_CHUNK", 100)
    cleared = AdminOps(r).clear(target)
    assert cleared.removed == 250 + (into == "queue")
    assert not locks(r) and not list(r.scan_iter(keys.CLEARING_PREFIX + "*"))
    assert executes.count(False) == 3  # 250 locks, RELEASE_BATCH 100 a round trip: never one per job
    assert all(accepted_again(v) for v in values[:3])


def test_a_lock_held_by_another_jid_is_never_released(r):
    """The first job's lock lapsed and a duplicate took it: removing the first job leaves the new lock alone."""
    def steal(value):
        key = next(iter(locks(r)))
        other = json.dumps(["another-jid", "uniquejobs.Unique"], separators=(",", ":"))
        r.set(key, other, ex=60)
        return key, other.encode()
    jid = push("r", "retry")
    key, other = steal("r")
    assert api.RetrySet(r).find_job(jid).delete() and r.get(key) == other
    r.delete(key)
    jid = push("k", "retry")
    key, other = steal("k")
    assert api.RetrySet(r).find_job(jid).kill() and r.get(key) == other
    r.delete(key)
    push("c")
    key, other = steal("c")
    assert AdminOps(r).clear("queue:default").removed == 1 and r.get(key) == other
    r.delete(key)
    jid = push("x")
    key, other = steal("x")
    assert api.cancel(jid, redis=r) == "removed" and r.get(key) == other


@pytest.mark.parametrize("raw", [b'{"unique_for":', b'\xff"unique_for"', b'{"class":"X","args":[],"unique_for":1e999}',
                                 b'{"class":"X","args":[],"unique_for":"60","jid":"j"}',
                                 b'{"class":"X","args":[],"unique_for":60,"jid":["not","text"]}',
                                 b'{"class":"X","args":' + b"[" * 200 + b"]" * 200 + b',"unique_for":60}',
                                 b'{"class":"X","args":[],"unique_for":60,"unique_digest":"../../x","jid":"j"}'])
def test_hostile_payloads_are_removed_and_cleared_without_error(r, raw):
    push("keep")
    r.lpush("queue:default", raw)
    assert api.Queue("default", r).delete(raw)
    r.lpush("queue:default", raw)
    r.zadd("retry", {raw: 1})
    assert AdminOps(r).clear("retry").removed == 1
    assert AdminOps(r).clear("queue:default").removed == 2 and not locks(r)
    assert not list(r.scan_iter(keys.CLEARING_PREFIX + "*"))


def test_clearing_what_is_not_there_or_of_another_type_behaves_as_before(r):
    assert api.RetrySet(r).clear() == 0 and api.DeadSet(r).clear() == 0 and api.Queue("none", r).clear() == 0
    r.set("retry", "a string")
    with pytest.raises(redis.ResponseError):
        api.RetrySet(r).clear()
    assert not r.exists("retry") and not list(r.scan_iter(keys.CLEARING_PREFIX + "*"))


def test_a_release_that_meets_an_outage_is_logged_and_the_removal_stands(r, caplog, monkeypatch):
    jid = push("o", "retry")
    monkeypatch.setattr(redis.client.Pipeline, "execute",
                        lambda self, *a, **kw: (_ for _ in ()).throw(redis.ConnectionError("down")))
    entry = api.RetrySet(r).find_job(jid)
    monkeypatch.undo()
    real_pipeline = r.pipeline

    def failing(transaction=True, **kw):
        pipe = real_pipeline(transaction=transaction, **kw)
        if not transaction:
            pipe.execute = lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError("down"))
        return pipe
    monkeypatch.setattr(r, "pipeline", failing)
    assert entry.delete() and r.zcard("retry") == 0
    assert len(locks(r)) == 1 and "lapse by their TTL" in caplog.text


def test_kill_all_releases_the_locks_a_batch_at_a_time(r, monkeypatch):
    for i in range(150):
        push(f"ka{i}", "retry")
    r.zadd("retry", {b'{"class":"Plain","args":[],"jid":"p"}': 2})
    executes = []
    real = redis.client.Pipeline.execute
    monkeypatch.setattr(redis.client.Pipeline, "execute",
                        lambda self, *a, **kw: executes.append(self.transaction) or real(self, *a, **kw))
    assert api.RetrySet(r).kill_all() == 151
    assert r.zcard("dead") == 151 and not locks(r)
    assert executes.count(False) == 2  # 150 locks: two pipelined releases, not one round trip per job
    assert accepted_again("ka0")
