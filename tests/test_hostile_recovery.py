"""Recovery of dead workers' jobs and the orphan sweep, fed hostile payloads and hostile key names.

Property-style: every generated payload (tests/hostile.py) must end in exactly one visible place, with its bytes
untouched except for the members recovery adds, and the daemon must stay up with good jobs flowing.
"""
import json
import logging
import os
import shutil
import signal
import subprocess

import pytest

from sidepunch.core import keys
from sidepunch.core.payload import decode
from sidepunch.server.recovery import OrphanSweeper, RecoveryPolicy, recover_identity
from conftest import wait_for
import hostile

IDENTITY = "deadhost:4242:abcdefabcdef"
POLICY = RecoveryPolicy(max_interruptions=3, dead_max_jobs=100_000, dead_timeout=1e9)
SEEDS = range(6)


def expected_count(raw: bytes) -> int:
    prior = decode(raw).get("interrupted_count")
    prior = prior if type(prior) is int and prior >= 0 else 0
    return min(prior, POLICY.max_interruptions) + 1


def without_member(payload: bytes, name: str) -> dict:
    job = decode(payload)
    job.pop(name, None)
    return job


def fill(r, working, cases):
    r.lpush(working, *[c.raw for c in cases])  # the first case is the oldest (right-most)


@pytest.mark.parametrize("seed", SEEDS)
def test_each_interrupted_payload_lands_once_and_keeps_its_bytes(r, seed):
    cases = hostile.cases(seed)
    fill(r, keys.working("default", IDENTITY, 0), cases)
    found = recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=True, reason="killed by SIGKILL")
    assert not r.keys("working:*")
    assert hostile.misplaced(r, [c.tag for c in cases], allowed={"queue:default", "dead"}) == {}
    queued = {c.tag: p for c in cases for p in r.lrange("queue:default", 0, -1) if c.tag.encode() in p}
    dead = {c.tag: p for c in cases for p in r.zrange("dead", 0, -1) if c.tag.encode() in p}
    assert found.requeued == len(queued) and found.killed == len(dead)
    for c in cases:
        if not c.readable:
            assert dead[c.tag] == c.raw, c.kind                       # bytes untouched
            assert b"not a readable job" in r.hget(keys.DEAD_REASONS, c.raw), c.kind
            continue
        count = expected_count(c.raw)
        new = queued.get(c.tag) or dead[c.tag]
        assert decode(new)["interrupted_count"] == count, c.kind
        assert b'"interrupted_count":' in new, c.kind           # lua/fetch.lua's marker sees it
        if count < POLICY.max_interruptions:
            assert c.tag in queued, c.kind
            assert without_member(new, "interrupted_count") == without_member(c.raw, "interrupted_count")
            if b"interrupted" not in c.raw:                       # only the new member was written
                assert new.replace(b',"interrupted_count":1', b"", 1) == c.raw, c.kind
        else:
            job = decode(new)
            assert c.tag in dead and job["error_class"] == "sidepunch.WorkerDied", c.kind
            assert "killed by SIGKILL" in job["error_message"], c.kind


def test_poison_pill_gets_error_fields_without_a_rewrite_of_the_rest(r):
    raw = b'{"class":"testjobs.Record", "args":["pill",1e300,"\\u00e9"],  "interrupted_count":2 ,"x":{}} '
    r.lpush(keys.working("default", IDENTITY, 0), raw)
    found = recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=True, reason="killed by SIGSEGV")
    assert found.killed == 1
    new = r.zrange("dead", 0, -1)[0]
    assert new.startswith(b'{"class":"testjobs.Record", "args":["pill",1e300,"\\u00e9"],  "interrupted_count":3 ,')
    job = decode(new)
    assert job["x"] == {} and job["error_class"] == "sidepunch.WorkerDied" and "failed_at" in job
    assert r.hlen(keys.DEAD_REASONS) == 0  # the payload carries its own error fields


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_clean_exit_requeues_every_payload_byte_for_byte(r, seed):
    cases = hostile.cases(seed)
    fill(r, keys.working("default", IDENTITY, 0), cases)
    found = recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=False, reason="exited")
    assert found.requeued == len(cases)
    # The oldest job (first case) is next in line again: at the right end.
    assert r.lrange("queue:default", 0, -1) == [c.raw for c in reversed(cases)]


def test_a_queue_key_of_another_type_sends_its_jobs_to_dead_with_a_reason(r):
    cases = hostile.cases(7)
    r.hset("queue:default", "not", "a list")
    fill(r, keys.working("default", IDENTITY, 0), cases)
    found = recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=True, reason="killed by SIGKILL")
    assert found.killed == len(cases) and r.zcard("dead") == len(cases)
    assert hostile.misplaced(r, [c.tag for c in cases], allowed={"dead"}) == {}
    for member in r.zrange("dead", 0, -1):
        reason = r.hget(keys.DEAD_REASONS, member)
        assert reason and b"queue:default" in reason and b"hash" in reason
    assert r.hgetall("queue:default") == {b"not": b"a list"}


def test_two_recoveries_of_one_list_move_each_job_once(r, monkeypatch):
    """The reaping master and another master's sweep may meet on one list: each job still moves once."""
    import sidepunch.server.recovery as recovery
    cases = hostile.cases(13) + hostile.cases(14, prefix="U") + hostile.cases(15, prefix="V")
    assert len(cases) > recovery.BATCH
    fill(r, keys.working("default", IDENTITY, 0), cases)
    real_load = recovery.scripts.load

    def racing_load(client, name, uses=()):
        script = real_load(client, name, uses)

        def interleaved(**kwargs):  # the other recovery runs the same batch just before this one
            script(**kwargs)
            return script(**kwargs)
        return interleaved

    monkeypatch.setattr(recovery.scripts, "load", racing_load)
    recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=True, reason="killed by SIGKILL")
    assert hostile.misplaced(r, [c.tag for c in cases], allowed={"queue:default", "dead"}) == {}


def test_recovery_puts_the_queue_back_in_the_queues_set(r):
    r.lpush(keys.working("mail", IDENTITY, 0), b'{"class":"testjobs.Record","args":["m"]}')
    recover_identity(r, IDENTITY, ["mail"], 1, POLICY, interrupted=False, reason="exited")
    assert r.smembers("queues") == {b"mail"} and r.llen("queue:mail") == 1


def test_recovered_payloads_read_the_same_in_ruby(r):
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("no ruby on PATH")
    cases = [c for c in hostile.cases(3) if c.readable]
    fill(r, keys.working("default", IDENTITY, 0), cases)
    recover_identity(r, IDENTITY, ["default"], 1, POLICY, interrupted=True, reason="killed by SIGKILL")
    moved = r.lrange("queue:default", 0, -1) + r.zrange("dead", 0, -1)
    script = ('require "json"; STDIN.each_line { |l| j = JSON.parse(l.strip.unpack1("m0")); '
              'puts [j["args"][0].to_s[0, 12], j["interrupted_count"]].to_json }')
    lines = "\n".join(__import__("base64").b64encode(p).decode() for p in moved)
    out = subprocess.run([ruby, "-e", script], input=lines, capture_output=True, text=True, timeout=60, check=True)
    ruby_view = {tag: count for tag, count in map(json.loads, out.stdout.split("\n")[:-1])}
    python_view = {str(decode(p)["args"][0] if isinstance(decode(p)["args"], list) else "")[:12]:
                   decode(p)["interrupted_count"] for p in moved}
    assert out.stderr == "" and ruby_view == python_view


# -- the orphan sweep: hostile key names ---------------------------------------------------------------------
BAD_WORKING_KEYS = [
    b"working:queue:\xff\xfe:" + IDENTITY.encode() + b".0",            # non-UTF-8 queue name
    b"working:queue:default:\xffhost\x00:1:abcdefabcdef.0",           # non-UTF-8 identity
    b"working:queue:default:deadhost:4242:abcdefabcdef",              # no thread suffix
]


def test_sweep_recovers_lists_with_non_utf8_names_and_skips_malformed_ones(r, caplog):
    caplog.set_level(logging.INFO, "sidepunch.recovery")
    cases = hostile.cases(11)
    groups = [cases[i::len(BAD_WORKING_KEYS) + 1] for i in range(len(BAD_WORKING_KEYS) + 1)]
    for key, group in zip(BAD_WORKING_KEYS + [keys.working("default", IDENTITY, 1).encode()], groups):
        fill(r, key, group)
    r.rpush(b"working:queue:x", b'{"class":"testjobs.Record","args":["too-few-parts"]}')
    r.set(keys.working("default", IDENTITY, 2), b"a string, not a list")
    r.hset(b"working:queue:\x80:h:1:n.0", "a", "hash")
    live = "livehost:1:abcdefabcdef"
    r.set(keys.alive(live), 1)
    r.rpush(keys.working("default", live, 0), b'{"class":"testjobs.Record","args":["live"]}')
    sweeper = OrphanSweeper(r, POLICY)
    found = sweeper.sweep()
    assert found.requeued + found.killed == len(cases)
    assert hostile.misplaced(r, [c.tag for c in cases]) == {}
    places = {p[0] for p in hostile.census(r, [c.tag for c in cases]).values()}
    assert places <= {"queue:\\xff\\xfe", "queue:default", "dead"} and "queue:\\xff\\xfe" in places
    assert b"\xff\xfe" in r.smembers("queues")
    # Left alone: the live process's list, the malformed key, and keys that are not lists.
    assert r.llen(keys.working("default", live, 0)) == 1 and r.llen(b"working:queue:x") == 1
    assert r.get(keys.working("default", IDENTITY, 2)) == b"a string, not a list"
    first = caplog.text
    assert "working:queue:x" in first and "working:queue:\\x80" in first
    caplog.clear()
    assert sweeper.sweep().requeued == 0
    assert "working:queue:x" not in caplog.text and "\\x80" not in caplog.text  # said once, not every sweep


def test_one_failing_list_does_not_stop_the_others(r):
    """A list the move script cannot write to (its queue key is a string) is reported; the others recover."""
    r.set("queue:broken", "not a list")
    r.set("dead", "not a zset either")  # so even the dead set cannot take broken's jobs
    r.lpush(keys.working("broken", IDENTITY, 0), b'{"class":"testjobs.Record","args":["b"]}')
    r.lpush(keys.working("fine", IDENTITY, 0), b'{"class":"testjobs.Record","args":["f"]}')
    found = OrphanSweeper(r, POLICY).sweep()
    assert found.requeued == 1 and r.llen("queue:fine") == 1
    assert r.llen(keys.working("broken", IDENTITY, 0)) == 1  # kept where it was, not lost
    assert any("queue:broken" in why or "broken" in str(key) for key, why in found.failed)


# -- against the real daemon -----------------------------------------------------------------------------------
def _identity_of_only_worker(r):
    return wait_for(lambda: [p.decode() for p in r.smembers("processes")], 15, message="a worker heartbeat")[0]


def test_sigkilled_worker_with_hostile_working_list_keeps_the_daemon_up(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--max-interruptions", "3")
    d.wait_children(1)
    identity = _identity_of_only_worker(r)
    cases = hostile.cases(21)
    fill(r, keys.working("default", identity, 0), cases)
    os.kill(int(identity.split(":")[-2]), signal.SIGKILL)
    wait_for(lambda: "requeued" in d.log(), 15, message="the master to recover the jobs")
    tags = [c.tag for c in cases]
    wait_for(lambda: not hostile.misplaced(r, tags) and not r.llen("queue:default") and not r.keys("working:*"),
             30, message="every payload in one place")
    assert d.proc.poll() is None and len(d.wait_children(1)) == 1
    done = {v.decode() for v in r.lrange("done", 0, -1)}
    for c in cases:
        if not c.readable:
            assert r.zscore("dead", c.raw) is not None and r.hget(keys.DEAD_REASONS, c.raw), c.kind
        elif c.runs and expected_count(c.raw) < POLICY.max_interruptions:
            assert c.tag in done, c.kind
    client.push({"class": "testjobs.Record", "args": ["after"]})
    wait_for(lambda: b"after" in r.lrange("done", 0, -1), 15, message="good jobs to keep flowing")


def test_daemon_starts_and_sweeps_despite_hostile_names(daemon, r, client):
    r.sadd("queues", b"\xff\xfe", b"bad\nname", b"clash", b"", b"default")
    r.hset("queue:clash", "not", "a list")
    r.rpush(b"queue:\xff\xfe", b"x")
    cases = hostile.cases(31)
    groups = [cases[i::len(BAD_WORKING_KEYS) + 1] for i in range(len(BAD_WORKING_KEYS) + 1)]
    for key, group in zip(BAD_WORKING_KEYS + [keys.working("default", IDENTITY, 0).encode()], groups):
        fill(r, key, group)
    wrong_type = keys.working("default", IDENTITY, 1)
    r.set(wrong_type, "not a list")
    r.rpush(b"working:queue:\x80", b"a job under a name of no known shape")
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    d.wait_children(1)
    d.wait_log("queue '\\xff\\xfe' has 1 job(s) but this daemon does not fetch from it")
    client.push({"class": "testjobs.Record", "args": ["first"]})
    wait_for(lambda: b"first" in r.lrange("done", 0, -1), 15, message="the daemon to run jobs")
    tags = [c.tag for c in cases]
    wait_for(lambda: not hostile.misplaced(r, tags) and r.keys(b"working:queue:*deadhost*") == [wrong_type.encode()]
             and not r.llen("queue:default"), 40, interval=0.5, message="the orphan sweep to place every payload")
    assert d.proc.poll() is None and len(d.children()) == 1
    d.wait_log(f"left {wrong_type} as it is: ResponseError")
    d.wait_log("left working:queue:\\x80 as it is: not a working-list name")
    assert r.get(wrong_type) == b"not a list" and r.llen(b"working:queue:\x80") == 1
    client.push({"class": "testjobs.Record", "args": ["after"]})
    wait_for(lambda: b"after" in r.lrange("done", 0, -1), 15, message="good jobs to keep flowing")
    assert "Traceback" not in d.log()
