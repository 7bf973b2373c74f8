"""Attacks on the issue-11 worker (async jobs, timeouts, cancellation): hostile jobs, hooks and races, each
checked for "every fetched job ends in exactly one visible place, once, and the worker keeps going". Pool-level
tests drive a ProcessorPool against a real redis-server (threads, no fork); process-level ones run sidepunchd."""
import json
import logging
import signal
import sys
import time
from pathlib import Path

import pytest

import sidepunch
from sidepunch.core import keys
from sidepunch.server.cancels import CancelWatcher
from conftest import join_all, make_pool, wait_for

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import asyncjobs  # noqa: E402
import testjobs  # noqa: E402


@pytest.fixture(autouse=True)
def jobs_report_to_test_redis(r):
    sidepunch.configure(redis=r)


def enforce_until(pool, predicate, timeout, message):
    """The launcher's main loop, fast: enforce timeouts until `predicate()` holds."""
    return wait_for(lambda: pool.enforce_timeouts() or predicate(), timeout, interval=0.01, message=message)


def drained(r):
    return r.llen("queue:default") == 0 and not r.keys("working:*")


def test_interrupts_landing_inside_logging_never_leave_a_logging_lock_held(r, client):
    chat = logging.getLogger("asyncjobs.chatty")
    handler = logging.StreamHandler(open("/dev/null", "w"))
    chat.addHandler(handler)
    chat.propagate = False
    try:
        pool, retired = make_pool(r, "--threads", "2", app="asyncjobs")
        for _ in range(150):
            client.push({"class": asyncjobs.Chatty, "args": [], "timeout": 0.02, "retry": False})
        pool.start()
        # One leaked lock stalls every other thread at its next log line: the dead set would stop growing.
        enforce_until(pool, lambda: pool.ctx.counters.total_processed == 150 and drained(r), 30,
                      "150 interrupted jobs")
        assert pool.ctx.counters.take()[:2] == (150, 150)
        assert retired == [] and all(p.thread.is_alive() for p in pool.processors)
        assert handler.lock.acquire(timeout=1)  # no processor thread kept it
        handler.lock.release()
        join_all(pool)
    finally:
        chat.removeHandler(handler)
        chat.propagate = True
        handler.stream.close()
