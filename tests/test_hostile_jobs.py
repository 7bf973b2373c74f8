"""Hostile jobs and payloads: whatever a job raises, returns or does to its process, and whatever bytes sit in a
queue, each job ends in exactly one visible place (done, retry or dead), runs once per attempt, and the jobs
behind it keep flowing. Driven through Processor against a real redis-server, then through the real sidepunchd.
"""
import json
import logging
import os
import random
import signal
import sys
import threading
import time

import psutil
import pytest

import sidepunch
from sidepunch.server.config import build_config
from sidepunch.server.fetch import ReliableFetch
import conftest
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import hostile_jobs  # noqa: E402

IDENTITY = "testhost:4321:feedfacecafe"
KINDS = sorted(hostile_jobs.RAISERS)
BASE_KINDS = ["CancelledError", "GeneratorExit", "KeyboardInterrupt", "SystemExit", "CustomBase"]


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def make_processor(r, middleware=(), deaths=(), fetch="reliable"):
    return conftest.make_processor(r, "hostile_jobs", IDENTITY, middleware, deaths, fetch)


class Case:
    """One payload pushed straight to the queue, with the place it must end in."""

    def __init__(self, n, expect, payload=None, raw=None, check=None):
        self.token = f"<T{n}>"
        self.expect = expect
        self.check = check
        if raw is not None:
            self.raw = raw.replace(b"TOKEN", self.token.encode())
        else:
            self.raw = json.dumps({"jid": f"jid-{n}", **payload}, ensure_ascii=False).replace(
                "TOKEN", self.token).encode("utf-8", "surrogatepass")


def job(cls, *args, **extra):
    return {"class": f"hostile_jobs.{cls}", "args": ["TOKEN", *args], **extra}


def error_is(words):
    return lambda entry, reason: words in entry["error_class"] + ": " + entry["error_message"]


def reason_is(words):
    return lambda entry, reason: reason is not None and words in reason


def hostile_cases():
    specs = []
    for kind in KINDS:
        specs.append(("retry", job("Raises", kind), None))
    specs += [
        ("retry", job("Raises", "unprintable"), error_is("!!! ERROR MESSAGE THREW AN ERROR !!!")),
        ("retry", job("Raises", "surrogate-message"), error_is("ValueError: bad ? text")),
        ("retry", job("Raises", "non-ascii-class"), error_is("hostile_jobs.AccéntéError: é")),
        ("retry", job("Raises", "CancelledError"), error_is("CancelledError")),
        ("retry", job("AsyncPerform"), error_is("make it an async def")),
        ("retry", job("GeneratorPerform"), error_is("a generator perform is never run")),
        ("retry", job("ConstructorRaises"), error_is("CustomBase: cannot even be built")),
        ("retry", {"class": "hostile_jobs.nowhere.Job", "args": ["TOKEN"]}, error_is("unknown job class")),
        ("retry", {"class": "os.system", "args": ["TOKEN"]}, error_is("not a sidepunch Job")),
        ("retry", {"class": "hostile_jobs.Noop", "args": {"t": "TOKEN"}}, error_is("args must be a JSON array")),
        ("retry", {"class": "hostile_jobs.Noop", "tok": "TOKEN"}, error_is("args must be a JSON array")),
        ("dead", job("Raises", "CustomBase", retry=10 ** 400, retry_count=10 ** 100), reason_is("could not be recorded")),
        ("retry", job("Raises", "CustomBase", retry_count=-5), lambda e, _: e["retry_count"] == -4),
        ("retry", job("Raises", "CustomBase", retry_count=1.5), lambda e, _: e["retry_count"] == 0),
        ("dead", job("Raises", "CustomBase", retry_count=10 ** 400), lambda e, _: e["retry_count"] == 10 ** 400 + 1),
        ("retry", job("Raises", "CustomBase", retry_queue={"a": 1}), lambda e, _: e["queue"] == "default"),
        ("retry", job("Raises", "CustomBase", retry_queue=""), lambda e, _: e["queue"] == "default"),
        ("retry", job("Raises", "CustomBase", backtrace=10 ** 400), None),
        ("retry", job("Raises", "CustomBase", backtrace=[1]), None),
        ("dead", job("Raises", "CustomBase", retry=0, dead="no"), None),
        ("done", job("Noop", timeout=10 ** 400), None),
        ("done", job("Noop", timeout="soon"), None),
        ("done", job("Noop", timeout=-1), None),
        ("done", job("Noop", jid=[[["deep"]]] * 3), None),
        ("done", job("Noop", [[[[[[[[[[1]]]]]]]]]] * 5), None),
    ]
    for kind in ("object", "NotImplemented", "exception", "big", "self", "false"):
        specs.append(("done", job("Returns", kind), None))
    for kind in BASE_KINDS + ["unprintable", "str-exits"]:
        specs.append(("retry", job("HookRaises", "retry_in", kind), None))
        specs.append(("dead", job("Exhausted", "retries_exhausted", kind), None))
    specs.append(("dead", job("HookRaises", "retry_in-returns", "huge"), reason_is("could not be recorded")))
    for kind in ("negative", "float", "bool", "str", "list"):
        specs.append(("retry", job("HookRaises", "retry_in-returns", kind), None))
    specs.append(("dead", job("Exhausted", "retries_exhausted-mutates", "x"), reason_is("could not be recorded")))
    for kind in BASE_KINDS:
        specs.append(("retry", job("Starts", hostile_middleware=kind, middleware_when="before"), None))
        specs.append(("retry", job("Starts", hostile_middleware=kind, middleware_when="after"), None))
    raws = [
        b"\xff{not json TOKEN",
        b'{"tok":"TOKEN","class":"hostile_jobs.Noop","args":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"tok":"TOKEN","class":"hostile_jobs.Noop","args":[NaN]}',
        b'{"tok":"TOKEN","class":"hostile_jobs.Noop","args":[1e999]}',
        b'{"tok":"TOKEN","class":"hostile_jobs.Noop","args":["\\ud800"]}',
        b'["TOKEN", {"class": "hostile_jobs.Noop"}]',
        b'{"tok":"TOKEN","class":5,"args":[]}',
        b'{"tok":"TOKEN","class":"","args":[]}',
        b'{"tok":"TOKEN","class":"hostile_jobs.Noop","args":[]',
    ]
    cases = [Case(i, expect, payload=payload, check=check) for i, (expect, payload, check) in enumerate(specs)]
    cases += [Case(len(specs) + i, "dead", raw=raw, check=reason_is("unreadable")) for i, raw in enumerate(raws)]
    return cases


def places(r, token):
    """Every place in Redis where the job carrying `token` is, e.g. ["retry"]; "done" if it ran to the end."""
    tok = token.encode()
    found = [z for z in ("retry", "dead", "schedule") for m in r.zrange(z, 0, -1) if tok in m]
    for key in r.keys("queue:*") + r.keys("working:*"):
        found += [key.decode() for m in r.lrange(key, 0, -1) if tok in m]
    return found + ["done" for m in r.lrange("done", 0, -1) if m == tok]


def entry_of(r, case):
    """(the decoded entry or None, its dead-set reason or None) for a case that ended in retry or dead."""
    tok = case.token.encode()
    for z in ("retry", "dead"):
        for member in r.zrange(z, 0, -1):
            if tok in member:
                reason = r.hget("sidepunch:dead-reasons", member)
                if reason is not None:
                    assert member == case.raw  # kept byte for byte
                    return None, reason.decode()
                return json.loads(member), None
    return None, None


def assert_each_in_exactly_one_place(r, cases):
    wrong = {c.token: (c.expect, places(r, c.token)) for c in cases if places(r, c.token) != [c.expect]}
    assert not wrong, f"jobs not in exactly their one place: {wrong}"
    runs = [t.decode() for t in r.lrange("runs", 0, -1)]
    assert all(runs.count(c.token) <= 1 for c in cases), "a job ran twice"
    for case in cases:
        if case.check is not None:
            entry, reason = entry_of(r, case)
            assert case.check(entry, reason), (case.token, case.raw[:200], entry, reason)


@pytest.mark.parametrize("fetch", ["reliable", "basic"])
def test_every_hostile_job_and_payload_lands_in_exactly_one_place(r, fetch):
    deaths = []
    proc = make_processor(r, middleware=[hostile_jobs.middleware], fetch=fetch,
                          deaths=[lambda job, exc: deaths.append(job.get("jid")), hostile_jobs.raising_death_handler])
    cases = hostile_cases()
    for case in cases:
        r.lpush("queue:default", case.raw)
    good = Case(9999, "done", payload=job("Noop"))
    r.lpush("queue:default", good.raw)
    outcomes = []
    while (unit := proc.fetcher.fetch()) is not None:
        outcomes.append(proc.process(unit))
        assert len(outcomes) <= len(cases) + 1, "a job was put back and ran again"
    proc.fetcher.release()
    assert len(outcomes) == len(cases) + 1 and outcomes[-1] == "done"
    assert_each_in_exactly_one_place(r, cases + [good])
    assert r.keys("working:*") == [] and r.llen("queue:default") == 0
    dead_jobs = [c for c in cases if c.expect == "dead" and c.raw.startswith(b'{"jid"')]
    assert len(deaths) == len(dead_jobs)  # every death handler ran for every dead job, the raising one too
    assert r.llen("deaths") == len(dead_jobs)


def test_a_job_the_worker_took_away_is_not_recorded_by_its_thread(r, client):
    """The one exception to "whatever it raises, it failed": a job the worker abandoned (timeout, shutdown)."""
    proc = make_processor(r)
    client.push({"class": hostile_jobs.Raises, "args": ["<A>", "CancelledError"]})
    unit = proc.fetcher.fetch()
    original = hostile_jobs.raise_kind

    def taken_away_then_raise(kind):
        assert proc.abandon() is not None  # what the child's timeout enforcement does
        original(kind)

    hostile_jobs.raise_kind = taken_away_then_raise
    try:
        assert proc.process(unit) == "abandoned"
    finally:
        hostile_jobs.raise_kind = original
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and r.lrange(unit.working, 0, -1) == [unit.payload]


@pytest.mark.parametrize("how, status", [("return", 0), ("raise", 1)])
def test_a_forked_child_of_a_job_exits_when_it_comes_back(r, client, how, status):
    proc = make_processor(r)
    client.push({"class": hostile_jobs.Forks, "args": ["<F>", how]})
    parent = os.getpid()
    outcome = proc.process(proc.fetcher.fetch())
    if os.getpid() != parent:  # only if the guard failed: never let a copy of pytest go on
        os._exit(99)
    assert outcome == "done"
    assert r.lrange("child-status", 0, -1) == [f"<F> exit {status}".encode()]
    assert r.lrange("runs", 0, -1) == [b"<F>"] and r.lrange("done", 0, -1) == [b"<F>"]
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0


def test_a_retry_entry_redis_refuses_goes_to_the_dead_set_with_a_reason(r, client):
    proc = make_processor(r)
    r.set("retry", "not a sorted set")  # a key of another type: Redis refuses the write, and would forever
    client.push({"class": hostile_jobs.Raises, "args": ["<W>", "CustomBase"]})
    unit = proc.fetcher.fetch()
    assert proc.process(unit) == "dead"
    assert r.zrange("dead", 0, -1) == [unit.payload]  # as fetched: its error fields could not be stored
    reason = r.hget("sidepunch:dead-reasons", unit.payload).decode()
    assert "Redis refused its retry entry" in reason and "WRONGTYPE" in reason and "CustomBase: custom" in reason
    assert r.llen(unit.working) == 0 and r.get("retry") == b"not a sorted set"


def test_when_no_place_will_take_the_job_it_waits_in_its_working_list_and_says_so_once(r, client, caplog):
    caplog.set_level(logging.INFO, logger="test.outage")
    proc = make_processor(r)
    r.set("retry", "not a sorted set")
    r.set("dead", "not a sorted set either")
    client.push({"class": hostile_jobs.Raises, "args": ["<W>", "CustomBase"]})
    unit = proc.fetcher.fetch()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(proc.process(unit)), daemon=True)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and r.lrange(unit.working, 0, -1) == [unit.payload] and len(proc.ctx.work) == 1
    r.delete("dead")
    thread.join(10)
    assert outcome == ["dead"] and r.zrange("dead", 0, -1) == [unit.payload] and r.llen(unit.working) == 0
    refusals = [rec for rec in caplog.records if rec.name == "test.outage" and "refuses commands" in rec.getMessage()]
    assert len(refusals) == 1 and "WRONGTYPE" in refusals[0].getMessage()


def test_a_queue_key_of_another_type_is_skipped_not_fatal(r, client):
    config = build_config(["-r", "hostile_jobs", "-q", "bad", "-q", "default"], {"REDIS_URL": "redis://unused"})
    r.set("queue:bad", "not a list")
    client.push_bulk({"class": hostile_jobs.Noop, "args": [["<Q1>"], ["<Q2>"], ["<Q3>"]]})
    for batch in (1, 10):
        fetcher = ReliableFetch(r, config.queues, random.Random(1), IDENTITY, batch, 0, batch=batch)
        fetcher._job_seconds = 0.0  # as after fast jobs: fetch in batches
        unit = fetcher.fetch()
        assert unit.queue == "default"
        fetcher.requeue([unit, *fetcher.buffered()])
    only_bad = build_config(["-r", "hostile_jobs", "-q", "bad"], {"REDIS_URL": "redis://unused"})
    fetcher = ReliableFetch(r, only_bad.queues, random.Random(1), IDENTITY, 5, 0)
    assert fetcher.fetch() is None  # waits as on an empty queue; nothing raised
    assert r.get("queue:bad") == b"not a list" and r.llen("queue:default") == 3


# --- the real daemon ----------------------------------------------------------------------------------------------

def test_daemon_survives_hostile_jobs_and_payloads_and_good_jobs_keep_flowing(daemon, r):
    cases = hostile_cases()
    for case in cases:
        r.lpush("queue:default", case.raw)
    good = Case(9999, "done", payload=job("Noop"))
    r.lpush("queue:default", good.raw)
    d = daemon("--workers", "1", "--threads", "2", "-r", "hostile_jobs", "--middleware", "hostile_jobs.middleware",
               "--death-handler", "hostile_jobs.raising_death_handler")
    d.wait_children(1)
    wait_for(lambda: places(r, good.token) == ["done"], 60, message="the good job behind the hostile ones")
    wait_for(lambda: r.llen("queue:default") == 0 and not any(r.llen(k) for k in r.keys("working:*")), 30,
             message="every job to be taken and recorded")
    assert d.proc.poll() is None
    assert_each_in_exactly_one_place(r, cases + [good])
    log = d.log()
    assert "died" not in log and "crashed" not in log
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0


def _group(pgid):
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return found


@pytest.mark.parametrize("how, status", [("return", 0), ("raise", 1)])
def test_daemon_job_that_forks_leaves_no_unsupervised_worker(daemon, r, client, how, status):
    d = daemon("--workers", "1", "--threads", "2", "-r", "hostile_jobs")
    d.wait_children(1)
    client.push({"class": hostile_jobs.Forks, "args": ["<F>", how]})
    wait_for(lambda: r.llen("child-status") == 1, 20, message="the job's parent to see its child end")
    assert r.lrange("child-status", 0, -1) == [f"<F> exit {status}".encode()]
    (child,) = [int(p) for p in r.lrange("forked", 0, -1)]
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    tokens = [f"<R{i}>" for i in range(40)]
    client.push_bulk({"class": hostile_jobs.Noop, "args": [[t] for t in tokens]})
    wait_for(lambda: r.llen("done") == 41, 20, message="the jobs after it")
    time.sleep(0.5)
    runs = [t.decode() for t in r.lrange("runs", 0, -1)]
    assert sorted(runs) == sorted(["<F>", *tokens])  # each exactly once: no second copy of the worker ran any
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert "came back into Sidepunch from a job" in d.log()
    members = _group(d.pid)
    assert len(members) == 4  # the master, its spawner, its one worker and its recoverer, nothing else
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    wait_for(lambda: _group(d.pid) == [], 10, message="every process of the daemon's group to exit")


def test_daemon_job_that_closes_its_process_fds_gets_its_worker_replaced(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "2", "-r", "hostile_jobs", "--worker-timeout", "8")
    (worker,) = d.wait_children(1)
    wait_for(lambda: r.scard("processes") == 1, 10, message="the worker to register")
    client.push({"class": hostile_jobs.ClosesFds, "args": ["<C>"]})
    d.wait_log("closed its status pipe", 15)
    master = psutil.Process(d.pid)
    before = master.cpu_times()
    time.sleep(2)
    after = master.cpu_times()
    assert (after.user + after.system) - (before.user + before.system) < 1.0  # no busy loop on the closed pipe
    wait_for(lambda: len(d.children()) == 1 and d.children()[0].pid != worker.pid, 20,
             message="a replacement worker")
    client.push({"class": hostile_jobs.Noop, "args": ["<after>"]})
    wait_for(lambda: b"<after>" in r.lrange("done", 0, -1), 20, message="a job on the replacement")
    assert r.lrange("runs", 0, -1).count(b"<C>") == 1 and r.lrange("done", 0, -1).count(b"<C>") == 1
    log = d.log()
    assert f"worker 1 (pid {worker.pid}) closed its status pipe (a job closed the process's file descriptors?)" in log
    assert "stuck" not in log and "master process is gone" not in log and "cannot reach Redis" not in log
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    assert r.keys("working:*") == []


def test_worker_whose_status_pipe_was_closed_stops_itself_when_the_master_sees_no_end_of_file(daemon, r, client):
    """A child of the job keeps the pipe's write end open, so only the worker itself can notice."""
    d = daemon("--workers", "1", "--threads", "2", "-r", "hostile_jobs", "--worker-timeout", "8")
    (worker,) = d.wait_children(1)
    wait_for(lambda: r.scard("processes") == 1, 10, message="the worker to register")
    client.push({"class": hostile_jobs.ForksThenClosesFds, "args": ["<C>", 30]})
    d.wait_log("status pipe to the master was closed under it", 15)
    wait_for(lambda: [c.pid for c in d.children()] not in ([], [worker.pid]), 20, message="a replacement worker")
    client.push({"class": hostile_jobs.Noop, "args": ["<after>"]})
    wait_for(lambda: b"<after>" in r.lrange("done", 0, -1), 20, message="a job on the replacement")
    assert r.lrange("runs", 0, -1).count(b"<C>") == 1 and r.lrange("done", 0, -1).count(b"<C>") == 1
    log = d.log()
    assert f"worker 1 (pid {worker.pid}) exited with status 0" in log
    assert "stuck" not in log and "master process is gone" not in log and "cannot reach Redis" not in log


def test_app_that_exits_while_imported_is_a_boot_error_not_a_crash_loop(daemon, r):
    d = daemon("--workers", "2", "-r", "exits_at_import")
    assert d.wait(30) == 3
    log = d.log()
    assert "cannot load the app: SystemExit: refusing to be imported" in log
    assert "Traceback" not in log and "crashed" not in log
