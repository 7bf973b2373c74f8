"""The seam the built-in features plug into: a Feature wraps only the jobs it concerns (a payload key or a class
attribute), on the client and in the worker, outside the user's middleware; RateLimited and Expired end a job
without running it, each in its one visible place and counted. Against a real redis-server."""
import sys
import time

import pytest

import sidepunch
from sidepunch import Outcome
from sidepunch.core import keys
from sidepunch.core.middleware import Expired, Feature, FunctionMiddleware, RateLimited, hooks
from sidepunch.features import FeatureSet
from sidepunch.server.heartbeat import add_counts
import conftest
from conftest import APPS

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


class Gate(Feature):
    """Ends jobs that carry "gate" by its value; records every hook call in `self.calls`."""

    payload_keys = frozenset({"gate"})
    class_attrs = ("gated",)

    def __init__(self, context):
        super().__init__(context)
        self.calls = []

    def around_push(self, job, call_next):
        self.calls.append(("push", job["jid"]))
        job["seen_by_gate"] = True
        return call_next(job)

    def around_perform(self, instance, job, queue, call_next):
        self.calls.append(("perform", job.get("gate")))
        if job.get("gate") == "limit":
            raise RateLimited(20, "gate")
        if job.get("gate") == "expire":
            raise Expired()
        return call_next()

    def on_death(self, job, exc):
        self.calls.append(("death", job["jid"]))


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def processor(r, gate, middleware=()):
    return conftest.make_processor(r, "testjobs", IDENTITY, middleware, features=FeatureSet([gate]))


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return unit, proc.process(unit)


def test_a_plain_job_goes_through_no_feature_and_a_job_with_the_key_does(r, client):
    gate = Gate(None)
    client.preparer.features = FeatureSet([gate])
    plain = client.push({"class": testjobs.Record, "args": ["plain"]})
    keyed = client.push({"class": testjobs.Record, "args": ["keyed"], "gate": "open"})
    assert gate.calls == [("push", keyed)]
    proc = processor(r, gate)
    assert run_next(proc)[1] is Outcome.DONE and run_next(proc)[1] is Outcome.DONE
    assert gate.calls == [("push", keyed), ("perform", "open")]
    assert r.lrange("done", 0, -1) == [b"plain", b"keyed"] and plain != keyed


def test_a_class_attribute_brings_a_job_to_the_feature_outside_the_users_middleware(r, client):
    gate, order = Gate(None), []

    def user_mw(instance, job, queue, call_next):
        order.append("user")
        return call_next()

    class Gated(testjobs.Record):
        gated = True

    proc = processor(r, gate, hooks([FunctionMiddleware("around_perform", user_mw)], "around_perform"))
    proc.ctx.resolver.resolve = lambda name: Gated if name.endswith("Gated") else testjobs.Record
    client.push({"class": Gated, "args": ["x"]})
    client.push({"class": testjobs.Record, "args": ["y"], "gate": "limit"})
    assert run_next(proc)[1] is Outcome.DONE and gate.calls == [("perform", None)] and order == ["user"]
    assert run_next(proc)[1] is Outcome.RATE_LIMITED and order == ["user"]  # held back before the user's


def test_rate_limited_goes_back_to_the_schedule_untouched_and_is_not_a_run(r, client):
    gate = Gate(None)
    proc = processor(r, gate)
    client.push({"class": testjobs.Record, "args": ["v"], "gate": "limit"})
    before = time.time()
    unit, outcome = run_next(proc)
    assert outcome is Outcome.RATE_LIMITED
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert member == unit.payload and before + 20 <= score <= time.time() + 20
    assert r.zcard("retry") == r.zcard("dead") == r.llen("done") == 0 and not r.keys("working:*")
    processed, failed, events = proc.ctx.counters.take()
    assert (processed, failed, events) == (0, 0, {"rate_limited": 1})


def test_an_expired_job_is_acknowledged_without_running_and_counted(r, client):
    gate = Gate(None)
    proc = processor(r, gate)
    client.push({"class": testjobs.Record, "args": ["v"], "gate": "expire"})
    assert run_next(proc)[1] is Outcome.EXPIRED
    assert r.zcard("schedule") == r.zcard("retry") == r.zcard("dead") == r.llen("done") == 0
    assert not r.keys("working:*")
    assert proc.ctx.counters.take() == (0, 0, {"expired": 1})


def test_feature_death_hooks_run_for_jobs_with_their_key_only(r, client):
    gate = Gate(None)
    proc = processor(r, gate)
    plain = client.push({"class": testjobs.Fail, "args": [], "retry": 0})
    keyed = client.push({"class": testjobs.Fail, "args": [], "retry": 0, "gate": "open"})
    assert run_next(proc)[1] is Outcome.DEAD and run_next(proc)[1] is Outcome.DEAD
    assert [c for c in gate.calls if c[0] == "death"] == [("death", keyed)] and plain != keyed


def test_the_heartbeat_flushes_event_counts_to_their_stat_keys(r):
    pipe = r.pipeline(transaction=True)
    add_counts(pipe, 3, 1, {"expired": 2, "rate_limited": 5, "cancelled": 0})
    pipe.execute()
    assert r.get(keys.STAT_EXPIRED) == b"2" and r.get(keys.STAT_RATE_LIMITED) == b"5"
    assert r.get(keys.STAT_CANCELLED) is None and r.get("stat:processed") == b"3"
