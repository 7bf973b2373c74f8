"""ProcessorPool and the choice of fetch strategy, driven directly against a real redis-server (threads, no fork)."""
import json
import random
import sys
import threading
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch.server.config import build_config
from sidepunch.server.fetch import BasicFetch, ReliableFetch, ThreadSlot, fetcher_class
from conftest import join_all, make_pool, wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import testjobs  # noqa: E402

IDENTITY = "testhost:1234:abcdefabcdef"


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def make_config(*args):
    return build_config(["-r", "testjobs", "--threads", "1", *args], {"REDIS_URL": "redis://unused"})


@pytest.mark.parametrize("name, chosen, recovers", [("reliable", ReliableFetch, True), ("basic", BasicFetch, False)])
def test_the_fetch_strategy_is_chosen_from_the_config(name, chosen, recovers):
    config = make_config("--fetch", name)
    assert fetcher_class(config) is chosen and chosen.recovers_on_death is recovers


def test_a_reliable_fetcher_works_in_its_threads_own_list(r, client):
    config = make_config("--fetch", "reliable", "--threads", "3", "--workers", "2")
    fetcher = ReliableFetch.for_thread(r, config, IDENTITY, ThreadSlot(number=2, index=1))
    assert ThreadSlot(2, 1).home(config.threads) == 4  # unique across the daemon's 2 x 3 threads
    client.push({"class": testjobs.Record, "args": ["a"]})
    unit = fetcher.fetch()
    assert unit.working == f"working:queue:default:{IDENTITY}.1" and r.llen(unit.working) == 1
    fetcher.requeue([unit])
    assert r.llen("queue:default") == 1 and r.llen(unit.working) == 0


@pytest.mark.parametrize("fetch", ["reliable", "basic"])
def test_stop_waits_until_the_deadline_then_requeues_the_running_job(r, client, fetch):
    pool, _ = make_pool(r, "--fetch", fetch)
    client.push({"class": testjobs.Sleep, "args": ["slow", 1.5]})
    pool.start()
    wait_for(lambda: r.llen("started") == 1, 10, message="the job to start")
    deadline = time.monotonic() + 0.3
    pool.ctx.state.stop(deadline)
    pool.stop(deadline)
    assert time.monotonic() < deadline + 3.5
    (raw,) = r.lrange("queue:default", 0, -1)  # back at the head of its queue, unchanged
    assert json.loads(raw)["args"] == ["slow", 1.5] and r.keys("working:*") == []
    join_all(pool)  # the abandoned thread finishes the job, but records nothing
    assert r.zcard("retry") == 0 and r.llen("queue:default") == 1


def test_stop_before_the_deadline_when_the_jobs_finish(r, client):
    pool, _ = make_pool(r)
    client.push({"class": testjobs.Sleep, "args": ["quick", 0.2]})
    pool.start()
    wait_for(lambda: r.llen("started") == 1, 10, message="the job to start")
    deadline = time.monotonic() + 20
    pool.ctx.state.stop(deadline)
    pool.stop(deadline)
    assert time.monotonic() < deadline - 10
    assert r.lrange("done", 0, -1) == [b"quick"] and r.llen("queue:default") == 0 and r.keys("working:*") == []


class Crashing(BasicFetch):
    """A fetcher whose first fetch raises what no processor expects, which kills its thread."""
    built = 0

    @classmethod
    def for_thread(cls, client, config, identity, slot):
        cls.built += 1
        return cls(client, config.queues, random.Random(1), crash=cls.built == 1)

    def __init__(self, client, specs, rng, crash):
        super().__init__(client, specs, rng)
        self._crash = crash

    def fetch(self):
        if self._crash:
            raise RuntimeError("boom")
        return super().fetch()


def test_a_processor_thread_that_died_is_replaced(r, client):
    pool, _ = make_pool(r, fetcher=Crashing)
    pool.start()
    first = pool.processors[0]
    first.thread.join(5)
    pool.replace_dead()
    assert Crashing.built == 2 and pool.processors[0] is not first and pool.processors[0].thread.is_alive()
    client.push({"class": testjobs.Record, "args": ["after"]})
    wait_for(lambda: r.lrange("done", 0, -1) == [b"after"], 10, message="the replacement to run a job")
    join_all(pool)


def test_jobs_by_thread_names_the_running_job(r, client):
    pool, _ = make_pool(r)
    client.push({"class": testjobs.Sleep, "args": ["seen", 0.5]})
    pool.start()
    wait_for(lambda: r.llen("started") == 1, 10, message="the job to start")
    (work,) = pool.jobs_by_thread().values()
    assert threading.get_ident() not in pool.jobs_by_thread() and b'"seen"' in work.payload
    join_all(pool)
