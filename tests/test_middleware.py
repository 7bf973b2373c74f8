"""Middleware classes and their function forms, job outcomes, and Reschedule: through Processor and
RetryPolicy against a real redis-server, and through a real sidepunchd given a Middleware class by dotted path."""
import json
import logging
import math
import random
import sys
import time

import pytest

import sidepunch
from sidepunch import Middleware, Outcome, Reschedule
from sidepunch.core.middleware import FunctionMiddleware, MiddlewareContext, build, hooks
from sidepunch.server.config import build_config
from sidepunch.server.hooks import load_middleware
import conftest
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)  # drop whatever a test installed on the default client


def make_processor(r, middleware=(), deaths=(), fetch="reliable"):
    return conftest.make_processor(r, "testjobs", IDENTITY, middleware, deaths, fetch)


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return unit, proc.process(unit)


def working_lists_empty(r):
    return all(r.llen(key) == 0 for key in r.keys("working:*"))


class Later(Middleware):
    """Reschedules every job whose first argument is "later", by raising."""

    def around_perform(self, instance, job, queue, call_next):
        if job["args"][:1] == ["later"]:
            job["args"].append("changed by the middleware")  # the rescheduled payload is the one fetched
            raise Reschedule(30)
        return call_next()


def later_by_return(instance, job, queue, call_next):
    """A function middleware that reschedules by returning the Reschedule."""
    return Reschedule(5) if job["args"][:1] == ["later"] else call_next()


@pytest.mark.parametrize("fetch", ["reliable", "basic"])
@pytest.mark.parametrize("how", ["raised", "returned"])
def test_reschedule_puts_the_payload_back_in_the_schedule_untouched(r, client, fetch, how):
    mw = build(Later, None, "around_perform") if how == "raised" else FunctionMiddleware("around_perform",
                                                                                          later_by_return)
    proc = make_processor(r, middleware=hooks([mw], "around_perform"), fetch=fetch)
    client.push({"class": testjobs.Record, "args": ["later"], "retry": 3})
    client.push({"class": testjobs.Record, "args": ["now"]})
    before = time.time()
    unit, outcome = run_next(proc)
    assert outcome is Outcome.RESCHEDULED and str(outcome) == "rescheduled"
    delay = 30 if how == "raised" else 5
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert member == unit.payload  # no retry_count, no error fields, not the middleware's change
    assert before + delay <= score <= time.time() + delay
    assert working_lists_empty(r) and r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert proc.ctx.counters.take()[:2] == (1, 0)  # processed, not failed
    assert run_next(proc)[1] is Outcome.DONE and r.lrange("done", 0, -1) == [b"now"]


def test_reschedule_logs_one_line(r, client, caplog):
    proc = make_processor(r, middleware=[Later(None).around_perform])
    jid = client.push({"class": testjobs.Record, "args": ["later"]})
    with caplog.at_level(logging.INFO, logger="sidepunch.job"):
        run_next(proc)
    lines = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("reschedule")]
    assert len(lines) == 1 and f"jid={jid}" in lines[0] and "in 30s -> rescheduled" in lines[0]


def test_twin_payloads_rescheduled_stay_two_jobs(r, client):
    """Byte-identical copies (a retried push, a hostile LPUSH) must not merge into one schedule member."""
    proc = make_processor(r, middleware=[Later(None).around_perform])
    client.push({"class": testjobs.Record, "args": ["later"]})
    raw = r.lindex("queue:default", 0)
    r.lpush("queue:default", raw, raw)
    outcomes = [run_next(proc)[1] for _ in range(3)]
    assert outcomes == [Outcome.RESCHEDULED] * 3
    members = r.zrange("schedule", 0, -1)
    assert len(members) == 3 and raw in members
    assert {json.loads(m)["jid"] for m in members} == {json.loads(raw)["jid"]}
    assert len({json.loads(m)["enqueued_at"] for m in members}) == 3 and working_lists_empty(r)


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, 10 ** 12, "5", True, None])
def test_a_bad_delay_is_a_failure_not_a_reschedule(r, client, seconds):
    def bad(instance, job, queue, call_next):
        raise Reschedule(seconds)
    proc = make_processor(r, middleware=[bad])
    client.push({"class": testjobs.Record, "args": ["x"]})
    assert run_next(proc)[1] is Outcome.RETRY and r.zcard("schedule") == 0
    entry = json.loads(r.zrange("retry", 0, -1)[0])
    assert entry["error_class"] in ("ValueError", "TypeError") and "Reschedule takes" in entry["error_message"]


def test_a_tampered_delay_is_a_failure(r, client):
    def tampered(instance, job, queue, call_next):
        exc = Reschedule(1)
        exc.seconds = math.nan
        raise exc
    proc = make_processor(r, middleware=[tampered])
    client.push({"class": testjobs.Record, "args": ["x"]})
    assert run_next(proc)[1] is Outcome.RETRY and r.zcard("schedule") == 0 and r.zcard("retry") == 1


def test_schedule_key_of_another_type_sends_the_job_to_the_dead_set(r, client):
    r.set("schedule", "not a zset")
    deaths = []
    proc = make_processor(r, middleware=[Later(None).around_perform], deaths=[lambda job, exc: deaths.append(exc)])
    client.push({"class": testjobs.Record, "args": ["later"]})
    unit, outcome = run_next(proc)
    assert outcome is Outcome.DEAD and r.zrange("dead", 0, -1) == [unit.payload]
    assert b"Redis refused its schedule entry" in r.hget("sidepunch:dead-reasons", unit.payload)
    assert working_lists_empty(r) and len(deaths) == 1 and proc.ctx.counters.take()[:2] == (1, 1)


def test_outcomes_are_the_enum(r, client):
    proc = make_processor(r)
    client.push({"class": testjobs.Record, "args": ["a"]})
    client.push({"class": testjobs.Fail, "args": []})
    r.lpush("queue:default", b'{"class":"testjobs.Record","args":{"not":"a list"},"retry":false,"jid":"j"}')
    got = [run_next(proc)[1] for _ in range(3)]
    assert got == [Outcome.DONE, Outcome.RETRY, Outcome.DISCARDED] and all(type(o) is Outcome for o in got)


def test_a_gave_up_record_is_never_acknowledged(r, client):
    """persist gives up (None) on the retry-set write at the shutdown deadline: the job stays in its working
    list, to be recovered, even if Redis answers the acknowledgement right after."""
    proc = make_processor(r)
    client.push({"class": testjobs.Fail, "args": []})
    unit = proc.fetcher.fetch()
    calls = []

    def gives_up_on_the_first(write):
        calls.append(write)
        return None if len(calls) == 1 else write()
    proc.ctx.retry.handle(unit, testjobs.Fail(), RuntimeError("x"), persist=gives_up_on_the_first)
    assert len(calls) == 1 and r.lrange(unit.working, 0, -1) == [unit.payload] and r.zcard("retry") == 0


class Everything(Middleware):
    def __init__(self, context):
        super().__init__(context)
        self.log = []

    def around_push(self, job, call_next):
        job["tenant"] = "acme"
        return call_next(job)

    def around_perform(self, instance, job, queue, call_next):
        self.log.append(("before", job["jid"], queue))
        try:
            return call_next()
        finally:
            self.log.append(("after", job["jid"]))

    def on_death(self, job, exc):
        self.log.append(("death", job["jid"], type(exc).__name__))


def test_hooks_hold_only_what_a_middleware_overrides():
    class DeathOnly(Middleware):
        def on_death(self, job, exc):
            pass
    mw = DeathOnly(None)
    assert hooks([mw], "around_perform") == () and hooks([mw], "around_push") == ()
    assert hooks([mw], "on_death") == (mw.on_death,)

    def fn(instance, job, queue, call_next):
        return call_next()
    assert hooks([build(fn, None, "around_perform")], "around_perform") == (fn,)  # the function itself: no wrapper
    for bad in (object(), int, "path.to.thing"):
        with pytest.raises(TypeError, match="must be a sidepunch.Middleware subclass or a function"):
            build(bad, None, "around_perform")


def test_a_class_runs_around_perform_and_at_death(r, client):
    mw = Everything(None)
    proc = make_processor(r, middleware=hooks([mw], "around_perform"), deaths=hooks([mw], "on_death"))
    ok = client.push({"class": testjobs.Record, "args": ["a"]})
    dead = client.push({"class": testjobs.DiesAtOnce, "args": []})
    assert [run_next(proc)[1] for _ in range(2)] == [Outcome.DONE, Outcome.DEAD]
    assert mw.log == [("before", ok, "default"), ("after", ok), ("before", dead, "default"), ("after", dead),
                      ("death", dead, "LookupError")]


def test_client_builds_a_class_with_its_context_and_mixes_functions(r):
    def stop_secret(job, call_next):
        return None if job["args"] == ["secret"] else call_next(job)
    client = sidepunch.Client(redis=r, middleware=[Everything, stop_secret])
    built = client.middleware[0]
    assert isinstance(built, Everything) and built.context.redis is r and built.context.config is None
    assert client.push({"class": "X", "args": ["secret"]}) is None
    client.push({"class": "X", "args": ["ok"]})
    assert [json.loads(p)["tenant"] for p in r.lrange("queue:default", 0, -1)] == ["acme"]


def test_context_makes_its_redis_once_on_first_use():
    made = []
    context = MiddlewareContext(lambda: made.append(1) or "a client", clock=lambda: 7.0)
    assert made == [] and context.clock() == 7.0
    assert context.redis == "a client" and context.redis == "a client" and made == [1]


def test_load_middleware_from_config_covers_both_sides(r):
    config = build_config(["-r", "testjobs", "--middleware", "test_middleware.Everything",
                           "--middleware", "testjobs.timing_middleware", "--death-handler", "testjobs.record_death"],
                          {"REDIS_URL": "redis://unused"})
    in_code = sidepunch.configure(redis=r, middleware=[Later]).middleware[0]
    perform, deaths, _ = load_middleware(config)
    everything = sidepunch.default_client().middleware[0]
    assert isinstance(everything, Everything) and everything.context.config is config
    assert perform == (everything.around_perform, testjobs.timing_middleware, in_code.around_perform)
    assert deaths == (everything.on_death, testjobs.record_death)
    sidepunch.default_client().push({"class": "X", "args": []})  # a push from inside a worker
    assert json.loads(r.lindex("queue:default", 0))["tenant"] == "acme"


def test_a_class_registered_both_ways_runs_once_on_each_side(r):
    config = build_config(["-r", "testjobs", "--middleware", "test_middleware.Everything"],
                          {"REDIS_URL": "redis://unused"})
    in_code = sidepunch.configure(redis=r, middleware=[Everything]).middleware[0]
    perform, deaths, _ = load_middleware(config)
    client = sidepunch.default_client()
    assert client.middleware == (in_code,) and len(perform) == 1 and len(deaths) == 1
    assert perform[0].__self__.context.config is config  # the daemon's instance, built with its config


@pytest.mark.parametrize("flag, path, message", [
    ("--middleware", "testjobs.no_such_thing", "testjobs.no_such_thing is not a function in module testjobs"),
    ("--middleware", "testjobs.time", "is not a function"),
    ("--middleware", "nosuchmodule.mw", "No module named 'nosuchmodule'"),
    ("--death-handler", "no_dots", "is not a dotted path"),
    ("--middleware", "testjobs.Record", "must be a sidepunch.Middleware subclass or a function"),
])
def test_load_middleware_names_what_is_missing(flag, path, message):
    config = build_config(["-r", "testjobs", flag, path], {"REDIS_URL": "redis://unused"})
    with pytest.raises((ImportError, AttributeError, TypeError), match=message):
        load_middleware(config)


def test_a_middleware_class_by_dotted_path_in_a_real_daemon(daemon, r, client):
    later = client.push({"class": "middleware_app.Record", "args": ["later"]})
    now = client.push({"class": "middleware_app.Record", "args": ["now"]})
    client.push({"class": "middleware_app.Spawn", "args": ["spawned"]})
    dies = client.push({"class": "middleware_app.Dies", "args": [], "retry": 0})
    d = daemon("--workers", "1", "--threads", "2", "-r", "middleware_app", "-r", "testjobs", "--poll-interval", "0.5",
               "--middleware", "middleware_app.Throttle", "--middleware", "testjobs.timing_middleware",
               "--death-handler", "testjobs.record_death")
    wait_for(lambda: set(r.lrange("done", 0, -1)) == {b"now", b"later"}, 30, message="both jobs done")
    assert r.lrange("rescheduled", 0, -1) == [later.encode()]  # the first run was rescheduled, the second ran
    assert f"{later} config=True".encode() in r.lrange("throttle", 0, -1)
    assert f"{now} config=True".encode() in r.lrange("throttle", 0, -1)
    wait_for(lambda: r.lrange("deaths", 0, -1) == [f"{dies} LookupError".encode()], 15, message="function death")
    assert r.lrange("throttle-deaths", 0, -1) == [f"{dies} LookupError".encode()]
    assert later.encode() in r.lrange("in-code", 0, -1)  # registered in code by the app, run by the worker
    parked = wait_for(lambda: r.lindex("queue:parked", 0), 15, message="the spawned push")
    assert json.loads(parked)["seen_by"] == "Throttle"  # a push from a job passes the daemon's middleware
    assert r.zcard("retry") == 0 and r.zcard("schedule") == 0
    wait_for(lambda: r.get("stat:processed") == b"5", 15, message="stats")  # the reschedule counts
    assert r.get("stat:failed") == b"1"  # only Dies
    d.wait_log(f"reschedule middleware_app.Record jid={later} queue=default", 5)


def test_a_middleware_that_cannot_be_built_is_a_boot_error(daemon, r):
    d = daemon("--workers", "1", "-r", "middleware_app", "--middleware", "middleware_app.Broken")
    assert d.wait(30) == 3
    assert "cannot load the app: RuntimeError: no limits configured" in d.log() and "Traceback" not in d.log()


def hostile_values(rng, depth=0):
    """A random JSON value of the kinds hostile payloads carry: odd numbers, unicode, escapes, nesting."""
    kind = rng.randrange(9 if depth < 20 else 6)
    return [lambda: None, lambda: rng.choice([True, False]), lambda: rng.randrange(-10 ** 30, 10 ** 30),
            lambda: rng.choice([1e308, -0.0, 5e-324, 0.1]), lambda: rng.choice(["", "é\u2028\n\"", "\u0000",
                                                                                   "<script>", "😀" * 3]),
            lambda: "x" * rng.randrange(1000),
            lambda: [hostile_values(rng, depth + 1) for _ in range(rng.randrange(3))],
            lambda: {rng.choice(["a", "retry", "at", "enqueued_at", "é"]): hostile_values(rng, depth + 1)},
            lambda: [[[hostile_values(rng, depth + 3)]]]][kind]()


def test_property_any_payload_rescheduled_lands_once_as_fetched(r, client):
    """Many generated payloads, each rescheduled by a middleware: each is in the schedule exactly once with its
    bytes as fetched (twins included), nothing stays in a queue or working list, and a good job still runs."""
    rng = random.Random(10)
    proc = make_processor(r, middleware=[lambda instance, job, queue, call_next: Reschedule(rng.randrange(100))])
    raws = []
    for n in range(150):
        job = {"class": "testjobs.Noop", "args": [hostile_values(rng) for _ in range(rng.randrange(4))],
               "jid": f"j{n % 120}", **{f"k{i}": hostile_values(rng) for i in range(rng.randrange(3))}}
        raws.append(json.dumps(job, ensure_ascii=rng.random() < 0.5).encode())
    raws += raws[:10]  # byte-identical twins
    r.lpush("queue:default", *raws)
    outcomes = [run_next(proc)[1] for _ in raws]
    assert outcomes == [Outcome.RESCHEDULED] * len(raws)
    members = r.zrange("schedule", 0, -1)
    assert len(members) == len(raws) and set(raws) <= set(members)
    assert sorted(json.loads(m)["jid"] for m in members) == sorted(json.loads(x)["jid"] for x in raws)
    assert r.llen("queue:default") == 0 and working_lists_empty(r) and proc.ctx.counters.take()[:2] == (len(raws), 0)
    proc.ctx.server_middleware = ()
    client.push({"class": testjobs.Record, "args": ["still flowing"]})
    assert run_next(proc)[1] is Outcome.DONE and r.lrange("done", 0, -1) == [b"still flowing"]
