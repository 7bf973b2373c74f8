"""Processor, fetchers, retries and the poller, driven directly against a real redis-server."""
import json
import logging
import random
import sys
from pathlib import Path

import pytest
import redis

import sidepunch
from sidepunch.server import fetch
from sidepunch.server.config import QueueSpec, build_config
from sidepunch.core.connection import Outage
from sidepunch.core.middleware import Outcome
from sidepunch.server.fetch import BasicFetch, QueueOrder, ReliableFetch
from sidepunch.server.processor import Processor
from sidepunch.server.resolver import JobResolver, UnknownJobClass
from sidepunch.core.jobsets import decode_backtrace
from sidepunch.server.retry import DeadSet, RetryPolicy, retry_delay
from sidepunch.server.poller import Poller
from sidepunch.server.state import ChildContext, LifecycleState

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import testjobs  # noqa: E402

IDENTITY = "testhost:1234:abcdefabcdef"


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


@pytest.fixture(autouse=True)
def short_blocking_fetch(monkeypatch):
    """A fetch from empty queues blocks for FETCH_TIMEOUT, then returns None; the tests here only wait it out."""
    monkeypatch.setattr(fetch.basic, "FETCH_TIMEOUT", 0.1)
    monkeypatch.setattr(fetch.reliable, "FETCH_TIMEOUT", 0.1)


@pytest.fixture
def fast_means_under_half_a_second(monkeypatch):
    """A job faster than ACK_NOW_AFTER (1 ms) is acknowledged lazily and lets its thread fetch in batches. A
    no-op or one Redis write is that fast on an idle machine, not always on a loaded one (parallel test
    workers), so the tests that need a job to prove fast raise the bar."""
    monkeypatch.setattr(fetch.reliable, "ACK_NOW_AFTER", 0.5)


class Flaky(sidepunch.Job):
    retry = 3
    backtrace = 5

    def perform(self, *args):
        raise KeyError("missing")


class Custom(sidepunch.Job):
    def perform(self, mode):
        raise RuntimeError(mode)

    def retry_in(self, count, exc):
        return {"kill": "kill", "discard": "discard", "slow": 1000}[str(exc)]


class Once(sidepunch.Job):
    retry = 0
    exhausted = []

    def perform(self):
        raise ValueError("nope")

    def retries_exhausted(self, job, exc):
        Once.exhausted.append((job["jid"], str(exc)))


class NoDead(sidepunch.Job):
    retry = 0
    dead = False

    def perform(self):
        raise ValueError("x")


class Discard(sidepunch.Job):
    retry = False

    def perform(self):
        raise ValueError("x")


def make_ctx(r, fetch="reliable", queues=("default",), deaths=None):
    config = build_config(["--fetch", fetch, *sum((["-q", q] for q in queues), []), "-r", "testjobs"],
                          {"REDIS_URL": "redis://unused"})
    fetch_class = ReliableFetch if fetch == "reliable" else BasicFetch
    retry = RetryPolicy(r, DeadSet(config.dead_max_jobs, config.dead_timeout), config.max_retries,
                        fetch_class.ack_into, death_handlers=deaths or (), rng=random.Random(1))
    return ChildContext(redis=r, config=config, identity=IDENTITY, state=LifecycleState(),
                        outage=Outage("redis://x", logging.getLogger("test")), resolver=JobResolver(["testjobs"]),
                        retry=retry)


def make_processor(r, batch=1, share=1, **kw):
    ctx = make_ctx(r, **kw)
    if ctx.config.fetch == "reliable":
        fetcher = ReliableFetch(r, ctx.config.queues, random.Random(1), IDENTITY, 0, 0, batch=batch, share=share)
    else:
        fetcher = BasicFetch(r, ctx.config.queues, random.Random(1))
    return Processor(0, ctx, fetcher)


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return proc.process(unit)


def test_success_is_acknowledged_and_counted(r, client):
    proc = make_processor(r)
    client.push({"class": testjobs.Record, "args": ["a"]})
    assert run_next(proc) == Outcome.DONE
    assert r.lrange("done", 0, -1) == [b"a"]
    proc.fetcher.release()
    assert r.keys("working:*") == []
    assert proc.ctx.counters.take()[:2] == (1, 0)


def test_job_sits_in_working_list_while_running(r, client):
    proc = make_processor(r)
    client.push({"class": testjobs.Record, "args": ["a"]})
    unit = proc.fetcher.fetch()
    assert unit.working == f"working:queue:default:{IDENTITY}.0"
    assert r.lrange(unit.working, 0, -1) == [unit.payload] and r.llen("queue:default") == 0


def test_ack_rides_on_the_next_fetch(r, client, fast_means_under_half_a_second):
    proc = make_processor(r)
    client.push_bulk({"class": testjobs.Record, "args": [["a"], ["b"]]})
    run_next(proc)
    working = f"working:queue:default:{IDENTITY}.0"
    assert r.llen(working) == 1  # acknowledged lazily...
    second = proc.fetcher.fetch()
    assert r.lrange(working, 0, -1) == [second.payload]  # ...in the same round trip as the next fetch


def test_failure_goes_to_retry_with_sidekiq_fields(r, client):
    proc = make_processor(r)
    jid = client.push({"class": Flaky, "args": [1], "custom_key": {"kept": True}})
    assert run_next(proc) == Outcome.RETRY
    (member, score), = r.zrange("retry", 0, -1, withscores=True)
    job = json.loads(member)
    assert job["jid"] == jid and job["custom_key"] == {"kept": True}
    assert job["error_class"] == "KeyError" and job["error_message"] == "'missing'"
    assert job["retry_count"] == 0 and "failed_at" in job and "retried_at" not in job
    assert list(job)[-5:] == ["error_message", "error_class", "failed_at", "retry_count", "error_backtrace"]
    lines = decode_backtrace(job["error_backtrace"])
    assert 1 <= len(lines) <= 5 and "test_processor.py" in lines[0]
    assert job["error_backtrace"].endswith("\n")
    assert 15 <= score - job["failed_at"] <= 24
    assert r.keys("working:*") == [] and proc.ctx.counters.take()[:2] == (1, 1)


def test_retry_count_increments_then_dead_after_limit(r, client):
    proc = make_processor(r)
    client.push({"class": Flaky, "args": []})
    outcomes = [run_next(proc)]
    for _ in range(3):
        member = r.zrange("retry", 0, 0)[0]
        r.zrem("retry", member)
        r.lpush("queue:default", member)
        outcomes.append(run_next(proc))
    assert outcomes == ["retry", "retry", "retry", "dead"]
    job = json.loads(r.zrange("dead", 0, 0)[0])
    assert job["retry_count"] == 3 and "retried_at" in job


def test_retry_zero_goes_straight_to_dead_and_runs_hooks(r, client):
    deaths = []
    proc = make_processor(r, deaths=[lambda job, exc: deaths.append(job["jid"])])
    jid = client.push({"class": Once, "args": []})
    assert run_next(proc) == Outcome.DEAD
    assert r.zcard("dead") == 1 and r.zcard("retry") == 0
    assert Once.exhausted[-1] == (jid, "nope") and deaths == [jid]


def test_dead_false_and_retry_false(r, client):
    deaths = []
    proc = make_processor(r, deaths=[lambda job, exc: deaths.append(job["class"])])
    client.push({"class": NoDead, "args": []})
    client.push({"class": Discard, "args": []})
    assert sorted([run_next(proc), run_next(proc)]) == [Outcome.DEAD, Outcome.DISCARDED]
    assert r.zcard("dead") == 0 and r.zcard("retry") == 0 and len(deaths) == 2


def test_retry_in_hook_kill_discard_and_delay(r, client):
    proc = make_processor(r)
    for mode in ("kill", "discard", "slow"):
        client.push({"class": Custom, "args": [mode]})
    outcomes = [run_next(proc) for _ in range(3)]
    assert outcomes == ["dead", "discarded", "retry"]
    (member, score), = r.zrange("retry", 0, -1, withscores=True)
    assert 1000 <= score - json.loads(member)["failed_at"] <= 1009


def test_retry_queue_option(r, client):
    proc = make_processor(r)
    client.push({"class": Flaky, "args": [], "retry_queue": "slow"})
    run_next(proc)
    assert json.loads(r.zrange("retry", 0, 0)[0])["queue"] == "slow"


def test_unparseable_payload_goes_to_dead_with_its_bytes(r):
    proc = make_processor(r)
    r.lpush("queue:default", b"\xff{not json")
    assert run_next(proc) == Outcome.DEAD
    assert r.zrange("dead", 0, -1) == [b"\xff{not json"]
    assert r.keys("working:*") == []


@pytest.mark.parametrize("payload, words", [
    ({"class": "nowhere.Job", "args": []}, "unknown job class 'nowhere.Job'"),
    ({"class": "testjobs.Record", "args": "x"}, "args must be a JSON array"),
    ({"class": "testjobs._redis", "args": []}, "not a sidepunch Job"),
    ({"class": "os.system", "args": ["true"]}, "not a sidepunch Job"),
])
def test_jobs_that_cannot_run_are_retried_with_a_clear_message(r, payload, words):
    proc = make_processor(r)
    r.lpush("queue:default", json.dumps(payload))
    assert run_next(proc) == Outcome.RETRY
    job = json.loads(r.zrange("retry", 0, 0)[0])
    assert words in job["error_message"]


def test_unknown_class_without_retry_key_is_kept_not_dropped(r):
    proc = make_processor(r)
    r.lpush("queue:default", json.dumps({"class": "Missing", "args": []}))
    run_next(proc)
    assert r.zcard("retry") == 1


def test_wire_name_alias_runs_ruby_named_jobs(r):
    proc = make_processor(r)
    r.lpush("queue:default", json.dumps({"class": "HardWorker", "args": [1, "two"], "jid": "j" * 24}))
    assert run_next(proc) == Outcome.DONE
    assert json.loads(r.lpop("done")) == [1, "two"]


def test_resolver_refuses_modules_outside_the_app():
    resolver = JobResolver(["testjobs"])
    with pytest.raises(UnknownJobClass):
        resolver.resolve("subprocess.Popen")
    assert resolver.resolve("testjobs.Record") is testjobs.Record
    assert resolver.resolve("testjobs.record_fn") is testjobs.record_fn.job_class


def test_strict_queue_order(r, client):
    proc = make_processor(r, queues=("critical", "default", "low"))
    client.push({"class": testjobs.Record, "args": ["low"], "queue": "low"})
    client.push({"class": testjobs.Record, "args": ["default"]})
    client.push({"class": testjobs.Record, "args": ["critical"], "queue": "critical"})
    for _ in range(3):
        run_next(proc)
    assert r.lrange("done", 0, -1) == [b"critical", b"default", b"low"]


@pytest.mark.parametrize("fetch", ["reliable", "basic"])
def test_weighted_order_follows_weights(r, client, fetch):
    order = QueueOrder([QueueSpec("a", 3), QueueSpec("b", 1)], random.Random(7))
    firsts = [order()[0] for _ in range(4000)]
    assert 0.68 < firsts.count("a") / len(firsts) < 0.82
    proc = make_processor(r, fetch=fetch, queues=("a,3", "b,1"))
    client.push_bulk({"class": testjobs.Record, "args": [["a"]] * 200, "queue": "a"})
    client.push_bulk({"class": testjobs.Record, "args": [["b"]] * 200, "queue": "b"})
    for _ in range(100):
        run_next(proc)
    share_a = r.lrange("done", 0, -1).count(b"a") / 100
    assert 0.6 < share_a < 0.9


def test_basic_fetch_pops_and_requeues_to_the_head(r, client):
    proc = make_processor(r, fetch="basic")
    client.push_bulk({"class": testjobs.Record, "args": [["1"], ["2"]]})
    unit = proc.fetcher.fetch()
    assert json.loads(unit.payload)["args"] == ["1"] and r.llen("queue:default") == 1
    proc.fetcher.requeue([unit])
    assert json.loads(proc.fetcher.fetch().payload)["args"] == ["1"]


def test_reliable_requeue_moves_back_only_once(r, client):
    proc = make_processor(r)
    client.push({"class": testjobs.Record, "args": ["x"]})
    unit = proc.fetcher.fetch()
    proc.fetcher.requeue([unit])
    proc.fetcher.requeue([unit])
    assert r.lrange("queue:default", 0, -1) == [unit.payload] and r.keys("working:*") == []


def test_blocking_fetch_returns_none_when_idle(r):
    proc = make_processor(r)
    assert proc.fetcher.fetch() is None


def test_retry_delay_formula():
    rng = random.Random(3)
    for count in range(6):
        for _ in range(50):
            d = retry_delay(count, rng)
            assert count ** 4 + 15 <= d <= count ** 4 + 15 + 9 * (count + 1)


def test_dead_set_is_trimmed_by_size_and_age(r):
    dead = DeadSet(max_jobs=3, timeout=100)
    r.zadd("dead", {b"ancient": 1.0})
    for i in range(5):
        pipe = r.pipeline(transaction=True)
        dead.add_into(pipe, f"job{i}".encode(), 1000.0 + i)
        pipe.execute()
    assert r.zrange("dead", 0, -1) == [b"job2", b"job3", b"job4"]


def test_poller_moves_due_jobs_keeping_unknown_keys(r, client):
    ctx = make_ctx(r)
    poller = Poller(ctx, DeadSet(10, 100))
    client.push({"class": testjobs.Record, "args": ["later"], "at": 10.0, "extra": 1})
    client.push({"class": testjobs.Record, "args": ["future"], "at": 4e9})
    r.zadd("retry", {json.dumps({"queue": "q2", "class": "X", "args": [], "retry": 2, "retry_count": 1,
                                 "enqueued_at": 1.0}): 5.0, b"garbage": 6.0})
    assert poller.enqueue_due() == 2
    moved = json.loads(r.lindex("queue:default", 0))
    assert moved["extra"] == 1 and list(moved)[:2] == ["retry", "queue"] and moved["enqueued_at"] > 1e9
    retried = json.loads(r.lindex("queue:q2", 0))
    assert list(retried)[:2] == ["retry", "queue"] and retried["enqueued_at"] > 1.0
    assert r.zcard("schedule") == 1 and r.zrange("dead", 0, -1) == [b"garbage"]
    assert r.smembers("queues") >= {b"q2", b"default"}


def test_job_fetched_as_the_connection_dropped_is_reclaimed(r, client):
    """Redis ran the fetch script, then the reply was lost: the job is in our working list, unknown to us."""
    proc = make_processor(r)
    client.push_bulk({"class": testjobs.Record, "args": [["first"], ["second"]]})
    real_script = proc.fetcher._fetch

    def runs_then_drops(**kwargs):
        real_script(**kwargs)
        raise redis.ConnectionError("Connection closed by server.")

    proc.fetcher._fetch = runs_then_drops
    with pytest.raises(redis.ConnectionError):
        proc.fetcher.fetch()
    proc.fetcher._fetch = real_script
    unit = proc.fetcher.fetch()
    assert json.loads(unit.payload)["args"] == ["first"]
    assert proc.process(unit) == Outcome.DONE
    assert json.loads(proc.fetcher.fetch().payload)["args"] == ["second"]


def test_working_keys_carry_the_thread_and_parse_back():
    from sidepunch.core import keys
    key = keys.working("mail:low", "host.example:42:abcdef012345", 7)
    assert key == "working:queue:mail:low:host.example:42:abcdef012345.7"
    assert keys.parse_working(key) == ("mail:low", "host.example:42:abcdef012345")


def test_deep_queue_is_fetched_in_fair_batches_once_jobs_prove_fast(r, client, fast_means_under_half_a_second):
    proc = make_processor(r, batch=10, share=5)
    client.push_bulk({"class": testjobs.Noop, "args": [[str(i)] for i in range(31)]})
    working = f"working:queue:default:{IDENTITY}.0"
    first = proc.fetcher.fetch()
    assert r.llen(working) == 1  # a new thread takes one job until it knows its jobs are fast
    proc.process(first)
    second = proc.fetcher.fetch()
    assert r.llen(working) == 6 and r.llen("queue:default") == 24  # 30 / share 5 = 6, under the cap of 10
    proc.process(second)
    while (unit := proc.fetcher.fetch()) is not None:
        proc.process(unit)
    proc.fetcher.release()
    assert r.llen(working) == 0 and proc.ctx.counters.take()[:2] == (31, 0)


def test_release_puts_prefetched_jobs_back_in_order(r, client):
    proc = make_processor(r, batch=10, share=1)
    client.push_bulk({"class": testjobs.Noop, "args": [[str(i)] for i in range(6)]})
    proc.process(proc.fetcher.fetch())
    unit = proc.fetcher.fetch()  # a batch of the 5 left; this thread then goes quiet before starting it
    assert len(proc.fetcher.buffered()) == 4
    proc.fetcher.unfetch(unit)
    proc.fetcher.release()  # unstarted jobs go back to the head in their order; the finished one is acked
    assert r.keys("working:*") == []
    assert [json.loads(j)["args"][0] for j in reversed(r.lrange("queue:default", 0, -1))] == ["1", "2", "3", "4", "5"]


def test_interrupted_jobs_are_never_fetched_in_a_batch(r, client, fast_means_under_half_a_second):
    proc = make_processor(r, batch=10, share=1)
    client.push({"class": testjobs.Noop, "args": ["warmup"]})
    proc.process(proc.fetcher.fetch())
    client.push_bulk({"class": testjobs.Noop, "args": [["a"], ["b"]]})
    r.lpush("queue:default", json.dumps({"class": "testjobs.Noop", "args": ["pill"], "interrupted_count": 1}))
    client.push_bulk({"class": testjobs.Noop, "args": [["c"], ["d"]]})
    order = []
    while (unit := proc.fetcher.fetch()) is not None:
        order.append((json.loads(unit.payload)["args"][0], len(proc.fetcher.buffered())))
        proc.process(unit)
    assert [name for name, _ in order] == ["a", "b", "pill", "c", "d"]
    assert dict(order)["pill"] == 0 and dict(order)["a"] == 1  # the pill came alone; a and b as a batch


class Exits(sidepunch.Job):
    def perform(self):
        raise SystemExit(3)


def test_a_job_calling_sys_exit_is_a_failure_not_a_dead_thread(r, client):
    proc = make_processor(r)
    client.push({"class": Exits, "args": []})
    assert run_next(proc) == Outcome.RETRY
    assert json.loads(r.zrange("retry", 0, 0)[0])["error_class"] == "SystemExit"

def test_dead_set_reasons_are_kept_with_their_member_and_trimmed_with_it(r):
    dead = DeadSet(max_jobs=3, timeout=100)
    dead.add_into(r, b"{bad-1", 1000.0, reason="unreadable: 1")
    dead.add_into(r, b"{bad-2", 1001.0, reason="unreadable: 2")
    dead.add_into(r, b'{"class":"A"}', 1002.0)
    assert r.hgetall("sidepunch:dead-reasons") == {b"{bad-1": b"unreadable: 1", b"{bad-2": b"unreadable: 2"}
    dead.add_into(r, b'{"class":"B"}', 1003.0)              # over the size limit: bad-1 goes, with its reason
    assert r.hgetall("sidepunch:dead-reasons") == {b"{bad-2": b"unreadable: 2"}
    pipe = r.pipeline(transaction=True)
    dead.add_into(pipe, b'{"class":"C"}', 1200.0)            # in a MULTI; everything else is too old now
    pipe.execute()
    assert r.zrange("dead", 0, -1) == [b'{"class":"C"}'] and not r.exists("sidepunch:dead-reasons")


def test_a_reasons_key_of_another_type_never_stops_a_job_reaching_the_dead_set(r):
    r.set("sidepunch:dead-reasons", "hostile")
    DeadSet(max_jobs=3, timeout=100).add_into(r, b"{bad", 1000.0, reason="unreadable")
    assert r.zrange("dead", 0, -1) == [b"{bad"] and r.get("sidepunch:dead-reasons") == b"hostile"
