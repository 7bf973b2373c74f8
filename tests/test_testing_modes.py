"""Testing modes (sidepunch.testing): fake and inline, hooked at the client's write seam, and the pytest plugin.

Checked against a real redis-server: in fake mode no push of any kind reaches Redis, yet what is kept is byte for
byte what the push would have written; drain runs jobs (sync and async, and those they push) with retries off;
inline runs each push at once from its encoded bytes; client middleware always runs, server middleware as
documented; leaving a mode, even by an exception, restores normal pushes. The plugin's fixtures run in a
subprocess pytest, as a user's suite would load them (through the entry point).
"""
import asyncio
import datetime as dt
import random
import subprocess
import sys
import threading
import time

import pytest

import sidepunch
from sidepunch import AsyncClient, Client, Middleware, Reschedule
from sidepunch.client import aio, modes
from sidepunch.testing import UnknownJob, fake, inline
from sidepunch.core.payload import decode
from test_async_client import default, fix, snapshot, sync_and_async  # noqa: F401 - `default` is a fixture
from test_hostile_args import value

pytest_plugins = ["pytester"]
RAN: list = []  # what the jobs below did, in order; emptied by the `ran` fixture


@pytest.fixture
def ran():
    RAN.clear()
    yield RAN
    RAN.clear()


class Chain(sidepunch.Job):
    """Pushes the async half of a chain until `n` reaches 3."""
    queue = "chain"

    def perform(self, n):
        RAN.append(("Chain", n, self.jid))
        if n < 3:
            AChain.perform_async(n + 1)


class AChain(sidepunch.Job):
    async def perform(self, n):
        await asyncio.sleep(0)
        RAN.append(("AChain", n, asyncio.get_running_loop()))
        if n < 3:
            await Chain.aperform_async(n + 1)


class Boom(sidepunch.Job):
    retry = 25

    def perform(self, why):
        RAN.append(("Boom", why))
        raise ValueError(why)


@sidepunch.job(queue="low")
def note(*args):
    RAN.append(("note", *args))


@sidepunch.job
async def anote(*args):
    RAN.append(("anote", *args, asyncio.get_running_loop()))


@sidepunch.job
async def aboom(why):
    await asyncio.sleep(0)
    raise KeyError(why)


def test_fake_keeps_the_exact_bytes_of_every_kind_of_push_and_nothing_reaches_redis(default, r):
    """Each kind of push, sync and awaited: with the same clock and jids, the entries kept, written by a real
    client, give exactly the keys, bytes and scores that the push itself writes; during fake mode Redis stays
    empty, and the push returns what it returns in production (the jids)."""
    aclient = aio.twin_of(default)
    for seed, (name, sync_call, async_call) in enumerate(sync_and_async(default, aclient)):
        for call in (sync_call, lambda: asyncio.run(async_call())):
            r.flushall()
            fix(default.preparer, seed)
            real = call(), snapshot(r)
            r.flushall()
            fix(default.preparer, seed)
            with fake() as jobs:
                returned = call()
                assert snapshot(r) == {}, name
            assert snapshot(r) == {} and returned == real[0], name
            Client(redis=r).write(jobs.entries())
            assert snapshot(r) == real[1], name


def test_fake_takes_pushes_of_every_client_in_the_process(redis_server, r):
    """Clients the code under test builds itself, one with its own writer, async ones, and other threads:
    every push is kept, none is written, and the client's own writer is not called."""
    written = []
    own = Client(redis_server.url, writer=written.append)
    plain, aclient = Client(redis_server.url), AsyncClient(redis_server.url)
    with fake() as jobs:
        own.push({"class": Chain, "args": [1]})
        plain.push_bulk({"class": Chain, "args": [[2], [3]]})
        asyncio.run(aclient.push({"class": AChain, "args": [4]}))
        asyncio.run(aclient.push_bulk([{"class": AChain, "args": [5], "at": time.time() + 60}]))
        thread = threading.Thread(target=lambda: plain.push({"class": Chain, "args": [6]}))
        thread.start()
        thread.join()
    assert [j["args"] for j in jobs.jobs()] == [[1], [2], [3], [4], [5], [6]]
    assert written == [] and r.keys("*") == []


def test_jobs_filters_by_class_function_name_and_queue_and_gives_scheduled_jobs_their_at(ran):
    at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    with fake() as jobs:
        Chain.perform_async(1)
        note.perform_async("a")
        note.set(queue="other").perform_at(at, "b")
        anote.perform_in(30, "c")
        sidepunch.default_client().push({"class": "RubyWorker", "args": [], "queue": "ruby"})
        assert len(jobs) == 5 and ran == []
        assert [j["args"] for j in jobs.jobs(note)] == [["a"], ["b"]]
        assert jobs.jobs(Chain) == jobs.jobs(job=Chain.job_name()) == jobs.jobs(queue="chain")
        assert [j["class"] for j in jobs.jobs(queue="ruby")] == ["RubyWorker"]
        assert jobs.jobs(note, queue="other")[0]["at"] == at.timestamp()
        scheduled = jobs.jobs(anote)[0]
        assert abs(scheduled["at"] - time.time() - 30) < 5 and "enqueued_at" not in scheduled
        assert "at" not in jobs.jobs(Chain)[0] and "enqueued_at" in jobs.jobs(Chain)[0]
        jobs.jobs()[0]["args"].append("changed")  # a copy: the store keeps the bytes
        assert jobs.jobs()[0]["args"] == [1]
        with pytest.raises(TypeError, match="job= takes"):
            jobs.jobs(job=int)
        with pytest.raises(TypeError, match="queue= takes"):
            jobs.clear(queue=["low"])
        assert len(jobs) == 5


def test_drain_runs_jobs_and_the_jobs_they_push_sync_and_async_in_order(ran):
    """Sync and async jobs push each other; one drain runs them all, async ones on one event loop per drain."""
    with fake() as jobs:
        jid = Chain.perform_async(0)
        anote.perform_async("x")
        assert jobs.drain() == 5
        assert len(jobs) == 0
    assert [step[:2] for step in ran] == [("Chain", 0), ("anote", "x"), ("AChain", 1), ("Chain", 2), ("AChain", 3)]
    assert ran[0][2] == jid
    assert ran[1][2] is ran[2][2] is ran[4][2]  # one loop for the drain
    assert ran[1][2].is_closed()


def test_an_exception_propagates_from_drain_without_retries_and_the_other_jobs_stay(ran):
    with fake() as jobs:
        Boom.perform_async("first")
        note.perform_async("after")
        with pytest.raises(ValueError, match="first"):
            jobs.drain()
        assert [j["class"] for j in jobs.jobs()] == [note.job_name()]  # the failed job is gone, not retried
        assert jobs.drain() == 1
    assert ran == [("Boom", "first"), ("note", "after")]


def test_scheduled_jobs_run_only_when_drain_is_asked_for_them_by_then_in_due_order(ran):
    now = time.time()
    with fake() as jobs:
        note.perform_at(now + 3600, "in an hour")
        note.perform_in(60, "in a minute")
        note.perform_in(dt.timedelta(days=2), "in two days")
        note.perform_async("now")
        assert jobs.drain() == 1 and ran == [("note", "now")]
        assert jobs.drain(until=now + 3600) == 2
        assert ran[1:] == [("note", "in a minute"), ("note", "in an hour")]
        assert jobs.drain(until=dt.datetime.fromtimestamp(now + 3 * 86400, dt.timezone.utc)) == 1
        assert len(jobs) == 0
        for bad, error in ((dt.datetime(2030, 1, 1), ValueError), (True, TypeError), ("soon", TypeError),
                           (float("nan"), ValueError), (10 ** 400, ValueError)):
            with pytest.raises(error, match="until"):
                jobs.drain(until=bad)


def test_clear_forgets_all_jobs_or_those_that_match(ran):
    with fake() as jobs:
        Chain.perform_async(1)
        note.perform_in(60, "later")
        note.perform_async("now")
        assert jobs.clear(note) == 2 and [j["class"] for j in jobs.jobs()] == [Chain.job_name()]
        note.perform_in(60, "again")
        assert jobs.clear() == 2 and jobs.jobs() == [] and jobs.drain(until=time.time() + 120) == 0
    assert ran == []


def test_inline_runs_each_push_at_once_from_its_encoded_bytes(ran, r):
    with inline() as mode:
        jid = Chain.perform_async(2)
        assert [step[:2] for step in ran] == [("Chain", 2), ("AChain", 3)] and ran[0][2] == jid
        note.perform_in(3600, {"k": [1.5, None]}, "é")  # scheduled: at once too
        note.perform_bulk([[1], [2]])
        assert ran[2:] == [("note", {"k": [1.5, None]}, "é"), ("note", 1), ("note", 2)]
        asyncio.run(anote.aperform_async("awaited"))
        assert ran[-1][:2] == ("anote", "awaited")
    assert [p["class"] for p in mode.performed][:2] == [AChain.job_name(), Chain.job_name()]  # as they finished
    assert len(mode.performed) == 6 and r.keys("*") == []


def test_inline_refuses_bad_arguments_as_a_push_does_and_runs_nothing(ran, client):
    for bad in ((1, 2), {1: "int key"}, float("inf"), object(), "\ud800"):
        with pytest.raises((TypeError, ValueError)) as production:
            client.push({"class": note, "args": [bad]})
        with inline():
            with pytest.raises(type(production.value)) as in_inline:
                note.perform_async(bad)
        assert str(in_inline.value) == str(production.value)
    assert ran == []


class Catch(sidepunch.Job):
    def perform(self, *args):
        RAN.append(list(args))


def refusal(call):
    """None if `call` returned, else (the type, the message) of what it raised."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - compared with what production raised
        return type(exc), str(exc)
    return None


def test_generated_arguments_fare_in_both_modes_as_in_a_real_push(ran, client, r):
    """Good and hostile arguments (test_hostile_args' generator): whatever a real push refuses, both modes refuse
    with the same error and run nothing; whatever it writes, fake keeps the same arguments and inline hands the
    job exactly the arguments a worker would decode from Redis."""
    rng = random.Random(13)
    for _ in range(300):
        arg = value(rng)
        r.flushall()
        refused = refusal(lambda: client.push({"class": Catch, "args": [arg]}))
        stored = None if refused else decode(r.lrange("queue:default", 0, -1)[0])["args"]
        ran.clear()
        with fake() as jobs:
            assert refusal(lambda: Catch.perform_async(arg)) == refused
        with inline():
            assert refusal(lambda: Catch.perform_async(arg)) == refused
        assert [decode(e[2])["args"] for e in jobs.entries()] == ([] if refused else [stored])
        assert ran == ([] if refused else [stored])


def test_inline_raises_what_the_job_raises_to_the_pusher(ran):
    with inline():
        with pytest.raises(ValueError, match="now"):
            Boom.perform_async("now")
        with pytest.raises(ValueError, match="bulk"):
            Boom.perform_bulk([["bulk"], ["never"]])
    assert ran == [("Boom", "now"), ("Boom", "bulk")]


def test_inside_a_running_loop_drain_uses_a_helper_loop_and_adrain_the_callers(ran):
    async def test_body():
        here = asyncio.get_running_loop()
        with fake() as jobs:
            await anote.aperform_async("a")
            anote.perform_async("b")
            assert jobs.drain() == 2
            await anote.aperform_async("c")
            assert await jobs.adrain() == 1
            for drain in (jobs.drain, jobs.adrain):
                aboom.perform_async(drain.__name__)
                with pytest.raises(KeyError, match=drain.__name__):
                    result = drain()
                    if asyncio.iscoroutine(result):
                        await result
        with inline():
            anote.perform_async("sync push")
            await anote.aperform_async("awaited push")
            with pytest.raises(KeyError, match="inline"):
                aboom.perform_async("inline")
            with pytest.raises(KeyError, match="awaited"):
                await aboom.aperform_async("awaited")
        return here

    here = asyncio.run(test_body())
    assert [step[1] for step in ran] == ["a", "b", "c", "sync push", "awaited push"]
    assert ran[0][2] is not here and ran[1][2] is not here  # a sync drain cannot re-enter the running loop
    assert ran[2][2] is here and ran[4][2] is here and ran[3][2] is not here


class Tag(Middleware):
    """Tags pushes (client side) and records the jobs it wraps (server side, both kinds)."""

    def around_push(self, job, call_next):
        if job["args"] == ["stop"]:
            return None
        job["tenant"] = "acme"
        return call_next(job)

    def around_perform(self, instance, job, queue, call_next):
        RAN.append(("around", job["tenant"], queue))
        return call_next()

    async def around_perform_async(self, instance, job, queue, call_next):
        RAN.append(("around async", job["tenant"], queue))
        return await call_next()


@pytest.fixture
def tagged():
    client = sidepunch.configure(middleware=[Tag])
    yield client
    sidepunch.configure()


def test_client_middleware_runs_at_the_push_and_configured_server_hooks_around_each_job(ran, tagged):
    with fake() as jobs:
        assert note.perform_async("stop") is None  # a middleware stopped it: nothing kept
        note.perform_async(1)
        asyncio.run(anote.aperform_async(2))
        assert [j["tenant"] for j in jobs.jobs()] == ["acme", "acme"]
        jobs.drain()
    assert ran[:3] == [("around", "acme", "low"), ("note", 1), ("around async", "acme", "default")]
    assert ran[3][:2] == ("anote", 2) and len(ran) == 4
    ran.clear()
    with fake(server_middleware=[]) as jobs:
        note.perform_async(3)
        jobs.drain()
    with inline(server_middleware=[]):
        note.perform_async(4)
    assert ran == [("note", 3), ("note", 4)]


def test_explicit_server_middleware_run_and_a_reschedule_goes_back_to_the_schedule(ran):
    def later(instance, job, queue, call_next):
        if job["args"] == ["again"]:
            raise Reschedule(120)
        RAN.append(("mw", job["args"]))
        return call_next()

    with fake(server_middleware=[later]) as jobs:
        note.perform_async("again")
        note.perform_async("go")
        assert jobs.drain() == 2 and ran == [("mw", ["go"]), ("note", "go")]
        (back,) = jobs.jobs()
        assert back["args"] == ["again"] and abs(back["at"] - time.time() - 120) < 5
    with inline(server_middleware=[later]):
        with pytest.raises(Reschedule):
            note.perform_async("again")
    with pytest.raises(TypeError, match="server_middleware"):
        fake(server_middleware="not.a.list")


def test_leaving_a_mode_restores_normal_pushes_even_after_an_exception(client, r):
    for mode in (fake, inline):
        with pytest.raises(RuntimeError, match="test body failed"):
            with mode():
                raise RuntimeError("test body failed")
        assert modes.active is None
        client.push({"class": "RubyWorker", "args": [mode.__name__]})
    assert len(r.lrange("queue:default", 0, -1)) == 2


def test_modes_nest_and_must_be_left_in_order(ran):
    with fake() as outer:
        note.perform_async("kept")
        with inline():
            note.perform_async("ran")
        with fake() as inner:
            note.perform_async("inner")
        assert len(inner) == 1
        with pytest.raises(RuntimeError, match="already active"):
            outer.__enter__()
        first, second = fake(), fake()
        first.__enter__()
        second.__enter__()
        with pytest.raises(RuntimeError, match="reverse order"):
            first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert modes.active is outer
    assert [j["args"] for j in outer.jobs()] == [["kept"]] and ran == [("note", "ran")]
    with pytest.raises(RuntimeError, match="inside the `with fake"):
        outer.drain()


def test_a_job_no_class_of_this_process_has_fails_the_drain():
    with fake() as jobs:
        sidepunch.default_client().push({"class": "RubyWorker", "args": [1]})
        with pytest.raises(UnknownJob, match="RubyWorker"):
            jobs.drain()


def test_jobs_defined_in_a_test_function_and_wire_names_resolve(ran):
    class Local(sidepunch.Job):
        def perform(self):
            RAN.append("local")

    class Aliased(sidepunch.Job):
        wire_name = "HardWorker"

        def perform(self, x):
            RAN.append(("alias", x))

    with fake() as jobs:
        Local.perform_async()
        sidepunch.default_client().push({"class": "HardWorker", "args": [7]})
        assert jobs.drain() == 2
    assert ran == ["local", ("alias", 7)]


PLUGIN_TESTS = '''
import redis
import sidepunch

class Mail(sidepunch.Job):
    def perform(self, to):
        SENT.append(to)

SENT = []

def test_fake(sidepunch_fake):
    Mail.perform_async("a@b.c")
    assert [j["args"] for j in sidepunch_fake.jobs(Mail)] == [["a@b.c"]] and SENT == []
    assert sidepunch_fake.drain() == 1 and SENT == ["a@b.c"]

def test_inline(sidepunch_inline):
    Mail.perform_async("x@y.z")
    assert SENT[-1] == "x@y.z" and len(sidepunch_inline.performed) == 1

def test_redis(sidepunch_redis):
    client = sidepunch.Client(sidepunch_redis)
    client.push({"class": Mail, "args": ["real"]})
    assert redis.Redis.from_url(sidepunch_redis).llen("queue:default") == 1

def test_redis_is_empty_again(sidepunch_redis):
    assert redis.Redis.from_url(sidepunch_redis).keys("*") == []

def test_no_mode_outside_the_fixtures():
    from sidepunch.client import modes
    assert modes.active is None
'''


def test_the_pytest_plugin_gives_its_fixtures_through_the_entry_point(pytester):
    pytester.makepyfile(test_user=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)
    listed = pytester.runpytest_subprocess("--fixtures", "-q").stdout.str()
    assert all(name in listed for name in ("sidepunch_fake", "sidepunch_inline", "sidepunch_redis"))


def test_loading_the_plugin_imports_nothing_of_sidepunch(tmp_path):
    """pytest loads it in every suite of the environment: it must cost those suites nothing."""
    code = ("import sys, importlib.metadata as md; "
            "(ep,) = [e for e in md.entry_points(group='pytest11') if e.name == 'sidepunch']; ep.load(); "
            "print(sorted(m for m in sys.modules if m.startswith('sidepunch')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sidepunch_pytest']"
