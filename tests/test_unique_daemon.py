"""Unique jobs with a real sidepunchd: a duplicate is refused while the first is scheduled, queued, running or in
the retry set, and accepted again once the first succeeded, started (unique_until="start"), died, or its
process vanished and the lock's TTL ran out. A Ruby-style payload with unique_for runs like any job."""
import sys

import pytest

import sidepunch
from sidepunch.core import keys
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import uniquejobs  # noqa: E402


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def lock_count(r):
    return len(list(r.scan_iter(keys.UNIQUE_PREFIX + "*")))


def listed(r, key, value):
    return value.encode() in r.lrange(key, 0, -1)


def test_duplicates_are_refused_until_the_first_succeeds_starts_or_dies(daemon, r):
    d = daemon("--workers", "1", "--threads", "4", "-r", "uniquejobs")
    elsewhere = uniquejobs.Unique.set(queue="elsewhere")  # a queue this daemon does not fetch: it stays queued
    assert elsewhere.perform_async("q") and elsewhere.perform_async("q") is None
    assert uniquejobs.SlowUnique.perform_in(60, "sched", 0) and uniquejobs.SlowUnique.perform_in(5, "sched", 0) is None
    assert uniquejobs.SlowUnique.perform_async("run", 2)
    wait_for(lambda: listed(r, "started", "run"), 20, message="the slow job to start")
    assert uniquejobs.SlowUnique.perform_async("run", 2) is None  # running
    assert uniquejobs.UniqueUntilStart.perform_async("start", 2)
    wait_for(lambda: listed(r, "started", "start"), 10, message="the until-start job to start")
    assert uniquejobs.UniqueUntilStart.perform_async("start", 2)  # released when it started
    assert uniquejobs.FailingUnique.perform_async("retry")
    wait_for(lambda: r.zcard("retry") == 1, 10, message="the failing job in the retry set")
    assert uniquejobs.FailingUnique.perform_async("retry") is None  # waiting in the retry set
    assert uniquejobs.DyingUnique.perform_async("dies")
    wait_for(lambda: r.zcard("dead") == 1, 10, message="the dying job in the dead set")
    wait_for(lambda: listed(r, "done", "run"), 10, message="the slow job to finish")
    assert uniquejobs.DyingUnique.perform_async("dies")  # released on death
    assert wait_for(lambda: uniquejobs.SlowUnique.perform_async("run", 0), 5, message="released on success")
    assert uniquejobs.SlowUnique.perform_async("sched", 0) is None  # still scheduled
    assert elsewhere.perform_async("q") is None and r.llen("queue:elsewhere") == 1  # still queued
    wait_for(lambda: r.lrange("done", 0, -1).count(b"start") == 2 and r.llen("done") == 4, 15,
             message="every job that could run to finish")
    assert "could not release" not in d.log()


def test_async_and_ruby_style_unique_jobs(daemon, r):
    daemon("--workers", "1", "--threads", "2", "-r", "uniquejobs")
    assert uniquejobs.AsyncUnique.perform_async("a", 1.5)
    wait_for(lambda: listed(r, "started", "a"), 20, message="the async job to start")
    assert uniquejobs.AsyncUnique.perform_async("a", 1.5) is None
    wait_for(lambda: listed(r, "done", "a"), 10, message="the async job to finish")
    assert wait_for(lambda: uniquejobs.AsyncUnique.perform_async("a", 0.1), 5, message="released after success")
    ruby = ('{"class":"uniquejobs.Unique","args":["rb"],"queue":"default","jid":"0123456789abcdef01234567",'
            '"unique_for":3600,"unique_until":"success","retry":true,"created_at":1.0,"enqueued_at":1.0}')
    r.sadd("queues", "default")
    r.lpush("queue:default", ruby)
    wait_for(lambda: listed(r, "done", "rb"), 10, message="the Ruby-style job to run")
    wait_for(lambda: r.llen("done") == 3 and lock_count(r) == 0, 10, message="no lock left")


def test_the_ttl_frees_the_lock_of_a_job_whose_daemon_was_killed(daemon, r, redis_server):
    d = daemon("--workers", "1", "--threads", "1", "-r", "uniquejobs")
    item = {"class": uniquejobs.SlowUnique, "args": ["k", 30], "unique_for": 4}
    assert sidepunch.default_client().push(item)
    wait_for(lambda: listed(r, "started", "k"), 20, message="the job to start")
    assert sidepunch.default_client().push(item) is None
    d.kill_group(redis_server)
    assert wait_for(lambda: sidepunch.default_client().push(item), 10, message="the lock to lapse")
    assert lock_count(r) == 1 and r.llen("queue:default") == 1  # the new push holds the lock now
