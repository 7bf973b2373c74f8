"""The poller of `retry` and `schedule`, fed hostile members: each one is moved or killed on its own.

Property-style: every generated payload (tests/hostile.py) ends in exactly one visible place, a bad one in the
dead set with its bytes untouched and a reason, and the good ones around it keep flowing.
"""
import json
import logging
import random
import signal

import pytest

from sidepunch.core import keys
from sidepunch.server.config import build_config
from sidepunch.core.connection import Outage
from sidepunch.core.payload import decode
from sidepunch.server.resolver import JobResolver
from sidepunch.server.retry import DeadSet, RetryPolicy
from sidepunch.server.fetch import ReliableFetch
from sidepunch.server.poller import BATCH, Poller
from sidepunch.server.state import ChildContext, LifecycleState
from conftest import wait_for
import hostile

BAD_QUEUES = ["", "a,b", "nul\x00here", "x" * 5000, "new\nline", "tab\there", " padded", "padded ", 5, 1.5,
              None, True, [], ["default"], {"q": 1}]


def make_poller(r) -> Poller:
    config = build_config(["-r", "testjobs"], {"REDIS_URL": "redis://unused"})
    dead = DeadSet(config.dead_max_jobs, config.dead_timeout)
    ctx = ChildContext(redis=r, config=config, identity="h:1:n", state=LifecycleState(),
                       outage=Outage("redis://x", logging.getLogger("test")), resolver=JobResolver(["testjobs"]),
                       retry=RetryPolicy(r, dead, config.max_retries, ReliableFetch.ack_into))
    return Poller(ctx, dead, random.Random(1))


def bad_queue_cases(seed):
    out = []
    for i, queue in enumerate(BAD_QUEUES):
        tag = f"Q{seed:02d}{i:03d}xq"
        out.append(hostile.Case(tag, f"queue {queue!r:.30}", json.dumps(
            {"class": "testjobs.Record", "args": [tag], "queue": queue}).encode(), readable=True))
    return out


def spread(r, cases, rng):
    """Members of retry and schedule, all due, in a shuffled score order."""
    for c in cases:
        r.zadd(rng.choice([keys.RETRY, keys.SCHEDULE]), {c.raw: rng.uniform(1, 1000)})


@pytest.mark.parametrize("seed", range(6))
def test_each_due_member_is_moved_or_killed_on_its_own(r, seed):
    rng = random.Random(seed)
    bad_queue = bad_queue_cases(seed)
    cases = hostile.cases(seed) + bad_queue
    spread(r, cases, rng)
    moved = make_poller(r).enqueue_due()
    assert r.zcard("retry") == r.zcard("schedule") == 0
    assert hostile.misplaced(r, [c.tag for c in cases], allowed={"queue:default", "dead"}) == {}
    for c in cases:
        if not c.readable or c in bad_queue:
            assert r.zscore("dead", c.raw) is not None, c.kind          # bytes untouched
            assert r.hget(keys.DEAD_REASONS, c.raw), c.kind             # and the API can say why
    queued = r.lrange("queue:default", 0, -1)
    assert moved == len(queued) == sum(c.readable for c in hostile.cases(seed)) - 1  # less "queue field not a string"
    for payload in queued:
        job = decode(payload)
        assert list(job)[:2] == ["retry", "queue"] and job["queue"] == "default"
    assert r.smembers("queues") == {b"default"}


def test_unusable_queue_reasons_name_the_problem(r):
    cases = bad_queue_cases(0)
    spread(r, cases, random.Random(0))
    make_poller(r).enqueue_due()
    reasons = {c.kind: r.hget(keys.DEAD_REASONS, c.raw).decode() for c in cases}
    assert all("queue" in why for why in reasons.values()), reasons
    assert "comma" in reasons["queue 'a,b'"] and "not a string" in reasons["queue 5"]


def test_a_queue_key_of_another_type_is_not_a_place_to_lose_a_job(r):
    r.hset("queue:clash", "a", "hash")
    r.zadd("schedule", {json.dumps({"class": "testjobs.Record", "args": ["c"], "queue": "clash"}): 1})
    r.zadd("retry", {json.dumps({"class": "testjobs.Record", "args": ["ok"]}): 2})
    assert make_poller(r).enqueue_due() == 1
    member = r.zrange("dead", 0, -1)[0]
    assert json.loads(member)["queue"] == "clash" and b"hash" in r.hget(keys.DEAD_REASONS, member)
    assert r.llen("queue:default") == 1 and r.hgetall("queue:clash") == {b"a": b"hash"}


def test_a_queues_key_of_another_type_does_not_lose_jobs(r):
    r.set("queues", "not a set")
    r.zadd("schedule", {json.dumps({"class": "testjobs.Record", "args": ["c"]}): 1})
    make_poller(r).enqueue_due()
    assert r.zcard("schedule") + r.llen("queue:default") + r.zcard("dead") == 1
    assert r.zcard("schedule") == 0


def test_a_poll_never_spins_on_members_it_cannot_move(r, caplog):
    """Even when the dead set itself refuses writes, the poll ends, and good members after the bad ones move."""
    r.set("dead", "a string, so no member can be killed")
    for i in range(BATCH + 20):
        r.zadd("retry", {f"bad {i}".encode(): i})
    r.zadd("retry", {json.dumps({"class": "testjobs.Record", "args": ["late"]}): BATCH + 50})
    poller = make_poller(r)
    assert poller.enqueue_due() == 1
    assert r.zcard("retry") == BATCH + 20 and r.llen("queue:default") == 1  # nothing lost, nothing spun
    assert poller.enqueue_due() == 0
    assert caplog.text.count("could not be moved") == 1  # one line while the trouble lasts, not one per poll


def test_a_set_of_another_type_does_not_stop_the_other_set(r, caplog):
    r.set("retry", "not a sorted set")
    r.zadd("schedule", {json.dumps({"class": "testjobs.Record", "args": ["s"]}): 1})
    poller = make_poller(r)
    assert poller.enqueue_due() == 1 and poller.enqueue_due() == 0
    assert r.llen("queue:default") == 1 and caplog.text.count("cannot read retry") == 1


def test_two_pollers_racing_move_each_member_once(r):
    cases = hostile.cases(5) + bad_queue_cases(5)
    spread(r, cases, random.Random(5))
    first, second = make_poller(r), make_poller(r)
    original = first._move

    def interleaved(**kwargs):  # the other poller moves each member just before this one tries
        second._move(**kwargs)
        return original(**kwargs)

    first._move = interleaved
    first.enqueue_due()
    assert hostile.misplaced(r, [c.tag for c in cases], allowed={"queue:default", "dead"}) == {}


def test_daemon_keeps_polling_past_hostile_members(daemon, r, client):
    rng = random.Random(77)
    bad_queue = bad_queue_cases(77)
    cases = hostile.cases(77) + bad_queue
    spread(r, cases, rng)
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--poll-interval", "1")
    d.wait_children(1)
    tags = [c.tag for c in cases]
    wait_for(lambda: not r.zcount("schedule", 0, 1000) and not r.zcount("retry", 0, 1000)
             and not r.llen("queue:default") and not hostile.misplaced(r, tags), 40, interval=0.3,
             message="every due member to be moved or killed")
    done = {v.decode() for v in r.lrange("done", 0, -1)}
    for c in cases:
        if not c.readable or c in bad_queue:
            assert r.zscore("dead", c.raw) is not None and r.hget(keys.DEAD_REASONS, c.raw), c.kind
        elif c.runs and c.kind != "queue field not a string":
            assert c.tag in done, c.kind
    r.zadd("schedule", {json.dumps({"class": "testjobs.Record", "args": ["later"]}): 1})
    wait_for(lambda: b"later" in r.lrange("done", 0, -1), 15, message="scheduled jobs to keep flowing")
    assert d.proc.poll() is None and "Traceback" not in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
