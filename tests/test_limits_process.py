"""Rate limits in a real sidepunchd (4 workers x 5 threads where it matters) against a real redis-server: a
concurrency-2 limiter never has 3 jobs running, a 10-per-second window never admits 11 in a second, a bucket
gives its burst then its rate, every job completes exactly once, rate-limited jobs are neither failures nor
retries; a SIGKILLed worker's slot comes back after its lease; slots come back when a job times out; acquire()
works inside a job. What ran is observed from inside the jobs (tests/apps/limitjobs.py)."""
import sys
import threading
import time

import pytest
import redis as redis_lib

from sidepunch.api import LimitSet
from sidepunch.core import keys
from conftest import APPS, wait_for
from test_limits import sliding_max

sys.path.insert(0, str(APPS))
import limitjobs  # noqa: E402

FLEET = ("--workers", "4", "--threads", "5", "-r", "limitjobs", "--poll-interval", "0.2")


def push(client, cls, args, n):
    return [client.push({"class": cls, "args": list(args)}) for _ in range(n)]


def redis_times(r, key):
    return [float(t) for t in r.lrange(key, 0, -1)]


def assert_each_ran_once(r, jids):
    assert {j.encode() for j in jids} <= r.smembers("done")
    assert all(r.get(f"runs:{j}") == b"1" for j in jids)
    assert r.zcard("retry") == r.zcard("dead") == 0


class WindowWatch:
    """Collects a window limiter's admission log (token -> Redis time) every 0.1 s while it runs: entries stay
    in the log for `per` seconds, so none is missed."""

    def __init__(self, url, limiter):
        self.limiter, self.seen, self._stop = limiter, {}, threading.Event()
        self._client = redis_lib.Redis.from_url(url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.seen.update(self._client.zrange(self.limiter.state_key, 0, -1, withscores=True))
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.seen.update(self._client.zrange(self.limiter.state_key, 0, -1, withscores=True))
        return list(self.seen.values())


def test_concurrency_two_never_has_three_running_and_every_job_runs_once(daemon, r, client):
    d = daemon(*FLEET)
    d.wait_children(4)
    jids = push(client, limitjobs.Paired, [0.05], 40) + push(client, limitjobs.AsyncPaired, [0.05], 10)
    wait_for(lambda: r.scard("done") == 50, timeout=40, message="50 limited jobs done")
    assert int(r.get("peak:pair")) == 2  # reached, never passed: seen inside the jobs
    assert_each_ran_once(r, jids)
    wait_for(lambda: int(r.get(keys.STAT_RATE_LIMITED) or 0) > 0, timeout=10, message="rate_limited counted")
    info = LimitSet(r).get("pair")
    assert info.kind == "concurrent" and info.in_use == 0 and info.waiting == 0


def test_ten_per_second_never_admits_eleven_in_a_second_and_a_bucket_keeps_its_rate(daemon, r, client,
                                                                                     redis_server):
    watch = WindowWatch(redis_server.url, limitjobs.TEN_PER_SECOND)
    d = daemon(*FLEET)
    d.wait_children(4)
    jids = push(client, limitjobs.TenPerSecond, [], 35) + push(client, limitjobs.Bursty, [], 10)
    wait_for(lambda: r.scard("done") == 45, timeout=40, message="45 limited jobs done")
    admissions = watch.stop()
    assert len(admissions) >= 35 and sliding_max(admissions, 1.0) == 10  # the limiter's own log: exact
    ran = redis_times(r, "ran:ten-per-second")
    assert len(ran) == 35
    # Seen from inside the jobs, each start comes a little after its admission (a few ms; more on a loaded
    # machine), so the in-job check allows 0.2 s of that: no 11 within 0.8 s. Unlimited, all 35 would start
    # within a fraction of a second.
    assert sliding_max(ran, 0.8) <= 10 and max(ran) - min(ran) >= 3 - 0.2, sorted(ran)
    bursty = sorted(redis_times(r, "ran:bursty"))
    assert len(bursty) == 10 and bursty[-1] - bursty[0] >= (10 - 3) / 5 - 0.2, bursty  # burst 3, then 5 a second
    assert_each_ran_once(r, jids)


def test_a_sigkilled_workers_slot_comes_back_after_its_lease(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "2", "-r", "limitjobs", "--poll-interval", "0.2")
    d.wait_children(1)
    client.push({"class": limitjobs.HoldAndDie, "args": []})
    wait_for(lambda: r.llen("holding") == 1, message="the holder to take its slot")
    killed_at = time.monotonic()
    assert LimitSet(r).get("short-lease").in_use == 1  # held by a process that no longer exists
    jid = client.push({"class": limitjobs.ShortLeased, "args": []})
    wait_for(lambda: r.sismember("done", jid), timeout=20, message="the next job to get the slot back")
    assert time.monotonic() - killed_at >= 1.0  # not before the dead holder's lease (2 s) ran out


@pytest.mark.parametrize("job", ["Spinning", "AsyncWaits"])
def test_a_job_that_times_out_gives_its_slot_back_at_once(daemon, r, client, job):
    d = daemon("--workers", "1", "--threads", "2", "-r", "limitjobs")
    d.wait_children(1)
    client.push({"class": getattr(limitjobs, job), "args": [30], "timeout": 1.5, "retry": False})
    wait_for(lambda: r.llen("spinning") == 1, message="the job to start")
    assert LimitSet(r).get("pair").in_use == 1
    d.wait_log(f"fail limitjobs.{job}")
    # the lease (5 s) is renewed while held, so it could only lapse 5 s after the job ended: freed within a
    # second of the ending means the ending released it
    wait_for(lambda: LimitSet(r).get("pair").in_use == 0, timeout=1.0, message="the slot given back")


def test_acquire_inside_jobs_across_processes(daemon, r, client):
    d = daemon("--workers", "2", "--threads", "3", "-r", "limitjobs")
    d.wait_children(2)
    jids = push(client, limitjobs.AcquiresInside, [0.1], 8)
    wait_for(lambda: r.scard("done") == 8, timeout=30, message="8 jobs done")
    assert int(r.get("peak:in-job")) == 1
    assert_each_ran_once(r, jids)
