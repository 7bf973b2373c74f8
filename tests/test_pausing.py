"""Queue pausing (issue 16 point 4): the paused set in Redis (keys.PAUSED), its per-process reader
(server/fetch/paused.py) and both fetchers' queue selection, the API (Queue.pause / unpause / paused), the CLI
(`sidepunch pause|unpause QUEUE`, `sidepunch queues`), and real daemons: a paused queue stops being fetched within
the fetch timeout plus the refresh while other queues flow, pushes are accepted, a running job finishes, unpause
resumes; an embedded Manager too; hostile names and a hostile key never crash anything."""
from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import wait_for

import sidepunch
from sidepunch import api
from sidepunch.core import keys
from sidepunch.server.config import QueueSpec
from sidepunch.server.fetch import FETCH_TIMEOUT, BasicFetch, PausedQueues, ReliableFetch
from sidepunch.server.fetch.paused import REFRESH

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))
import testjobs  # noqa: E402

#: A pause reaches a fetcher within one refresh (a blocking fetch puts back what it got from a queue paused
#: meanwhile), inside the fetch timeout; a little margin for a busy machine.
PAUSE_TAKES = REFRESH + 1.0


class Counting:
    """A Redis client that counts SMEMBERS calls (the paused set's reads)."""

    def __init__(self, r):
        self.r, self.reads = r, 0

    def smembers(self, key):
        self.reads += 1
        return self.r.smembers(key)


# -------------------------------------------------------------------------------------------- the reader

def test_reads_redis_at_most_once_per_refresh(r):
    now = [100.0]
    counting = Counting(r)
    paused = PausedQueues(counting, clock=lambda: now[0])
    r.sadd(keys.PAUSED, "a")
    for _ in range(1000):  # one "fetch" after another within the same second: one read
        assert paused.current() == {"a"}
    assert counting.reads == 1
    r.srem(keys.PAUSED, "a")
    now[0] += REFRESH * 0.9
    assert paused.current() == {"a"} and counting.reads == 1  # not yet due
    now[0] += REFRESH * 0.2
    assert paused.current() == frozenset() and counting.reads == 2


def test_select_leaves_the_order_untouched_when_nothing_is_paused(r):
    paused = PausedQueues(r)
    order = ["a", "b", "c"]
    assert paused.select(order) is order  # the plain case allocates nothing
    r.sadd(keys.PAUSED, "b")
    assert PausedQueues(r).select(order) == ["a", "c"]


def test_a_hostile_key_or_member_never_breaks_the_fetch(r, caplog):
    r.set(keys.PAUSED, "not a set")
    assert PausedQueues(r).current() == frozenset()
    assert "not a set of queue names" in caplog.text
    r.delete(keys.PAUSED)
    r.sadd(keys.PAUSED, b"\xff\xfe", b"", "a" * 10_000, "\u202edefault")
    names = PausedQueues(r).current()
    assert "default" not in names and len(names) == 4


def test_an_outage_keeps_the_last_read(r):
    class Down:
        def smembers(self, key):
            raise redis.ConnectionError("down")
    now = [0.0]
    paused = PausedQueues(r, clock=lambda: now[0])
    r.sadd(keys.PAUSED, "a")
    assert paused.current() == {"a"}
    paused._redis = Down()
    now[0] += 2 * REFRESH
    assert paused.current() == {"a"}
    never_read = PausedQueues(Down())
    for _ in range(2):  # no answer yet is not "nothing paused": the fetch must not go ahead
        with pytest.raises(redis.ConnectionError):
            never_read.select(["a"])


# -------------------------------------------------------------------------------------------- the fetchers

def _reliable(r, specs):
    return ReliableFetch(r, specs, random.Random(1), "host:1:abc", 0, 0)


def _basic(r, specs):
    return BasicFetch(r, specs, random.Random(1))


@pytest.mark.parametrize("make", [_reliable, _basic], ids=["reliable", "basic"])
@pytest.mark.parametrize("weights", [(0, 0), (3, 1)], ids=["strict", "weighted"])
def test_fetchers_skip_a_paused_queue(r, make, weights):
    specs = [QueueSpec("a", weights[0]), QueueSpec("b", weights[1])]
    for q in ("a", "b"):
        r.lpush(keys.queue(q), *[json.dumps({"class": "X", "args": [q, i], "jid": f"{q}{i}"}) for i in range(5)])
    r.sadd(keys.PAUSED, "a")
    fetcher = make(r, specs)
    got = []
    for _ in range(5):
        unit = fetcher.fetch()
        got.append(unit.queue)
        fetcher.ack(unit)
    assert got == ["b"] * 5 and r.llen(keys.queue("a")) == 5


@pytest.mark.parametrize("make", [_reliable, _basic], ids=["reliable", "basic"])
def test_every_queue_paused_waits_without_spinning_and_resumes(r, make):
    r.lpush(keys.queue("a"), json.dumps({"class": "X", "args": [], "jid": "j1"}))
    r.sadd(keys.PAUSED, "a")
    fetcher = make(r, [QueueSpec("a")])
    r.config_resetstat()
    started = time.monotonic()
    assert fetcher.fetch() is None and fetcher.fetch() is None
    assert time.monotonic() - started >= REFRESH * 0.9  # it slept instead of asking Redis again and again
    stats = r.info("commandstats")
    assert not any(name in stats for name in ("cmdstat_evalsha", "cmdstat_brpop", "cmdstat_blmove"))
    r.srem(keys.PAUSED, "a")
    unit = wait_for(fetcher.fetch, REFRESH + FETCH_TIMEOUT + 1, message="the unpaused queue to be fetched")
    assert unit.queue == "a"


@pytest.mark.parametrize("make", [_reliable, _basic], ids=["reliable", "basic"])
def test_a_job_a_blocking_fetch_gets_from_a_queue_paused_meanwhile_goes_back_to_its_head(r, make):
    fetcher = make(r, [QueueSpec("a")])
    assert fetcher.fetch() is None  # empty: the paused set has been read (nothing paused)
    fetcher.paused = PausedQueues(r, refresh=0.0)  # as if the next read were due when the fetch returns
    payloads = [json.dumps({"class": "X", "args": [i], "jid": f"j{i}"}).encode() for i in range(2)]

    def pause_then_push():
        time.sleep(0.3)  # the fetch is blocking on `a` by now
        r.sadd(keys.PAUSED, "a")
        r.lpush(keys.queue("a"), *payloads)

    thread = threading.Thread(target=pause_then_push)
    thread.start()
    assert fetcher.fetch() is None  # the blocking fetch got j0 and put it back
    thread.join()
    assert r.lrange(keys.queue("a"), 0, -1) == payloads[::-1]  # j0 back at the head (the right end), in order
    assert not any(r.llen(k) for k in r.keys("working:*"))
    r.srem(keys.PAUSED, "a")
    assert json.loads(fetcher.fetch().payload)["jid"] == "j0"


def test_reliable_fetch_sends_its_acks_when_everything_is_paused(r):
    r.lpush(keys.queue("a"), json.dumps({"class": "X", "args": [], "jid": "j1"}))
    fetcher = _reliable(r, [QueueSpec("a")])
    unit = fetcher.fetch()
    assert r.llen(unit.working) == 1
    fetcher.ack(unit)
    r.sadd(keys.PAUSED, "a")
    fetcher.paused = PausedQueues(r)  # a fresh read, as a second later
    assert fetcher.fetch() is None
    assert r.llen(unit.working) == 0  # the finished job was acknowledged, not left for a rerun


# -------------------------------------------------------------------------------------------- API and CLI

def test_api_pause_unpause_and_paused(r):
    q = api.Queue("mail", r)
    assert not q.paused and q.pause() is True and q.pause() is False and q.paused
    assert api.paused_queues(r) == ["mail"]
    assert q.unpause() is True and q.unpause() is False and not q.paused
    sidepunch.configure(redis=r)
    try:
        api.Queue("default").pause()  # the configured client's connection
        assert api.Queue("default").paused and r.sismember(keys.PAUSED, "default")
    finally:
        sidepunch.configure()


@pytest.mark.parametrize("name", ["", " lead", "a,b", "tab\there", "x" * 5000, "\ud800", "line\u2028sep"])
def test_api_refuses_names_no_daemon_could_fetch(r, name):
    with pytest.raises(ValueError):
        api.Queue(name, r).pause()
    assert r.scard(keys.PAUSED) == 0


def test_api_takes_odd_but_valid_names_and_unpauses_any_member(r):
    for name in ("émoji 🎉", "<script>alert(1)</script>", "a:b:c", "queue:x", "*?[]"):
        assert api.Queue(name, r).pause() and api.Queue(name, r).paused
    r.sadd(keys.PAUSED, b"\xff\xfe")
    odd = next(n for n in api.paused_queues(r) if n.startswith("\udcff"))
    assert api.Queue(odd, r).unpause() and not r.sismember(keys.PAUSED, b"\xff\xfe")
    with pytest.raises(TypeError):
        api.pausing.pause(r, 42)
    r.delete(keys.PAUSED)
    r.set(keys.PAUSED, "a string")
    assert api.paused_queues(r) == []


def test_cli_pause_unpause_and_queues(cli, r, client):
    client.push({"class": "A", "args": [], "queue": "mail"})
    status, out, _ = cli("pause", "mail")
    assert status == 0 and "paused queue mail" in out and r.sismember(keys.PAUSED, "mail")
    assert cli("pause", "mail")[1].count("already") == 1
    cli("pause", "later")  # no job yet: listed anyway, so it can be unpaused
    listed = {q["name"]: q for q in json.loads(cli("--json", "queues")[1])}
    assert listed["mail"]["paused"] and listed["mail"]["size"] == 1 and listed["later"]["paused"]
    status, out, _ = cli("queues")
    assert status == 0 and out.splitlines()[0].split() == ["QUEUE", "SIZE", "LATENCY", "PAUSED"]
    assert out.splitlines()[1].split() == ["mail", "1", out.splitlines()[1].split()[2], "yes"]
    status, out, _ = cli("unpause", "mail")
    assert status == 0 and not r.sismember(keys.PAUSED, "mail")
    assert cli("unpause", "mail")[1].strip() == "queue mail was not paused"
    status, _, err = cli("pause", "a,b")
    assert status == 2 and "a,b" in err


def test_cli_shows_hostile_paused_names_safely(cli, r):
    r.sadd(keys.PAUSED, b"\xff\xfe", "red\x1b[31m", "\u202eevil", "x" * 1000)
    status, out, _ = cli("queues")
    assert status == 0 and "\x1b" not in out and "\u202e" not in out and out.count("yes") == 4
    status, out, _ = cli("--json", "queues")
    assert status == 0 and sum(q["paused"] for q in json.loads(out)) == 4
    assert cli("unpause", b"\xff\xfe".decode("utf-8", "surrogateescape"))[0] == 0  # as argv decodes it
    assert not r.sismember(keys.PAUSED, b"\xff\xfe")


# -------------------------------------------------------------------------------------------- real daemons

def _run_pause_cycle(d, r, client):
    """Queues a and b; a job of `a` runs while `a` is paused: it finishes, pushes to `a` wait, `b` flows."""
    client.push({"class": testjobs.Sleep, "args": ["long", 2.5], "queue": "a"})
    wait_for(lambda: r.lrange("started", 0, -1) == [b"long"], 20, message="the long job to start")
    assert api.Queue("a", r).pause()
    time.sleep(PAUSE_TAKES)  # every fetcher has seen it, and no blocking fetch on `a` is left
    jids = [client.push({"class": testjobs.Record, "args": [f"a{i}"], "queue": "a"}) for i in range(5)]
    assert all(jids)  # pushes are still accepted
    for i in range(5):
        client.push({"class": testjobs.Record, "args": [f"b{i}"], "queue": "b"})
    wait_for(lambda: r.lrange("done", 0, -1).count(b"long") == 1, 10, message="the running job to finish")
    wait_for(lambda: {f"b{i}".encode() for i in range(5)} <= set(r.lrange("done", 0, -1)), 10,
             message="queue b to flow")
    time.sleep(FETCH_TIMEOUT)
    assert r.llen(keys.queue("a")) == 5 and not any(v.startswith(b"a") for v in r.lrange("done", 0, -1))
    paused_at = time.monotonic()
    assert api.Queue("a", r).unpause()
    wait_for(lambda: r.llen("done") == 11, 10, message="queue a to resume")
    return time.monotonic() - paused_at


@pytest.mark.parametrize("fetch,queues", [("reliable", ("-q", "a", "-q", "b")), ("basic", ("-q", "a", "-q", "b")),
                                          ("reliable", ("-q", "a,2", "-q", "b,1"))],
                         ids=["reliable-strict", "basic-strict", "reliable-weighted"])
def test_a_daemon_stops_fetching_a_paused_queue(daemon, r, client, fetch, queues):
    d = daemon("--workers", "2", "--threads", "3", "--fetch", fetch, *queues, "-r", "testjobs")
    d.wait_children(2)
    resumed_in = _run_pause_cycle(d, r, client)
    assert resumed_in < REFRESH + FETCH_TIMEOUT + 2
    assert "Traceback" not in d.log()


def test_a_daemon_whose_queues_are_all_paused_idles_quietly_and_resumes(daemon, r, client):
    r.sadd(keys.PAUSED, "a")
    d = daemon("--workers", "2", "--threads", "5", "-q", "a", "-r", "testjobs")
    d.wait_children(2)
    client.push({"class": testjobs.Record, "args": ["x"], "queue": "a"})
    time.sleep(PAUSE_TAKES)
    r.config_resetstat()
    time.sleep(3)
    stats = r.info("commandstats")
    reads = stats.get("cmdstat_smembers", {}).get("calls", 0)
    assert reads <= 2 * 4 + 2  # about one read a second per worker process, not one per thread or per spin
    assert "cmdstat_evalsha" not in stats and "cmdstat_blmove" not in stats
    assert r.llen("done") == 0 and r.llen(keys.queue("a")) == 1
    started = time.monotonic()
    r.srem(keys.PAUSED, "a")
    wait_for(lambda: r.llen("done") == 1, 5, message="the job to run after unpause")
    assert time.monotonic() - started < REFRESH + 1.5


def test_hostile_paused_members_do_not_hurt_a_daemon(daemon, r, client):
    r.sadd(keys.PAUSED, b"\xff", b"", b"a" * 100_000, b"default\x00", b"queue:default")
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    d.wait_children(1)
    client.push({"class": testjobs.Record, "args": ["ok"]})
    wait_for(lambda: r.llen("done") == 1, 10, message="the default queue to flow")
    r.delete(keys.PAUSED)
    r.set(keys.PAUSED, "wrong type")
    client.push({"class": testjobs.Record, "args": ["still"]})
    wait_for(lambda: r.llen("done") == 2, 10, message="jobs to flow with a wrong-typed paused key")
    assert d.proc.poll() is None and "Traceback" not in d.log()


def test_an_embedded_manager_honours_pause(redis_server, r, client):
    sidepunch.configure(redis=r)
    with sidepunch.Manager(concurrency=2, queues=["a", "b"], redis_url=redis_server.url):
        api.Queue("a", r).pause()
        time.sleep(PAUSE_TAKES)
        client.push({"class": testjobs.Record, "args": ["a"], "queue": "a"})
        client.push({"class": testjobs.Record, "args": ["b"], "queue": "b"})
        wait_for(lambda: r.lrange("done", 0, -1) == [b"b"], 10, message="queue b to flow")
        time.sleep(FETCH_TIMEOUT)
        assert r.llen(keys.queue("a")) == 1
        api.Queue("a", r).unpause()
        wait_for(lambda: r.llen("done") == 2, 10, message="queue a to resume")
    sidepunch.configure()


def test_a_basic_fetch_whose_put_back_meets_an_outage_loses_no_job(r):
    """Basic fetch holds a popped job only in memory: if putting back a job of a queue paused meanwhile meets a
    Redis outage, the job must not vanish with the exception (it runs instead: a pause is kept within a
    second, a job is never lost)."""
    class PausedThenDown(redis.Redis):
        def brpop(self, *args, **kwargs):
            reply = super().brpop(*args, **kwargs)
            r.sadd(keys.PAUSED, "a")  # paused while this fetch blocked
            return reply

        def pipeline(self, *args, **kwargs):
            raise redis.ConnectionError("Redis went away")  # ...and the put-back meets an outage

    payload = json.dumps({"class": "X", "args": [], "jid": "j1"}).encode()
    r.lpush(keys.queue("a"), payload)
    fetcher = BasicFetch(PausedThenDown(connection_pool=r.connection_pool), [QueueSpec("a")], random.Random(1))
    fetcher.paused = PausedQueues(r, refresh=0.0)
    try:
        unit = fetcher.fetch()
    except redis.ConnectionError:
        unit = None
    in_redis = r.lrange(keys.queue("a"), 0, -1)
    assert (unit is not None and unit.payload == payload) or in_redis == [payload], (unit, in_redis)
