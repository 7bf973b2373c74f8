"""Redis refusing commands (out of memory under noeviction, too few replicas) and refusing the password: each is
an outage, logged once per process and retried with backoff, and no job is stranded or lost; a wrong password
at start is a bad setting (exit status 2, one line). Real redis-servers throughout.
"""
import collections
import json
import logging
import random
import signal
import sys
import threading
import time

import pytest
import redis

import sidepunch
from sidepunch.server.config import build_config
from sidepunch.core.connection import OUTAGE_ERRORS, Outage, RedisRefused, describe_outage, make_client
from sidepunch.embedded import RedisServer
from sidepunch.server.fetch import ReliableFetch
from sidepunch.server.processor import Processor
from sidepunch.server.resolver import JobResolver
from sidepunch.server.retry import DeadSet, RetryPolicy
from sidepunch.server.state import ChildContext, LifecycleState
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import hostile_jobs  # noqa: E402

IDENTITY = "testhost:999:0123456789ab"


class Refusal:
    """Makes the test server refuse writes, then accept them again; restores its settings in any case."""

    def __init__(self, r, kind):
        self.r = r
        self.kind = kind
        self.saved = {name: r.config_get(name)[name] for name in
                      ("maxmemory", "maxmemory-policy", "min-replicas-to-write")}

    def start(self):
        if self.kind == "noreplicas":
            self.r.config_set("min-replicas-to-write", 1)
            return
        self.r.config_set("maxmemory-policy", "noeviction")
        self.r.config_set("maxmemory", self.r.info("memory")["used_memory"] + 2 * 2 ** 20)
        value, n = b"x" * 10_000, 0
        try:
            while True:
                self.r.set(f"ballast:{n}", value)
                n += 1
        except redis.exceptions.OutOfMemoryError:
            pass
        # A megabyte under what is used: a few bytes freed by an acknowledgement must not end the outage.
        self.r.config_set("maxmemory", self.r.info("memory")["used_memory"] - 2 ** 20)

    def stop(self):
        for name, value in self.saved.items():
            self.r.config_set(name, value)

    def cleanup(self):
        self.stop()
        for key in self.r.scan_iter("ballast:*", count=1000):
            self.r.unlink(key)


@pytest.fixture(params=["oom", "noreplicas"])
def refusal(r, request):
    refusal = Refusal(r, request.param)
    yield refusal
    refusal.cleanup()


@pytest.fixture
def oom(r):
    refusal = Refusal(r, "oom")
    yield refusal
    refusal.cleanup()


class FailsQuietly(sidepunch.Job):
    """Fails without touching Redis itself."""

    def perform(self, *args):
        raise ValueError("failing on purpose")


def make_processor(client):
    config = build_config(["-r", "hostile_jobs"], {"REDIS_URL": "redis://unused"})
    retry = RetryPolicy(client, DeadSet(config.dead_max_jobs, config.dead_timeout), config.max_retries,
                        ReliableFetch.ack_into, rng=random.Random(1))
    ctx = ChildContext(redis=client, config=config, identity=IDENTITY, state=LifecycleState(),
                       outage=Outage("redis://x", logging.getLogger("test.outage"), settle=0.0),
                       resolver=JobResolver(["hostile_jobs"]), retry=retry)
    return Processor(0, ctx, ReliableFetch(client, config.queues, random.Random(1), IDENTITY, 0, 0, batch=1))


def test_refusals_are_outages_wherever_they_come_from(r, redis_server, refusal):
    client = make_client(redis_server.url)
    r.set("a-string", "x")
    refusal.start()
    attempts = {
        "command": lambda: client.rpush("q", "x"),
        "script": lambda: client.eval("return redis.call('RPUSH', KEYS[1], 'x')", 1, "q"),
        "transaction": lambda: client.pipeline(transaction=True).get("q").rpush("q", "x").execute(),
        "pipeline": lambda: client.pipeline(transaction=False).get("q").rpush("q", "x").execute(),
    }
    for name, attempt in attempts.items():
        with pytest.raises(OUTAGE_ERRORS) as caught:
            attempt()
        assert "refuses commands" in describe_outage(caught.value, "redis://x"), name
    refusal.stop()
    with pytest.raises(redis.ResponseError) as caught:  # a command's own fault is not an outage
        client.rpush("a-string", "x")
    assert not isinstance(caught.value, OUTAGE_ERRORS + (RedisRefused,))


def test_a_failure_whose_write_is_refused_waits_holding_the_job_then_lands_once(r, redis_server, refusal, caplog):
    caplog.set_level(logging.INFO, logger="test.outage")
    client = make_client(redis_server.url)
    proc = make_processor(client)
    jid = sidepunch.Client(redis=r).push({"class": FailsQuietly, "args": []})
    unit = proc.fetcher.fetch()
    refusal.start()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(proc.process(unit)), daemon=True)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive()  # retrying the write with backoff, the job still in its working list
    assert r.lrange(unit.working, 0, -1) == [unit.payload] and r.zcard("retry") == 0
    assert len(proc.ctx.work) == 1  # and shown as running, so the API sees it
    refusal.stop()
    thread.join(15)
    assert outcome == ["retry"]
    (member,) = r.zrange("retry", 0, -1)
    assert json.loads(member)["jid"] == jid and r.llen(unit.working) == 0
    messages = [rec.getMessage() for rec in caplog.records if rec.name == "test.outage"]
    assert sum("refuses commands" in m for m in messages) == 1 and sum("reachable again" in m for m in messages) == 1


def test_daemon_under_oom_strands_nothing_and_lands_everything_once_memory_is_freed(daemon, r, client, oom):
    d = daemon("--workers", "2", "--threads", "3", "-r", "hostile_jobs", "--poll-interval", "1")
    d.wait_children(2)
    wait_for(lambda: r.scard("processes") == 2, 15, message="both workers to register")
    d.signal(signal.SIGTSTP)
    wait_for(lambda: d.log().count("no new jobs will be fetched") == 2, 10, message="both workers to go quiet")
    time.sleep(2.5)  # idle fetchers return from their blocking wait
    tokens = [f"<M{i}>" for i in range(60)]
    client.push_bulk({"class": hostile_jobs.Record, "args": [[t] for t in tokens]})
    oom.start()
    d.signal(signal.SIGCONT)
    time.sleep(8)  # jobs fail (their own writes are refused), and so do fetches, acknowledgements, the heartbeat
    assert d.proc.poll() is None
    during = d.log()
    assert 1 <= during.count("refuses commands") <= 3, during[-3000:]  # one line per process at most
    assert "Traceback" not in during
    oom.stop()
    wait_for(lambda: set(tokens) <= {t.decode() for t in r.lrange("done", 0, -1)}, 90,
             message="every job to land once memory is freed")
    time.sleep(1)
    done = collections.Counter(t.decode() for t in r.lrange("done", 0, -1))
    assert all(done[t] == 1 for t in tokens), "a job ran to the end twice"
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and r.llen("queue:default") == 0
    workers = [line for line in during.splitlines() if "sidepunch.child" in line and "refuses commands" in line]
    wait_for(lambda: d.log().count("reachable again") >= len(workers), 30,
             message="each worker to log the end of the outage")
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
    log = d.log()
    assert r.keys("working:*") == [] and "Traceback" not in log
    assert log.count("refuses commands") <= 3  # the master may notice later than the workers, once too


# --- passwords ----------------------------------------------------------------------------------------------------

@pytest.fixture
def guarded_server():
    """A second redis-server with a password ("right"); its own, so nothing else has to be restored."""
    server = RedisServer().start()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "right")
    yield server, admin
    admin.close()
    server.stop()


def with_password(server, password):
    return server.url.replace("redis://", f"redis://:{password}@")


@pytest.mark.parametrize("password", ["hunter2-wrong", None])
def test_wrong_password_at_start_is_a_bad_setting(daemon, guarded_server, password):
    server, _ = guarded_server
    url = with_password(server, password) if password else server.url
    d = daemon("--workers", "1", "-r", "hostile_jobs", url=url)
    assert d.wait(30) == 2
    log = d.log()
    assert log.count("authentication failed at redis://") == 1 and "Traceback" not in log
    assert "cannot reach Redis" not in log and "hunter2" not in log and "starting" not in log


def test_password_changed_during_a_run_is_logged_once_per_process_and_retried(daemon, guarded_server, tmp_path):
    server, admin = guarded_server
    d = daemon("--workers", "2", "--threads", "2", "-r", "hostile_jobs", url=with_password(server, "right"))
    d.wait_children(2)
    wait_for(lambda: admin.scard("processes") == 2, 15, message="both workers to register")
    admin.config_set("requirepass", "changed")
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    time.sleep(6)
    assert d.proc.poll() is None
    during = d.log()
    assert 1 <= during.count("authentication failed at redis://:***@") <= 3, during[-3000:]
    assert "Traceback" not in during and "right" not in during
    admin.config_set("requirepass", "right")
    wait_for(lambda: "reachable again" in d.log(), 20, message="the workers to log in again")
    sidepunch.Client(redis=admin).push({"class": hostile_jobs.Noop, "args": ["<after>"]})
    wait_for(lambda: admin.lrange("done", 0, -1) == [b"<after>"], 20, message="a job after the outage")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0


def test_enqueueing_client_does_not_retry_a_refused_password(guarded_server):
    server, admin = guarded_server
    admin.execute_command("ACL", "LOG", "RESET")
    client = sidepunch.Client(with_password(server, "nope"))
    with pytest.raises(redis.AuthenticationError):
        client.push({"class": hostile_jobs.Noop, "args": ["x"]})
    failures = sum(int(entry[b"count"]) for entry in admin.execute_command("ACL", "LOG")
                   if entry[b"reason"] == b"auth")
    assert failures == 1  # one attempt: retrying cannot fix a setting
    assert admin.llen("queue:default") == 0
