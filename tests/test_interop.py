"""Interop with real Sidekiq (Debian's ruby-sidekiq): Ruby and sidepunchd share one Redis.

Ruby's Sidekiq::Client pushes jobs that sidepunchd runs with exactly the arguments Ruby sent, and Sidekiq's own
API (sidekiq/api) reads and drives what sidepunchd wrote: stats, queues, retry/dead sets with their error
fields and backtraces, live processes, running jobs, retry_all, quiet!/stop!. Sidekiq's own client, poller,
retry logic and backtrace encoding are run side by side with Sidepunch's and must store the same bytes. The
Ruby halves live in tests/ruby/ and print JSON; the assertions are made here.

Without ruby and the sidekiq gem these tests are skipped, unless SIDEPUNCH_REQUIRE_INTEROP=1 (CI), where they
fail instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch.server.fetch import BasicFetch, UnitOfWork
from sidepunch.core.payload import encode
from sidepunch.core.jobsets import decode_backtrace, encode_backtrace
from sidepunch.server.retry import DeadSet, RetryPolicy, backtrace_lines
from sidepunch.server.poller import requeue_payload
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import interop_jobs  # noqa: E402

RUBY_DIR = Path(__file__).resolve().parent / "ruby"
MISSING = "Sidekiq interop tests skipped: ruby/ruby-sidekiq not installed (apt-get install ruby-sidekiq)"
REQUIRED = ("SIDEPUNCH_REQUIRE_INTEROP=1, but the Sidekiq interop tests cannot run: ruby/ruby-sidekiq not "
            "installed (apt-get install ruby-sidekiq)")


# --- The one place that decides between running, skipping and failing -----------------------------------------

def sidekiq_problem(ruby: str = "ruby") -> str | None:
    """None when `ruby` can load sidekiq and sidekiq/api, else what is wrong."""
    exe = shutil.which(ruby)
    if exe is None:
        return f"no {ruby!r} on PATH"
    try:
        proc = subprocess.run([exe, "-e", 'require "sidekiq"; require "sidekiq/api"; print Sidekiq::VERSION'],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{exe} did not run: {exc}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f'`require "sidekiq"` failed: {lines[0] if lines else f"exit status {proc.returncode}"}'
    return None


def skip_or_fail(problem: str, environ) -> None:
    if environ.get("SIDEPUNCH_REQUIRE_INTEROP") == "1":
        pytest.fail(f"{REQUIRED} ({problem})", pytrace=False)
    pytest.skip(MISSING)


@pytest.fixture(scope="session")
def sidekiq():
    problem = sidekiq_problem()
    if problem:
        skip_or_fail(problem, os.environ)


def ruby(script: str, *args: str, url: str, stdin: str = "") -> dict:
    """Run tests/ruby/<script> against the Redis at `url`; returns the JSON document it printed last."""
    env = dict(os.environ, REDIS_URL=url)
    env.pop("REDIS_PROVIDER", None)
    proc = subprocess.run(["ruby", str(RUBY_DIR / script), *args], env=env, capture_output=True, text=True,
                          timeout=60, input=stdin)
    assert proc.returncode == 0, f"ruby {script} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    # Split on "\n" only: the output holds U+2028, which str.splitlines() would treat as a line break.
    return json.loads(proc.stdout.rstrip("\n").rsplit("\n", 1)[-1])


def typed(value):
    """A value with its JSON types spelled out, so 1 != 1.0 != True and -0.0 != 0.0 when compared."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    raise TypeError(f"not a JSON value: {value!r}")


def test_missing_sidekiq_skips_with_a_plain_reason():
    assert sidekiq_problem("no-such-ruby-for-sidepunch") == "no 'no-such-ruby-for-sidepunch' on PATH"
    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_or_fail("no ruby", {})
    assert str(skipped.value) == MISSING
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("no ruby", {"SIDEPUNCH_REQUIRE_INTEROP": "0"})


def test_missing_sidekiq_fails_when_ci_requires_interop():
    with pytest.raises(pytest.fail.Exception) as failed:
        skip_or_fail("no 'ruby' on PATH", {"SIDEPUNCH_REQUIRE_INTEROP": "1"})
    assert "apt-get install ruby-sidekiq" in str(failed.value) and "no 'ruby' on PATH" in str(failed.value)


# --- Sidekiq's retry rules that the Ruby comparison below found missing; these run without Ruby -------------

def _failure():
    """A raised RuntimeError("boom") whose traceback has three frames."""
    def inner():
        raise RuntimeError("boom")

    def outer():
        inner()

    try:
        outer()
    except RuntimeError as exc:
        return exc


def test_missing_retry_option_is_taken_from_the_job_class_and_kept(r):
    class RetryThree(sidepunch.Job):
        retry = 3

    policy = RetryPolicy(r, DeadSet(10, 3600), 25, BasicFetch.ack_into)
    raw = encode({"class": "RetryThree", "args": [], "jid": "a" * 24, "queue": "default"})
    assert policy.handle(UnitOfWork("default", raw), RetryThree(), _failure()) == "retry"
    stored = json.loads(r.zrange("retry", 0, 0)[0])
    assert list(stored)[3:6] == ["queue", "retry", "error_message"] and stored["retry"] == 3
    # The limit travels with the job, so it still applies after the poller puts the job back in its queue.
    assert requeue_payload(stored, time.time())["retry"] == 3
    nulled = encode({"class": "RetryThree", "args": [], "jid": "b" * 24, "retry": None})
    assert policy.handle(UnitOfWork("default", nulled), RetryThree(), _failure()) == "retry"


@pytest.mark.parametrize("option, kept", [(0, 0), ("2 lines", 2), (-1, 2), (True, 3)])
def test_backtrace_option_follows_ruby_truthiness_and_to_i(r, option, kept):
    policy = RetryPolicy(r, DeadSet(10, 3600), 25, BasicFetch.ack_into)
    raw = encode({"class": "X", "args": [], "jid": "d" * 24, "retry": True, "backtrace": option})
    exc = _failure()
    policy.handle(UnitOfWork("default", raw), None, exc)
    full = backtrace_lines(exc)
    assert len(full) == 3 and full[0].endswith("in `inner'")
    assert decode_backtrace(json.loads(r.zrange("retry", 0, 0)[0])["error_backtrace"]) == full[:kept]


# --- (a) Ruby pushes, sidepunchd runs ---------------------------------------------------------------------------

def test_jobs_pushed_by_ruby_run_in_sidepunchd_with_exactly_those_arguments(sidekiq, redis_server, r, daemon):
    pushed = ruby("push_jobs.rb", url=redis_server.url)
    jobs = pushed["jobs"]
    assert pushed["version"] == "6.4.1"
    assert len({j["jid"] for j in jobs}) == len(jobs) > 50
    assert pushed["scheduled"] == 4  # Client.push at, perform_in, and both push_bulk jobs with an 'at'
    d = daemon("--workers", "1", "--threads", "4", "-q", "default", "-q", "interop", "-r", "interop_jobs",
               "--poll-interval", "0.5")
    wait_for(lambda: r.hlen("interop:args") >= len(jobs), 20, message=f"{len(jobs)} Ruby jobs to run")
    received = {jid.decode(): raw.decode() for jid, raw in r.hgetall("interop:args").items()}
    assert set(received) == {j["jid"] for j in jobs}
    for job in jobs:
        # The job re-encodes the args it was called with in Ruby's JSON spelling: identical bytes mean every
        # value arrived with its type and precision (2**100 stays an int, 1.0e+15 a float, -0.0 keeps its sign).
        assert received[job["jid"]] == job["args_json"], job["how"]
        assert typed(json.loads(received[job["jid"]])) == typed(job["args"]), job["how"]
    every = json.loads(received[jobs[0]["jid"]])
    assert 2**100 in every and -(10**40) in every and 2**64 + 1 in every
    floats = [v for v in every if type(v) is float]
    assert 1e15 in floats and 1e16 in floats and 5e-324 in floats and 1.7976931348623157e308 in floats
    assert [v for v in every if v is None or type(v) is bool] == [True, False, None]
    assert every[2] == "unicode: héllo wörld ✓ 日本語 😀 \U0010ffff"
    assert every[3].startswith('escapes: "quote" \\backslash\\ /slash\n\t\r\b\f \x01\x1f \x7f \u2028\u2029 ')
    assert every[-1]["ключ"] == {"x": True, "big": 2**70, "f": 1e15}
    assert r.zcard("schedule") == r.zcard("retry") == r.zcard("dead") == 0
    assert r.llen("queue:default") == r.llen("queue:interop") == 0
    assert "failed" not in d.log()


def _stored(r):
    """Everything a push leaves in Redis, with enqueued_at (the clock at push time) blanked out."""
    def blank(raw):
        return re.sub(rb'"enqueued_at":[-+.e0-9]+', b'"enqueued_at":0', raw)
    out = {"queues": sorted(r.smembers("queues")),
           "schedule": [(blank(m), s) for m, s in r.zrange("schedule", 0, -1, withscores=True)]}
    for key in sorted(r.keys("queue:*")):
        out[key.decode()] = [blank(m) for m in r.lrange(key, 0, -1)]
    return out


def test_sidepunch_writes_the_same_payload_bytes_as_sidekiq(sidekiq, redis_server, r, daemon):
    """The same items pushed by Sidekiq::Client (DB 0) and sidepunch.Client (DB 1) are stored byte for byte
    alike, and so are the jobs Sidekiq's poller and sidepunchd's poller move from `schedule` to a queue."""
    now = time.time()
    every = ["ü ✓ 😀", 'q"\\/\n\u0001\u2028', 0, -1, 2**64 + 1, -(2**100), 0.0, -0.0, 0.1, 100.0, 1e15,
             -1.5e16, 1.234e20, 1e-5, 5e-324, True, False, None, [], {}, {"k": [1, {"n": None}], "": 2.5}]
    items = [
        {"class": "HardWorker", "args": every, "jid": "a" * 24, "created_at": now - 10.123},
        {"class": "Mailer::Deliver", "queue": "critical", "args": [1, 2**64, 1e15], "retry": 5,
         "tags": ["a", "ü"], "custom": {"keep": [1e-5]}, "jid": "b" * 24, "created_at": now - 1},
        {"args": ["caller", "key", "order"], "class": "NoRetry", "retry": False, "backtrace": True,
         "dead": False, "retry_queue": "low", "jid": "c" * 24, "created_at": 1e9 + 0.5},
        {"class": "Later", "args": ["due", 1.5, 2**70], "at": now - 5, "jid": "d" * 24, "created_at": now - 20},
        {"class": "Later", "args": ["not due"], "at": now + 3600, "queue": "low", "jid": "e" * 24,
         "created_at": now},
    ]
    ruby_db = redis_server.url
    py_db = redis_server.url.rsplit("/", 1)[0] + "/1"
    r1 = type(r).from_url(py_db)
    pushed = ruby("client_push.rb", "push", url=ruby_db, stdin=encode(items).decode())
    ours = sidepunch.Client(redis=r1)
    assert [ours.push(json.loads(encode(item))) for item in items] == pushed["jids"] == [i["jid"] for i in items]
    assert _stored(r1) == _stored(r)
    assert json.loads(_stored(r)["queue:default"][-1])["args"] == every  # not vacuous: the jobs are there

    # Sidekiq's poller on DB 0; sidepunchd's on DB 1 (listening on an unused queue, so the job stays put).
    assert ruby("client_push.rb", "enqueue_due", url=ruby_db) == {"schedule": 1, "retry": 0}
    daemon("--workers", "1", "--threads", "1", "-q", "unused", "--poll-interval", "0.3", url=py_db)
    wait_for(lambda: r1.zcard("schedule") == 1 and r1.llen("queue:default") == 3, 10,
             message="sidepunchd's poller to move the due job")
    assert _stored(r1) == _stored(r)
    moved = json.loads(r1.lindex("queue:default", 0))
    assert moved["jid"] == "d" * 24 and list(moved)[:2] == ["retry", "queue"] and moved["enqueued_at"] > now
    r1.close()


RETRY_CASES = [
    # (name, job fields besides class/args/jid, fetched-from queue, class loads?, worker's retry option)
    ("first failure", {"retry": True, "queue": "default"}, "default", True, None),
    ("later failure", {"retry": 5, "queue": "default", "retry_count": 3, "failed_at": 1.0e9}, "default", True, None),
    ("retry 0 dies at once", {"retry": 0, "queue": "default"}, "default", True, None),
    ("exhausted", {"retry": 2, "queue": "default", "retry_count": 1, "failed_at": 1.0e9}, "default", True, None),
    ("retry false", {"retry": False, "queue": "default"}, "default", True, None),
    ("dead false", {"retry": 0, "queue": "default", "dead": False}, "default", True, None),
    ("retry_queue", {"retry": True, "queue": "default", "retry_queue": "low"}, "default", True, None),
    ("fetched queue wins", {"retry": True, "queue": "elsewhere"}, "critical", True, None),
    ("unknown keys and odd floats survive", {"queue": "default", "retry": True, "custom": {"f": 1.0e15}, "n": 2**70},
     "default", True, None),
    ("retry_count null", {"retry": True, "queue": "default", "retry_count": None}, "default", True, None),
    ("unknown class", {"retry": True, "queue": "default"}, "default", False, None),
    ("backtrace true", {"retry": True, "queue": "default", "backtrace": True}, "default", True, None),
    ("backtrace 2", {"retry": True, "queue": "default", "backtrace": 2}, "default", True, None),
    ("no retry key, worker default", {"queue": "default"}, "default", True, None),
    ("no retry key, worker retry 3", {"queue": "default"}, "default", True, 3),
    ("no retry key, worker retry false", {"queue": "default"}, "default", True, False),
    ("retry null, worker retry 2", {"retry": None, "queue": "default"}, "default", True, 2),
    ("no retry key, unknown class", {"queue": "default"}, "default", False, None),
    ("backtrace 0 (truthy in Ruby)", {"retry": True, "queue": "default", "backtrace": 0}, "default", True, None),
]


#: Where Sidepunch differs from Sidekiq on purpose: (where Sidekiq puts the job, where Sidepunch does).
DELIBERATE = {
    # Sidekiq drops it (death handlers only); Sidepunch keeps it so that a job pushed before its code was
    # deployed is not lost (tests/test_processor.py::test_unknown_class_without_retry_key_is_kept_not_dropped).
    "no retry key, unknown class": (None, "retry"),
}


def _comparable(payload: bytes | str) -> list:
    """A stored job as (key, value) pairs in stored order; times and backtraces (language-specific) masked."""
    out = []
    for key, value in json.loads(payload).items():
        if key in ("failed_at", "retried_at") and isinstance(value, float) and value > time.time() - 60:
            value = "<now>"
        elif key == "error_backtrace":  # the lines are Ruby's or Python's own; both must decode
            value = "<lines>" if decode_backtrace(value) else "<no lines>"
        out.append((key, typed(value)))
    return out


def test_failures_are_recorded_as_sidekiqs_job_retry_records_them(sidekiq, redis_server, r):
    """The same failing jobs through Sidekiq::JobRetry (DB 0) and Sidepunch's RetryPolicy (DB 1): same set
    (retry, dead or none), same stored JSON apart from times and backtrace lines, same death-handler calls."""
    cases, instances = [], []
    for i, (name, fields, queue, known, worker_retry) in enumerate(RETRY_CASES):
        job = {"class": f"RetryCase{i}", "args": [name], "jid": f"{i:024x}", **fields}
        case = {"jobstr": encode(job).decode(), "queue": queue, "known": known}
        attrs = {"perform": lambda self, *args: None}
        if worker_retry is not None:
            case["worker_retry"] = attrs["retry"] = worker_retry
        cases.append(case)
        instances.append(type(f"RetryCase{i}", (sidepunch.Job,), attrs)() if known else None)
    ruby_side = ruby("job_retry.rb", url=redis_server.url, stdin=json.dumps(cases))
    assert set(ruby_side["outcomes"].values()) <= {"Sidekiq::JobRetry::Handled", "Sidekiq::JobRetry::Skip"}

    r1 = type(r).from_url(redis_server.url.rsplit("/", 1)[0] + "/1")
    deaths = []
    policy = RetryPolicy(r1, DeadSet(10_000, 180 * 86400), 25, BasicFetch.ack_into,
                         death_handlers=[lambda msg, exc: deaths.append(msg["jid"])])
    for case, instance in zip(cases, instances):
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            policy.handle(UnitOfWork(case["queue"], case["jobstr"].encode()), instance, exc)
    ours = {}
    for zset in ("retry", "dead"):
        for member, score in r1.zrange(zset, 0, -1, withscores=True):
            ours[json.loads(member)["jid"]] = {"set": zset, "payload": member.decode(), "score": score}
    r1.close()

    mismatches = []
    for (name, *_), case in zip(RETRY_CASES, cases):
        jid = json.loads(case["jobstr"])["jid"]
        theirs, mine = ruby_side["stored"].get(jid), ours.get(jid)
        where = (theirs or {}).get("set"), (mine or {}).get("set")
        if name in DELIBERATE:
            assert where == DELIBERATE[name], name
        elif where[0] != where[1]:
            mismatches.append(f"{name}: Sidekiq put it in {where[0]}, Sidepunch in {where[1]}")
        elif theirs and _comparable(theirs["payload"]) != _comparable(mine["payload"]):
            mismatches.append(f"{name}: Sidekiq stored {theirs['payload']}\n  Sidepunch stored {mine['payload']}")
        for side in (theirs, mine):
            if side and side["set"] == "retry":
                job = json.loads(side["payload"])
                count, failed = job["retry_count"], job.get("retried_at") or job["failed_at"]
                assert count**4 + 15 <= side["score"] - failed < count**4 + 15 + 10 * (count + 1), name
    assert not mismatches, "\n".join(mismatches)
    on_purpose = {json.loads(c["jobstr"])["jid"] for (name, *_), c in zip(RETRY_CASES, cases) if name in DELIBERATE}
    assert deaths == [jid for jid in ruby_side["deaths"] if jid not in on_purpose]


# --- (b) Sidekiq's API reads and drives what sidepunchd wrote ---------------------------------------------------

def _wait_for_failures(r, retries=1, dead=1, done=0):
    wait_for(lambda: r.zcard("retry") == retries and r.zcard("dead") == dead and r.llen("interop:done") == done,
             20, message=f"{retries} retry, {dead} dead, {done} done")


def test_sidekiq_api_reports_sidepunchd_stats_sets_processes_and_workers(sidekiq, redis_server, r, client, daemon):
    ok_jids = [client.push({"class": interop_jobs.InteropOk, "args": [i]}) for i in range(5)]
    flaky_args = ["flaky", 2**64, 1e15, {"ü": [None, True]}]
    flaky_jid = client.push({"class": interop_jobs.InteropFlaky, "args": flaky_args})
    die_jid = client.push({"class": interop_jobs.InteropFlakyDie, "args": ["die"]})
    parked_args = ["parked", 2**70, 1e15, -0.0, {"k": "ü"}]
    parked_at = time.time()
    parked = [client.push({"class": interop_jobs.InteropOk, "args": parked_args + [i], "queue": "parked"})
              for i in range(2)]
    later_jid = interop_jobs.InteropOk.set(client=client).perform_in(3600, "later")

    d = daemon("--workers", "2", "--threads", "2", "-q", "default", "-q", "critical", "-g", "interop",
               "-r", "interop_jobs")
    children = {c.pid for c in d.wait_children(2)}
    _wait_for_failures(r, done=5)
    assert sorted(r.lrange("interop:done", 0, -1)) == sorted(j.encode() for j in ok_jids)
    slow_at = time.time()
    slow_jid = client.push({"class": interop_jobs.InteropSlow, "args": [30]})  # runs until the fixture kills it
    wait_for(lambda: r.llen("interop:started") == 1, 10, message="the slow job to start")
    wait_for(lambda: any(r.exists(i + b":workers") for i in r.smembers("processes")), 10,
             message="the running job in a heartbeat")
    wait_for(lambda: r.get("stat:processed") == b"7" and r.get("stat:failed") == b"2", 10,
             message="both workers to flush their counters")

    seen = ruby("sidekiq_api.rb", "inspect", url=redis_server.url)
    now = time.time()

    # Stats: a failure counts as processed too, as in Sidekiq.
    stats = seen["stats"]
    assert {k: stats[k] for k in ("processed", "failed", "enqueued", "scheduled_size", "retry_size", "dead_size",
                                  "processes_size", "workers_size", "default_queue_latency")} == {
        "processed": 7, "failed": 2, "enqueued": 2, "scheduled_size": 1, "retry_size": 1, "dead_size": 1,
        "processes_size": 2, "workers_size": 1, "default_queue_latency": 0}
    assert seen["stats_queues"] == {"parked": 2, "default": 0}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert seen["history"] == {"processed": {today: 7}, "failed": {today: 2}}

    # Queues: size, latency (now - enqueued_at of the oldest job), and the jobs' class and arguments.
    queues = {q["name"]: q for q in seen["queues"]}
    assert set(queues) == {"default", "parked"}
    assert queues["default"]["size"] == 0 and queues["default"]["latency"] == 0
    assert queues["parked"]["size"] == 2
    assert now - parked_at - 1 < queues["parked"]["latency"] < now - parked_at + 1
    jobs = queues["parked"]["jobs"]
    assert [j["jid"] for j in jobs] == parked[::-1]  # LPUSH: newest on the left
    for i, job in zip((1, 0), jobs):
        assert job["klass"] == job["display_class"] == "InteropOk" and job["queue"] == "parked"
        assert typed(job["args"]) == typed(job["display_args"]) == typed(parked_args + [i])
        assert parked_at - 1 < job["enqueued_at"] <= job["created_at"] + 0.1 < now

    (scheduled,) = seen["scheduled"]
    assert scheduled["jid"] == later_jid and scheduled["klass"] == "InteropOk" and scheduled["args"] == ["later"]
    assert scheduled["enqueued_at"] is None and parked_at + 3599 < scheduled["at"] < now + 3600
    assert scheduled["error?"] is False

    # Retry set: the error fields, the retry schedule and the backtrace as Sidekiq reads them.
    (retried,) = seen["retries"]
    assert retried["jid"] == flaky_jid and retried["klass"] == "InteropFlaky" and retried["queue"] == "default"
    assert typed(retried["args"]) == typed(retried["display_args"]) == typed(flaky_args)
    assert retried["error_class"] == "interop_jobs.InteropError" and retried["error?"] is True
    assert retried["error_message"] == interop_jobs.FAILURE_MESSAGE
    assert retried["retry_count"] == 0 and retried["retried_at"] is None and retried["retry"] is True
    assert slow_at - 30 < retried["failed_at"] < slow_at
    assert 15 <= retried["at"] - retried["failed_at"] < 25 and retried["score"] == pytest.approx(retried["at"])
    backtrace = retried["error_backtrace"]
    assert isinstance(backtrace, list) and len(backtrace) >= 2
    assert backtrace[0].endswith("in `perform'") and "interop_jobs.py:" in backtrace[0]
    assert all(":in `" in line for line in backtrace)

    # Dead set: retry=0 goes straight there, backtrace=3 keeps three lines at most.
    (dead,) = seen["dead"]
    assert dead["jid"] == die_jid and dead["klass"] == "InteropFlakyDie" and dead["args"] == ["die"]
    assert dead["retry"] == 0 and dead["retry_count"] == 0 and dead["error_class"] == "interop_jobs.InteropError"
    assert dead["error_message"] == interop_jobs.FAILURE_MESSAGE
    assert 1 <= len(dead["error_backtrace"]) <= 3 and dead["error_backtrace"][0].endswith("in `perform'")
    assert slow_at - 30 < dead["score"] < slow_at

    # ProcessSet: each worker process of the daemon is one Sidekiq process.
    processes = seen["processes"]
    assert seen["process_set_size"] == 2 and seen["total_concurrency"] == 4
    assert {p["pid"] for p in processes} == children
    for p in processes:
        assert p["identity"].startswith(f"{p['hostname']}:{p['pid']}:") and len(p["identity"].split(":")[-1]) == 12
        assert p["concurrency"] == 2 and p["queues"] == ["default", "critical"]
        assert p["tag"] == "interop" and p["labels"] == []
        assert p["quiet"] == "false" and p["stopping?"] is False
        assert now - 8 < p["beat"] <= now and p["started_at"] <= p["beat"] and p["rss"] > 1000
        assert isinstance(p["rtt_us"], int)
    assert sorted(p["busy"] for p in processes) == [0, 1]

    # Workers: the running job, with its payload decoded by Sidekiq.
    (work,) = seen["workers"]
    busy = next(p for p in processes if p["busy"] == 1)
    assert work["process"] == busy["identity"] and work["queue"] == "default" and seen["workers_size"] == 1
    assert work["payload"]["jid"] == slow_jid and work["payload"]["class"] == "InteropSlow"
    assert work["payload"]["args"] == [30] and isinstance(work["run_at"], int)
    assert slow_at - 1 <= work["run_at"] <= now

    # SortedEntry#reschedule re-dumps the entry with Ruby's JSON and ZINCRBYs that member: only byte-identical
    # JSON moves our entry instead of adding a second one.
    moved = ruby("sidekiq_api.rb", "reschedule_retries", url=redis_server.url)
    assert moved["size"] == 1 and r.zcard("retry") == 1
    ((jid, score),) = moved["after"]
    assert jid == flaky_jid and score > now + 3500 > moved["before"][flaky_jid]


def test_ruby_retry_all_puts_sidepunch_failures_back_and_sidepunchd_runs_them(sidekiq, redis_server, r, client,
                                                                              daemon):
    flaky_jid = client.push({"class": interop_jobs.InteropFlaky, "args": ["again", 2**64]})
    die_jid = client.push({"class": interop_jobs.InteropFlakyDie, "args": ["from the morgue"]})
    later_jid = interop_jobs.InteropOk.set(client=client).perform_in(3600, "now, from Ruby")
    daemon("--workers", "1", "--threads", "2", "-r", "interop_jobs")
    _wait_for_failures(r)
    result = ruby("sidekiq_api.rb", "requeue_all", url=redis_server.url)
    assert result == {"retried": [flaky_jid, die_jid], "scheduled": [later_jid], "retry_size": 0, "dead_size": 0,
                      "scheduled_size": 0}
    wait_for(lambda: r.llen("interop:done") == 3, 10, message="the requeued jobs to run")
    assert sorted(r.lrange("interop:done", 0, -1)) == sorted(j.encode() for j in (flaky_jid, die_jid, later_jid))
    assert r.get(f"interop:attempts:{flaky_jid}") == r.get(f"interop:attempts:{die_jid}") == b"2"
    assert r.zcard("retry") == r.zcard("dead") == r.zcard("schedule") == 0 and r.llen("queue:default") == 0


def test_ruby_quiet_and_stop_reach_sidepunchd(sidekiq, redis_server, r, client, daemon):
    d = daemon("--workers", "2", "--threads", "1", "-r", "interop_jobs")
    d.wait_children(2)
    wait_for(lambda: r.scard("processes") == 2, 10, message="two registered processes")
    quieted = ruby("sidekiq_api.rb", "quiet_all", url=redis_server.url)
    assert sorted(quieted["signalled"]) == sorted(i.decode() for i in r.smembers("processes"))
    wait_for(lambda: all(r.hget(i, "quiet") == b"true" for i in r.smembers("processes")), 15,
             message="both processes to report quiet")
    parked = client.push({"class": interop_jobs.InteropOk, "args": ["not while quiet"]})
    seen = ruby("sidekiq_api.rb", "inspect", url=redis_server.url)
    assert [p["stopping?"] for p in seen["processes"]] == [True, True]
    stopped = ruby("sidekiq_api.rb", "stop_all", url=redis_server.url)
    assert len(stopped["signalled"]) == 2
    assert d.wait(30) == 0
    seen = ruby("sidekiq_api.rb", "inspect", url=redis_server.url)
    assert seen["processes"] == [] and seen["stats"]["processes_size"] == 0
    (queue,) = seen["queues"]
    assert queue["size"] == 1 and queue["jobs"][0]["jid"] == parked  # quiet processes fetched nothing


def test_backtrace_encoding_matches_sidekiq_both_ways(sidekiq, redis_server):
    lines = ["/app/jobs.py:12:in `perform'", "/app/ünï/cödé.py:3:in `<module>'", 'quote " and \\ backslash',
             "x" * 200] + [f"/lib/frame{i}.py:{i}:in `f{i}'" for i in range(40)]
    ours = encode_backtrace(lines)
    seen = ruby("sidekiq_api.rb", "backtrace", json.dumps(lines), ours, url=redis_server.url)
    assert seen["read_ours"] == lines  # JobRecord#error_backtrace reads what Sidepunch writes
    assert seen["read_own"] == lines
    assert decode_backtrace(seen["compressed"]) == lines  # and Sidepunch reads what Sidekiq writes
    assert ours == seen["compressed"]  # byte for byte: JSON, zlib, Base64 with 60-character lines
