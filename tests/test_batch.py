"""Batches (issue 16 point 3): which pushes join a batch, what each ending of a batch job does to it, callbacks
once each, nested batches, jobs that add jobs, and finished data expiring. Against a real redis-server, with
jobs run through a real Processor (conftest.make_processor) and the BatchFeature the worker builds."""
import asyncio
import json
import sys
import threading

import pytest

import sidepunch
import sidepunch.api
from sidepunch import Outcome
from sidepunch.core import keys
from sidepunch.core.middleware import Expired, Feature, MiddlewareContext, RateLimited
from sidepunch.features import FeatureSet
from sidepunch.features.batch import BatchFeature
import conftest
from conftest import APPS

sys.path.insert(0, str(APPS))
import batchjobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


class Gate(Feature):
    """An inner feature: ends jobs whose first arg is "expire" or "limit" the way expiry and limits do."""

    payload_keys = frozenset({"bid"})

    def around_perform(self, instance, job, queue, call_next):
        if job["args"][:1] == ["expire"]:
            raise Expired()
        if job["args"][:1] == ["limit"]:
            raise RateLimited(30, "gate")
        return call_next()


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r, redis_server, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)  # where the test jobs record their runs
    sidepunch.configure(redis_server.url)  # a URL: the async pushes need one
    yield
    sidepunch.configure(redis=r)


@pytest.fixture
def proc(r):
    feature = BatchFeature(MiddlewareContext(r))
    return conftest.make_processor(r, "batchjobs", IDENTITY, features=FeatureSet([feature, Gate(None)]))


def new_batch(**kw):
    return sidepunch.Batch(description="test", on_success=batchjobs.Callback, on_complete=batchjobs.Callback,
                           on_death=batchjobs.Callback, **kw)


def meta(r, bid):
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.batch(bid)).items()}


def drain(proc, r, limit=10_000):
    """Run jobs until the queues are empty; returns the outcomes."""
    outcomes = []
    while len(outcomes) < limit:
        unit = proc.fetcher.fetch() if any(r.llen(k) for k in r.keys("queue:*")) else None
        if unit is None:
            return outcomes
        outcomes.append(proc.process(unit))
    raise AssertionError("the queues did not drain")


def callbacks(r, event):
    return [b.decode() for b in r.lrange(f"batchtest:cb:{event}", 0, -1)]


def queued_bids(r):
    return [json.loads(p).get("bid") for p in r.lrange("queue:default", 0, -1)]


def test_every_kind_of_push_inside_the_block_joins_and_none_outside(r, client, redis_server):
    batch = new_batch()
    outside = batchjobs.Work.perform_async("out")
    with batch:
        batchjobs.Work.perform_async(1)
        batchjobs.Work.perform_bulk([[2], [3]])
        client.push({"class": batchjobs.Work, "args": [4]})
        client.push_bulk({"class": batchjobs.Work, "args": [[5], [6]]})
        asyncio.run(batchjobs.Work.aperform_async(7))
        batchjobs.Work.set(queue="other").perform_async(8)
        asyncio.run(sidepunch.AsyncClient(redis_server.url).push({"class": batchjobs.Work, "args": [9]}))
    after = batchjobs.Work.perform_async("after")
    assert outside and after
    assert queued_bids(r).count(batch.bid) == 8 and queued_bids(r).count(None) == 2
    assert json.loads(r.lindex("queue:other", 0))["bid"] == batch.bid
    m = meta(r, batch.bid)
    assert (m["total"], m["pending"], m["opens"], m["description"]) == ("9", "9", "0", "test")
    assert r.zscore(keys.BATCHES, batch.bid) is not None


def test_callbacks_run_once_after_every_job_succeeded(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.Work.perform_bulk([[i] for i in range(5)])
    assert not callbacks(r, "complete") and r.llen("queue:default") == 5
    drain(proc, r)
    assert sorted(int(x) for x in r.lrange("batchtest:ran", 0, -1)) == list(range(5))
    assert callbacks(r, "complete") == [batch.bid] and callbacks(r, "success") == [batch.bid]
    assert callbacks(r, "death") == []
    status = json.loads(r.lindex("batchtest:status:success", 0))
    assert (status["bid"], status["total"], status["pending"], status["failures"]) == (batch.bid, 5, 0, 0)
    m = meta(r, batch.bid)
    assert "complete_at" in m and "success_at" in m and "death_at" not in m
    ttl = r.ttl(keys.batch(batch.bid))
    assert keys.BATCH_TTL - 60 < ttl <= keys.BATCH_TTL and r.ttl(keys.batch_members(batch.bid)) > 0


def test_a_job_that_runs_twice_counts_once_and_callbacks_are_not_pushed_again(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.Work.perform_async("twice")
        batchjobs.Work.perform_async("slow")
    payload = r.lindex("queue:default", -1)
    drain(proc, r)
    r.lpush("queue:default", payload)  # as if the worker died after the job reported but before its ack
    drain(proc, r)
    assert callbacks(r, "complete") == [batch.bid] and callbacks(r, "success") == [batch.bid]
    assert meta(r, batch.bid)["total"] == "2"


def test_complete_fires_with_a_failure_in_retry_and_success_after_the_retry(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.FailOnce.perform_async("f")
        batchjobs.Work.perform_async("ok")
    outcomes = drain(proc, r)
    assert Outcome.RETRY in outcomes and r.zcard("retry") == 1
    assert callbacks(r, "complete") == [batch.bid] and callbacks(r, "success") == []
    assert json.loads(r.lindex("batchtest:status:complete", 0))["failures"] == 1
    member, _ = r.zrange("retry", 0, 0, withscores=True)[0]
    r.zrem("retry", member)
    r.lpush("queue:default", member)  # the retry comes due
    drain(proc, r)
    assert callbacks(r, "complete") == [batch.bid] and callbacks(r, "success") == [batch.bid]
    assert meta(r, batch.bid)["failures"] == "0"


def test_a_death_fires_on_death_once_and_the_batch_never_succeeds(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.AlwaysFail.perform_bulk([[1], [2]])
        batchjobs.Work.perform_async("ok")
    drain(proc, r)
    assert callbacks(r, "death") == [batch.bid] and callbacks(r, "complete") == [batch.bid]
    assert callbacks(r, "success") == []
    assert json.loads(r.lindex("batchtest:status:complete", 0))["failures"] == 2


def test_an_empty_batch_completes_when_its_block_ends(r, proc):
    batch = new_batch()
    with batch:
        pass
    assert r.llen("queue:default") == 2
    drain(proc, r)
    assert callbacks(r, "complete") == [batch.bid] and callbacks(r, "success") == [batch.bid]


def test_a_batch_without_callbacks_completes_quietly(r, proc):
    batch = sidepunch.Batch()
    with batch:
        batchjobs.Work.perform_async(1)
    drain(proc, r)
    m = meta(r, batch.bid)
    assert "success_at" in m and r.llen("queue:default") == 0


def test_nested_batch_counts_in_its_parent_and_the_parent_completes_after_it(r, proc):
    parent, child = new_batch(), new_batch()
    with parent:
        batchjobs.Work.perform_async("p")
        with child:
            batchjobs.Work.perform_async("c1")
            batchjobs.Work.perform_async("c2")
    assert meta(r, child.bid)["parent"] == parent.bid and meta(r, parent.bid)["total"] == "2"
    # run the parent's own job first: the parent must still wait for its child
    payloads = r.lrange("queue:default", 0, -1)
    own = [p for p in payloads if json.loads(p)["bid"] == parent.bid]
    r.lrem("queue:default", 0, own[0])
    r.rpush("queue:default", own[0])
    proc.process(proc.fetcher.fetch())
    assert callbacks(r, "complete") == []
    drain(proc, r)
    assert callbacks(r, "complete") == [child.bid, parent.bid]
    assert callbacks(r, "success") == [child.bid, parent.bid]


def test_a_job_adds_jobs_to_its_own_batch_before_it_is_marked_done(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.Spawner.perform_async(3)
    drain(proc, r)
    ran = [x.decode() for x in r.lrange("batchtest:ran", 0, -1)]
    assert sorted(ran) == ["spawned-0", "spawned-1", "spawned-2", "spawner"]
    assert callbacks(r, "complete") == [batch.bid] and meta(r, batch.bid)["total"] == "4"
    status = json.loads(r.lindex("batchtest:status:success", 0))
    assert status["total"] == 4 and status["pending"] == 0


def test_each_thread_and_task_sees_only_its_own_block(r):
    batch = new_batch()
    started, release = threading.Event(), threading.Event()

    def other_thread():
        started.wait(5)
        batchjobs.Work.perform_async("other-thread")
        release.set()

    async def tasks():
        async def inside():
            async with batch:
                await batchjobs.Work.aperform_async("task-in")
                await asyncio.sleep(0.01)

        async def outside():
            await asyncio.sleep(0.005)
            await batchjobs.Work.aperform_async("task-out")
        await asyncio.gather(inside(), outside())

    t = threading.Thread(target=other_thread)
    t.start()
    with batch:
        started.set()
        release.wait(5)
        batchjobs.Work.perform_async("mine")
    t.join()
    asyncio.run(tasks())
    jobs = {json.loads(p)["args"][0]: json.loads(p).get("bid") for p in r.lrange("queue:default", 0, -1)}
    assert jobs == {"mine": batch.bid, "task-in": batch.bid, "other-thread": None, "task-out": None}


def test_an_expired_job_counts_as_a_success_and_a_rate_limited_one_is_not_an_ending(r, proc):
    batch = new_batch()
    with batch:
        batchjobs.Work.perform_async("expire")
        batchjobs.Work.perform_async("limit")
    outcomes = drain(proc, r)
    assert sorted(outcomes) == sorted([Outcome.EXPIRED, Outcome.RATE_LIMITED])
    m = meta(r, batch.bid)
    assert (m["pending"], m["finished"]) == ("1", "1") and callbacks(r, "complete") == []
    assert r.zcard("schedule") == 1


def test_a_hostile_bid_in_a_payload_is_ignored_and_the_job_runs(r, proc, client):
    for bid in ["x", "../../etc", "a:b:c:d:e:f:g", 42, None, "é" * 10, "a" * 65]:
        client.push({"class": batchjobs.Work, "args": [repr(bid)], "bid": bid})
    outcomes = drain(proc, r)
    assert outcomes == [Outcome.DONE] * 7 and not r.keys("sidepunch:batch*")


def test_a_bid_of_a_batch_that_does_not_exist_creates_nothing(r, proc, client):
    client.push({"class": batchjobs.Work, "args": [1], "bid": "0123456789abcdef01234567"})
    assert drain(proc, r) == [Outcome.DONE] and not r.keys("sidepunch:batch*")


@pytest.mark.parametrize("bad", [42, "x" * 1001, "\ud800"])
def test_a_bad_description_or_callback_is_refused_before_anything_is_written(r, bad):
    with pytest.raises((TypeError, ValueError)):
        sidepunch.Batch(description=bad)
    with pytest.raises((TypeError, ValueError)):
        sidepunch.Batch(on_success=bad if bad != "x" * 1001 else object())
    assert not r.keys("*")


def test_a_push_refused_for_bad_input_is_not_counted(r, client):
    batch = new_batch()
    with batch:
        with pytest.raises((TypeError, ValueError)):
            batchjobs.Work.perform_async(object())
        batchjobs.Work.perform_async(1)
    assert meta(r, batch.bid)["total"] == "1"


def test_a_job_outside_a_batch_has_no_batch(r, proc, client):
    seen = []

    class Look(batchjobs.Work):
        def perform(self, n):
            seen.append(self.batch)
    proc.ctx.resolver.resolve = lambda name: Look
    client.push({"class": "Look", "args": [1]})
    drain(proc, r)
    assert seen == [None]


def test_a_long_block_registers_its_jids_as_it_goes(r, monkeypatch):
    from sidepunch.features import batch as feature
    monkeypatch.setattr(feature, "FLUSH_EVERY", 3)
    batch = new_batch()
    with batch:
        batchjobs.Work.perform_bulk([[i] for i in range(7)])
        assert meta(r, batch.bid)["total"] == "6" and meta(r, batch.bid)["opens"] == "1"
        assert sidepunch.api.BatchStatus(batch.bid).state == "open"
    assert meta(r, batch.bid)["total"] == "7" and meta(r, batch.bid)["opens"] == "0"


def test_a_callback_named_by_class_name_is_pushed_with_that_name(r, proc):
    batch = sidepunch.Batch(on_complete="Ruby::Report")
    with batch:
        pass
    [payload] = [json.loads(p) for p in r.lrange("queue:default", 0, -1)]
    assert payload["class"] == "Ruby::Report" and payload["args"][0] == batch.bid
    assert payload["args"][1]["event"] == "complete" and len(payload["jid"]) == 24
    assert payload["created_at"] == payload["enqueued_at"] > 0 and payload["retry"] is True


def test_broken_batch_keys_never_turn_a_success_into_a_failure(r, proc, client):
    bid = "0123456789abcdef01234567"
    r.set(keys.batch(bid), "not a hash")
    client.push({"class": batchjobs.Work, "args": [1], "bid": bid})
    r.hset(keys.batch("abcdefabcdef"), mapping={"total": "many", "pending": "x"})
    client.push({"class": batchjobs.Work, "args": [2], "bid": "abcdefabcdef"})
    client.push({"class": batchjobs.AlwaysFail, "args": [3], "bid": "abcdefabcdef"})
    assert drain(proc, r) == [Outcome.DONE, Outcome.DONE, Outcome.DISCARDED]
    assert r.get(keys.batch(bid)) == b"not a hash"


def test_creating_batches_drops_expired_ids_from_the_list(r, monkeypatch):
    from sidepunch.features import batch as feature
    monkeypatch.setattr(feature.secrets, "randbelow", lambda n: 0)  # the oldest ids are looked at first
    r.zadd(keys.BATCHES, {f"gone{i:04}": i for i in range(5)})
    for _ in range(2):
        with sidepunch.Batch():
            pass
    assert r.zcard(keys.BATCHES) == 2 and not any(m.startswith(b"gone") for m in r.zrange(keys.BATCHES, 0, -1))


def test_a_job_crash_recovery_kills_reports_its_death_to_the_batch(r, proc):
    """A poison pill (its worker died under it max_interruptions times) goes to the dead set in the recoverer,
    where no on_death hook runs: the batch still hears of the death, and its callbacks fire."""
    from sidepunch.server.recovery import RecoveryPolicy, recover_lists
    batch = new_batch()
    with batch:
        batchjobs.Work.perform_async("doomed")
    raw = r.rpop("queue:default")
    working = b"working:queue:default:host:1:abc.0"
    r.lpush(working, raw, b"not json", b'{"class": "X", "bid": "nosuchbatch1", "jid": "j"}')
    policy = RecoveryPolicy(max_interruptions=1, dead_max_jobs=1000, dead_timeout=1e9)
    found = recover_lists(r, [(b"queue:default", working)], policy, True, "SIGKILL")
    assert found.killed == 3 and r.zcard("dead") == 3
    drain(proc, r)  # the callbacks the death pushed
    assert callbacks(r, "death") == [batch.bid] and callbacks(r, "complete") == [batch.bid]
    assert callbacks(r, "success") == [] and sidepunch.api.BatchStatus(batch.bid).failures == 1


def test_a_job_an_admin_kills_from_the_retry_set_reports_its_death(r, proc):
    batch = new_batch()
    with batch:
        jid = batchjobs.AlwaysFail.set(retry=5).perform_async(1)
    drain(proc, r)  # fails once: in the retry set
    assert r.zcard("retry") == 1 and callbacks(r, "death") == []
    from sidepunch.api.ops import AdminOps
    AdminOps(r).kill(jid)
    drain(proc, r)
    assert r.zcard("dead") == 1 and callbacks(r, "death") == [batch.bid]
