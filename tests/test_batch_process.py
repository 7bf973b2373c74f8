"""Batches on a real daemon (issue 16 point 3's crash test, and point 7's chain recipe): workers SIGKILLed again
and again while a batch of 2,000 jobs runs, and "run B after all of A succeeded" through on_success."""
import os
import random
import signal
import sys
import time

import pytest

import sidepunch
from sidepunch.api import BatchStatus
from sidepunch.core import keys
from conftest import APPS, wait_for

sys.path.insert(0, str(APPS))
import batchjobs  # noqa: E402


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r, redis_server):
    sidepunch.configure(redis_server.url)
    yield
    sidepunch.configure(redis=r)


def test_sigkilled_workers_lose_no_job_and_each_callback_runs_once(daemon, r):
    batch = sidepunch.Batch(description="crash test", on_success=batchjobs.CallbackRun,
                            on_complete=batchjobs.CallbackRun)
    with batch:
        batchjobs.Tracked.perform_bulk([[i] for i in range(2000)])
    d = daemon("--workers", "3", "--threads", "4", "-r", "batchjobs", "--max-interruptions", "1000")
    d.wait_children(3)
    rng, kills = random.Random(16), 0
    deadline = time.monotonic() + 120
    while not r.hexists(keys.batch(batch.bid), "success_at") and time.monotonic() < deadline:
        time.sleep(0.25)
        children = d.children()
        if len(children) == 3 and r.scard("batchtest:done") > 0:
            os.kill(rng.choice(children).pid, signal.SIGKILL)
            kills += 1
    assert kills >= 5, f"only {kills} workers were killed before the batch finished"
    wait_for(lambda: r.llen("batchtest:runs:success") and r.llen("batchtest:runs:complete"), 60,
             message="both callbacks to run")
    time.sleep(2)  # time for a duplicate callback to show up, if there were one
    assert r.scard("batchtest:done") == 2000
    success = [x.decode() for x in r.lrange("batchtest:runs:success", 0, -1)]
    complete = [x.decode() for x in r.lrange("batchtest:runs:complete", 0, -1)]
    assert len(success) == 1 and len(complete) == 1 and success[0].split()[0] == batch.bid
    status = BatchStatus(batch.bid)
    assert (status.total, status.pending, status.failures) == (2000, 0, 0)
    assert "killed by SIGKILL" in d.log()


def test_chain_b_runs_after_every_a_succeeded(daemon, r):
    """The recipe of docs/features/batches.md: B is A's on_success callback."""
    batch = sidepunch.Batch(description="step A", on_success=batchjobs.ThenB)
    with batch:
        batchjobs.FailOnce.perform_bulk([[f"a{i}"] for i in range(5)])
    d = daemon("--workers", "1", "--threads", "2", "-r", "batchjobs", "--poll-interval", "1")
    d.wait_children(1)
    wait_for(lambda: r.llen("batchtest:chain"), 90, message="step B")
    ran = [x.decode() for x in r.lrange("batchtest:ran", 0, -1)]
    assert sorted(ran) == [f"a{i}" for i in range(5)]  # every A succeeded (after one failure each) before B
    assert [x.decode() for x in r.lrange("batchtest:chain", 0, -1)] == ["B after 5 A jobs"]


def test_async_jobs_report_to_their_batch_and_a_death_fires_on_death(daemon, r):
    batch = sidepunch.Batch(description="async", on_complete=batchjobs.CallbackRun, on_death=batchjobs.CallbackRun)
    with batch:
        batchjobs.AsyncWork.perform_bulk([[i] for i in range(5)])
        batchjobs.AsyncFail.perform_async("x")
    d = daemon("--workers", "1", "--threads", "2", "-r", "batchjobs")
    d.wait_children(1)
    wait_for(lambda: r.llen("batchtest:runs:complete"), 30, message="the complete callback")
    assert sorted(x.decode() for x in r.lrange("batchtest:ran", 0, -1)) == [f"{i} {batch.bid}" for i in range(5)]
    assert r.llen("batchtest:runs:death") == 1
    status = BatchStatus(batch.bid)
    assert (status.total, status.pending, status.failures, status.state) == (6, 1, 1, "complete")
