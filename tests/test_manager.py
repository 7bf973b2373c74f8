"""sidepunch.Manager, the embedded runner, against a real redis-server: jobs run (sync and async), stats, stop's
requeue at the deadline, registration, the orphan sweep between Managers (one SIGKILLed in a subprocess), the lazy
import, and bad arguments. Every Manager a test starts is stopped after it; every subprocess is stopped by pid."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import wait_for

import sidepunch
from sidepunch import api
from sidepunch.core import keys

APPS = Path(__file__).resolve().parent / "apps"
ROOT = APPS.parent.parent
sys.path.insert(0, str(APPS))
import managerjobs  # noqa: E402
import testjobs  # noqa: E402


@pytest.fixture
def managers(redis_server, r):
    """make(**kwargs) -> a started Manager on the test Redis; each is stopped after the test."""
    sidepunch.configure(redis=r)  # the jobs report through the default client
    made = []

    def make(start=True, **kwargs):
        kwargs.setdefault("redis_url", redis_server.url)
        m = sidepunch.Manager(**kwargs)
        made.append(m)
        if start:
            m.start()
        return m
    yield make
    r.delete("hold")  # held jobs end, so no thread of this test writes into the next one's Redis
    for m in made:
        m.stop(timeout=0)
        for thread in manager_threads(m) if m._parts else ():
            if thread is not None:
                thread.join(10)
    managerjobs.MANAGER.clear()


def registered(r):
    return {p.identity: p for p in api.ProcessSet(r)}


def test_sync_and_async_jobs_run_and_stats_count_them(managers, r, client):
    m = managers(concurrency=2, queues=["critical", "default"])
    client.push({"class": testjobs.Record, "args": ["sync"], "queue": "critical"})
    client.push({"class": managerjobs.AsyncRecord, "args": ["a"]})
    client.push({"class": testjobs.Fail, "args": []})
    wait_for(lambda: r.llen("done") == 2 and r.zcard("retry") == 1, message="three jobs to run")
    client.push({"class": testjobs.Record, "args": ["later"], "queue": "other"})  # a queue it does not fetch
    client.push({"class": testjobs.Record, "args": ["x"], "at": time.time() + 3600})
    stats = wait_for(lambda: (s := m.stats())["processed"] == 3 and s, message="the counts")
    assert sorted(r.lrange("done", 0, -1)) == [b"async:a", b"sync"]
    assert stats == {"processed": 3, "failed": 1, "success_rate": 66.67, "busy": 0,
                     "queues": {"critical": 0, "default": 0, "other": 1}, "scheduled": 1, "retries": 1, "dead": 0}


def test_stats_before_any_job_and_before_start(managers, r, client):
    m = managers(start=False, queues="default")
    client.push({"class": testjobs.Record, "args": [1]})
    assert m.stats() == {"processed": 0, "failed": 0, "success_rate": 100.0, "busy": 0, "queues": {"default": 1},
                         "scheduled": 0, "retries": 0, "dead": 0}


def test_busy_counts_the_jobs_it_runs(managers, r, client):
    m = managers(concurrency=2)
    r.set("hold", 1)
    for i in range(2):
        client.push({"class": managerjobs.Held, "args": [i]})
    wait_for(lambda: m.stats()["busy"] == 2, message="two busy threads")
    r.delete("hold")
    wait_for(lambda: m.stats() | {"queues": None} == {"processed": 2, "failed": 0, "success_rate": 100.0,
                                                       "busy": 0, "queues": None, "scheduled": 0, "retries": 0,
                                                       "dead": 0}, message="both done")


def test_stop_requeues_a_running_job_at_the_deadline_unchanged_at_the_head(managers, r, client):
    m = managers(concurrency=1, start=False)
    r.set("hold", 1)
    client.push({"class": managerjobs.Held, "args": ["slow", 5]})
    (raw,) = r.lrange("queue:default", 0, -1)
    m.start()
    wait_for(lambda: r.llen("started") == 1, message="the job to start")
    client.push({"class": testjobs.Record, "args": ["behind"]})
    began = time.monotonic()
    m.stop(timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 0.5 + 8  # the deadline, then the pool's bounded joins
    assert r.lindex("queue:default", -1) == raw  # the next one fetched, byte for byte
    assert r.llen("queue:default") == 2 and r.keys("working:*") == []
    assert m.stats()["processed"] == 0  # requeued at the deadline is not a run
    r.delete("hold")
    # The requeued job was interrupted in its thread: it does not go on to its side effect, nor is it recorded.
    time.sleep(1.5)  # what the job would need to reach its side effect, had it not been interrupted
    assert r.llen("done") == 0 and r.lindex("queue:default", -1) == raw


def test_stop_requeues_a_running_async_job_at_the_deadline(managers, r, client):
    m = managers(concurrency=1, start=False)
    r.set("hold", 1)
    client.push({"class": managerjobs.AsyncHeld, "args": ["async slow"]})
    (raw,) = r.lrange("queue:default", 0, -1)
    m.start()
    wait_for(lambda: r.llen("started") == 1, message="the job to start")
    m.stop(timeout=0.3)
    assert r.lrange("queue:default", 0, -1) == [raw] and r.keys("working:*") == []
    assert m.stats()["processed"] == 0 and r.llen("done") == 0  # its task was cancelled, not finished


def test_a_job_that_finishes_before_the_deadline_is_recorded(managers, r, client):
    m = managers(concurrency=1)
    r.set("hold", 1)
    client.push({"class": managerjobs.Held, "args": ["short", 0.5]})
    wait_for(lambda: r.llen("started") == 1, message="the job to start")
    m.stop(timeout=10)
    assert r.lrange("done", 0, -1) == [b"short"] and r.llen("queue:default") == 0 and r.keys("working:*") == []
    assert m.stats()["processed"] == 1


def test_it_registers_as_a_process_and_leaves_at_stop(managers, r, cli):
    m = managers(concurrency=3, queues=["critical", "default"], tag="web")
    record = registered(r)[m.identity]
    assert record.info["pid"] == os.getpid() and record.info["embedded"] is True
    assert record.concurrency == 3 and record.queues == ["critical", "default"] and record.tag == "web"
    assert r.ttl(keys.alive(m.identity)) > 0  # what spares its working lists from any sweep
    status, out, _ = cli("processes")
    assert status == 0 and m.identity in out and "0/3" in out
    m.stop()
    assert m.identity not in registered(r) and not r.exists(keys.alive(m.identity))
    assert m.identity not in cli("processes")[1]


def test_it_starts_once_and_stops_once(managers):
    m = managers(start=False)
    m.stop()  # before start: nothing to do
    m.start()
    with pytest.raises(RuntimeError, match="starts once"):
        m.start()
    m.stop(timeout=0)
    m.stop(timeout=0)
    with pytest.raises(RuntimeError, match="starts once"):
        m.start()


def test_as_a_context_manager(managers, r, client, redis_server):
    sidepunch.configure(redis=r)
    with sidepunch.Manager(redis_url=redis_server.url) as m:
        client.push({"class": testjobs.Record, "args": ["ctx"]})
        wait_for(lambda: r.llen("done") == 1, message="the job")
        assert m.identity in registered(r)
    assert m.identity not in registered(r) and not any(t.is_alive() for t in manager_threads(m))


def test_a_job_may_stop_the_manager_running_it(managers, r, client):
    m = managers(concurrency=1)
    managerjobs.MANAGER.append(m)
    client.push({"class": managerjobs.StopManager, "args": []})
    wait_for(lambda: m.identity not in registered(r), message="the Manager to stop")
    assert r.lrange("done", 0, -1) == [b"stop requested"] and m.stats()["processed"] == 1


def test_remote_signals_quiet_resume_and_stop_this_manager_only(managers, r, client):
    m = managers(concurrency=1)
    m._remote_signal("TSTP")
    assert m.state.quiet and not m.state.stopping
    m._remote_signal("CONT")
    m._remote_signal("HUP")  # ignored, logged
    assert not m.state.quiet
    m._remote_signal("TERM")
    wait_for(lambda: m.identity not in registered(r), message="the Manager to stop")


def test_a_live_managers_lists_are_never_swept(managers, r, client):
    first = managers(concurrency=1)
    r.set("hold", 1)
    client.push({"class": managerjobs.Held, "args": ["busy"]})
    wait_for(lambda: r.llen("started") == 1, message="the job to start")
    second = managers(concurrency=1)
    assert second._sweeper.sweep() == 0
    assert r.llen(keys.working("default", first.identity, 0)) == 1 and r.llen("queue:default") == 0


CHILD = """
import sys, time, sidepunch, managerjobs
m = sidepunch.Manager(concurrency=1, redis_url=sys.argv[1], timeout=0.5)
sidepunch.configure(redis_url=sys.argv[1])
m.start()
print(m.identity, flush=True)
if sys.argv[2] == "wait":
    time.sleep(60)
else:  # end the script without stop(): the atexit hook stops the Manager
    while not sidepunch.default_client().redis.llen("started"):
        time.sleep(0.02)
"""


@pytest.fixture
def child(redis_server):
    """child(mode) -> (Popen, identity) of a Python process running a Manager; killed by pid afterwards."""
    started = []

    def run(mode):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(ROOT)]))
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), redis_server.url, mode], env=env,
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc, proc.stdout.readline().decode().strip()
    yield run
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()


def test_a_killed_managers_jobs_are_recovered_by_the_next_manager(managers, child, r, client):
    r.set("hold", 1)
    client.push({"class": managerjobs.Held, "args": ["orphan"]})
    proc, identity = child("wait")
    wait_for(lambda: r.llen("started") == 1, message="the child's Manager to start the job")
    # Killed inside its first sweep, it would hold the sweep lock for its 30 s TTL (a real delay, not tested here).
    wait_for(lambda: not r.exists(keys.RECOVERY_LOCK), message="the child's first sweep to end")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    working = keys.working("default", identity, 0)
    assert r.llen(working) == 1
    second = managers(concurrency=1)
    assert second._sweeper.sweep() == 0  # its liveness key has not expired yet: it could still be alive
    assert r.llen(working) == 1
    r.delete(keys.alive(identity))  # what its 20 s TTL does once the dead process stops beating
    r.delete("hold")
    # Its own sweep at start may still hold the sweep lock; then this one does nothing and is tried again.
    wait_for(lambda: second._sweeper.sweep() == 1 or r.llen(working) == 0, message="the sweep")
    wait_for(lambda: r.lrange("done", 0, -1) == [b"orphan"], message="the second Manager to run it")
    assert r.llen(working) == 0 and second.stats()["processed"] == 1


def test_a_script_that_ends_without_stop_requeues_its_running_job(child, r, client):
    r.set("hold", 1)
    client.push({"class": managerjobs.Held, "args": ["cut", 30]})
    (raw,) = r.lrange("queue:default", 0, -1)
    proc, identity = child("exit")
    assert proc.wait(20) == 0
    assert r.lrange("queue:default", 0, -1) == [raw] and r.keys("working:*") == []
    assert identity not in registered(r)


def test_a_child_forked_after_start_leaves_the_manager_alone(managers, r, client):
    m = managers(concurrency=1)
    pid = os.fork()
    if pid == 0:
        try:
            m.stop(timeout=0)  # not its Manager: nothing happens
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert m.identity in registered(r)
    client.push({"class": testjobs.Record, "args": ["after fork"]})
    wait_for(lambda: r.lrange("done", 0, -1) == [b"after fork"], message="the Manager to go on")


def test_redis_url_none_is_the_configured_clients_then_the_environment(redis_server, r, monkeypatch):
    monkeypatch.delenv("REDIS_PROVIDER", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/3")
    sidepunch.configure(redis_url=redis_server.url)
    assert sidepunch.Manager().config.redis_url == redis_server.url
    sidepunch.configure()
    assert sidepunch.Manager().config.redis_url == "redis://from-env:6379/3"
    sidepunch.configure(redis=r)  # a client object: its URL is not known, the environment's rules apply
    assert sidepunch.Manager().config.redis_url == "redis://from-env:6379/3"


def test_settings_are_the_daemons_with_their_defaults():
    m = sidepunch.Manager(concurrency=3, queues=("critical,2", "default"), redis_url="redis://x:1/0", job_timeout=9)
    config = m.config
    assert config.threads == 3 and config.workers == 1 and config.job_timeout == 9 and config.timeout == 25
    assert [(q.name, q.weight) for q in config.queues] == [("critical", 2), ("default", 0)]


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0}, "Manager concurrency: must be at least 1, got 0 (allowed: 1 to 1,000)"),
    ({"concurrency": True}, "Manager concurrency: expected a whole number, got a boolean True"),
    ({"concurrency": "5"}, "Manager concurrency: expected a whole number, got a string '5'"),
    ({"queues": []}, "Manager queues: names no queue; give at least one"),
    ({"queues": ["a", "a"]}, "Manager queues: queue 'a' is named twice"),
    ({"queues": [5]}, "Manager queues: expected a string NAME or NAME,WEIGHT or a list of them, got an integer 5"),
    ({"queues": [" "]}, "Manager queues: queue '' is empty"),
    ({"queues": ["x,1001"]}, "Manager queues: queue weight must be at most 1000"),
    ({"redis_url": 6379}, "Manager redis_url: expected a string or None, got 6379"),
    ({"redis_url": "redis://:s3cret@host:port/0"}, "Manager redis_url: bad Redis URL"),
    ({"workers": 2}, "Manager: unknown or daemon-only option(s) 'workers'"),
    ({"colour": "red"}, "Manager: unknown or daemon-only option(s) 'colour'"),
    ({"timeout": -1}, "Manager timeout: must be at least 0"),
    ({"job_timeout": float("nan")}, "Manager job_timeout: must be a finite number"),
    ({"fetch": "fast"}, "Manager fetch: must be one of reliable, basic, got 'fast'"),
])
def test_bad_arguments_raise_one_line(kwargs, message):
    kwargs.setdefault("redis_url", "redis://localhost:6379/0")
    with pytest.raises(ValueError) as caught:
        sidepunch.Manager(**kwargs)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text and "s3cret" not in text


@pytest.mark.parametrize("timeout", [-1, float("inf"), "5", True])
def test_a_bad_stop_timeout_raises_and_stops_nothing(managers, r, timeout):
    m = managers(concurrency=1)
    with pytest.raises(ValueError, match="^Manager.stop timeout: "):
        m.stop(timeout=timeout)
    assert m.identity in registered(r)


def test_importing_sidepunch_and_enqueueing_loads_no_server_code(redis_server):
    code = textwrap.dedent(f"""
        import sys, sidepunch
        from sidepunch import *
        sidepunch.configure(redis_url={redis_server.url!r})
        sidepunch.default_client().push({{"class": "Anything", "args": [1]}})
        assert not [m for m in sys.modules if m.startswith("sidepunch.server")], sorted(sys.modules)
        assert "Manager" not in dir() and sidepunch.Manager.__module__ == "sidepunch.server.manager"
        try:
            sidepunch.Nothing
        except AttributeError:
            print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.stdout == "ok\n", result.stderr


def manager_threads(m):
    parts = m._parts
    return [m._supervisor, m._sweeper.thread, parts.heartbeat._thread, parts.poller._thread, parts.cancels._thread,
            *(p.thread for p in parts.pool.processors)]


def test_stats_of_hostile_keys_count_them_as_empty(managers, r):
    m = managers(start=False)
    r.sadd("queues", "weird", b"\xff\xfe")
    r.set("queue:weird", "not a list")
    r.set("retry", "not a zset")
    stats = m.stats()
    assert stats["queues"] == {"default": 0, "weird": 0, b"\xff\xfe".decode("utf-8", "surrogateescape"): 0}
    assert stats["retries"] == 0
    json.dumps({k: v for k, v in stats.items() if k != "queues"})


def test_a_hostile_remote_signal_does_not_fail_a_beat(managers, r, client):
    m = managers(concurrency=1)
    client.push({"class": testjobs.Record, "args": ["counted"]})
    wait_for(lambda: m.stats()["processed"] == 1, message="the job")
    r.lpush(keys.signals(m.identity), b"\xff\xfeTERM")
    assert m._parts.heartbeat.beat() and not m.state.stopping  # ignored, logged
    assert r.get(keys.STAT_PROCESSED) == b"1" and not r.exists(keys.signals(m.identity))
