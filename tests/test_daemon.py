"""The real sidepunchd: forks, signals, crashes. Every test's processes are killed by the fixture."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import sidepunch
from sidepunch.embedded import free_port
from conftest import APPS, ROOT, wait_for

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402


def push_many(client, job, values, **extra):
    return client.push_bulk({"class": job, "args": [[v, *extra.get("more", [])] for v in values],
                             **{k: v for k, v in extra.items() if k != "more"}})


def stopped_cleanly(d, children):
    assert d.wait(60) == 0
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 10,
             message="workers to exit")


def test_runs_every_job_exactly_once(daemon, r, client):
    values = [str(i) for i in range(1500)]
    push_many(client, testjobs.Record, values)
    d = daemon("--workers", "2", "--threads", "5", "-r", "testjobs")
    children = d.wait_children(2)
    wait_for(lambda: r.llen("done") >= 1500, 60, message="1500 jobs")
    time.sleep(0.5)
    done = [v.decode() for v in r.lrange("done", 0, -1)]
    assert sorted(done) == sorted(values) and len(done) == len(set(done))
    d.signal(signal.SIGTERM)
    stopped_cleanly(d, children)
    assert int(r.get("stat:processed")) == 1500 and int(r.get("stat:failed") or 0) == 0
    assert r.keys("working:*") == [] and r.scard("processes") == 0


def test_heartbeat_writes_sidekiq_process_record(daemon, r, client):
    d = daemon("--workers", "2", "--threads", "3", "-q", "critical", "-q", "default", "-r", "testjobs", "-g", "web")
    d.wait_children(2)
    wait_for(lambda: r.scard("processes") == 2, 10, message="two registered processes")
    pids = {c.pid for c in d.children()}
    for identity in r.smembers("processes"):
        record = r.hgetall(identity)
        info = json.loads(record[b"info"])
        assert list(info) == ["hostname", "started_at", "pid", "tag", "concurrency", "queues", "labels", "identity"]
        assert info["pid"] in pids and info["concurrency"] == 3 and info["tag"] == "web"
        assert info["queues"] == ["critical", "default"] and info["identity"] == identity.decode()
        assert record[b"quiet"] == b"false" and int(record[b"busy"]) == 0 and int(record[b"rss"]) > 1000
        assert 0 < r.ttl(identity) <= 60
    client.push({"class": testjobs.Sleep, "args": ["s", 8]})
    wait_for(lambda: any(r.exists(i + b":workers") for i in r.smembers("processes")), 12,
             message="a workers hash")
    (identity,) = [i for i in r.smembers("processes") if r.exists(i + b":workers")]
    (work,) = [json.loads(v) for v in r.hgetall(identity + b":workers").values()]
    assert work["queue"] == "default" and json.loads(work["payload"])["class"] == "testjobs.Sleep"
    assert isinstance(work["run_at"], int)


def test_proctitles_show_state(daemon, r):
    d = daemon("--workers", "2", "--threads", "4", "-q", "critical", "-q", "default", "-r", "testjobs")
    d.wait_children(2)
    wait_for(lambda: "sidepunchd master [2 workers] queues=critical,default" in " ".join(
        psutil.Process(d.pid).cmdline()), 5, message="master title")
    titles = wait_for(lambda: sorted(" ".join(c.cmdline()).strip() for c in d.children())
                      if all("busy" in " ".join(c.cmdline()) for c in d.children()) else None, 5)
    assert titles == ["sidepunch worker 1 [0 of 4 busy]", "sidepunch worker 2 [0 of 4 busy]"]
    d.signal(signal.SIGUSR1)
    wait_for(lambda: all(" ".join(c.cmdline()).strip().endswith("quiet") for c in d.children()), 5,
             message="quiet titles")


def test_term_waits_for_running_jobs(daemon, r, client):
    push_many(client, testjobs.Sleep, ["a", "b", "c"], more=[1.5])
    d = daemon("--workers", "1", "--threads", "5", "-r", "testjobs")
    children = d.wait_children(1)
    wait_for(lambda: r.llen("started") == 3, 10, message="jobs to start")
    d.signal(signal.SIGTERM)
    stopped_cleanly(d, children)
    assert sorted(r.lrange("done", 0, -1)) == [b"a", b"b", b"c"]
    assert r.llen("queue:default") == 0 and r.keys("working:*") == []


@pytest.mark.parametrize("fetch", ["reliable", "basic"])
def test_term_requeues_jobs_still_running_at_the_deadline(daemon, r, client, fetch):
    client.push({"class": testjobs.Noop, "args": ["younger"]})
    jid = client.push({"class": testjobs.Sleep, "args": ["long", 60]})
    r.rpush("queue:default", r.lpop("queue:default"))  # the sleeper is popped first, the no-op stays queued
    d = daemon("--workers", "1", "--threads", "1", "--timeout", "1", "--fetch", fetch, "-r", "testjobs")
    children = d.wait_children(1)
    wait_for(lambda: r.llen("started") == 1, 10, message="the long job to start")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    stopped_cleanly(d, children)
    assert time.monotonic() - started < 10
    head = json.loads(r.lindex("queue:default", -1))
    assert head["jid"] == jid and r.llen("queue:default") == 2  # back at the head, ahead of the no-op
    assert r.keys("working:*") == [] and r.llen("done") == 0


def test_quit_requeues_at_once(daemon, r, client):
    jid = client.push({"class": testjobs.Sleep, "args": ["long", 60]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    children = d.wait_children(1)
    wait_for(lambda: r.llen("started") == 1, 10, message="the long job to start")
    started = time.monotonic()
    d.signal(signal.SIGQUIT)
    stopped_cleanly(d, children)
    assert time.monotonic() - started < 9
    assert json.loads(r.lindex("queue:default", -1))["jid"] == jid and r.keys("working:*") == []


@pytest.mark.parametrize("quiet_signal", [signal.SIGUSR1, signal.SIGTSTP])
def test_quiet_stops_fetching_and_cont_resumes(daemon, r, client, quiet_signal):
    client.push({"class": testjobs.Sleep, "args": ["running", 2]})
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    d.wait_children(2)
    wait_for(lambda: r.llen("started") == 1, 10, message="a job to start")
    d.signal(quiet_signal)
    wait_for(lambda: d.log().count("quiet: no new jobs") >= 2, 5, message="both workers to go quiet")
    # Idle fetchers return from their 2 s blocking wait (the one thread running a job is not blocked).
    wait_for(lambda: r.info("clients")["blocked_clients"] == 0, 5, message="no fetcher blocked in Redis")
    push_many(client, testjobs.Record, ["x", "y"])
    wait_for(lambda: r.lrange("done", 0, -1) == [b"running"], 5, message="the running job to finish")
    time.sleep(1.5)
    assert r.llen("queue:default") == 2
    wait_for(lambda: all(r.hget(i, "quiet") == b"true" for i in r.smembers("processes")), 8,
             message="heartbeat to report quiet")
    d.signal(signal.SIGCONT)
    wait_for(lambda: r.llen("done") == 3, 10, message="jobs to run after CONT")


def test_ttin_logs_every_thread_with_its_job(daemon, r, client):
    client.push({"class": testjobs.Sleep, "args": ["dumped", 30]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    d.wait_children(1)
    wait_for(lambda: r.llen("started") == 1, 10, message="a job to start")
    d.signal(signal.SIGTTIN)
    d.wait_log("thread dump", 5)
    wait_for(lambda: "testjobs.Sleep" in d.log() and "in perform" in d.log(), 5, message="the job's stack")
    log = d.log()
    assert "master" in log and "Thread heartbeat" in log and "Thread processor-0" in log


def test_sigkilled_worker_is_replaced_and_its_job_rerun(daemon, r, client):
    client.push({"class": testjobs.Pid, "args": ["v", 3]})
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    d.wait_children(2)
    first = wait_for(lambda: r.lrange("pids", 0, -1), 10, message="the job to start")
    victim = int(first[0].decode().split(":")[1])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(d.children()) == 2 and victim not in {c.pid for c in d.children()}, 10,
             message="a replacement worker")
    wait_for(lambda: r.llen("done") == 1, 15, message="the job to run again")
    runs = [p.decode() for p in r.lrange("pids", 0, -1)]
    assert len(runs) == 2 and runs[1] != runs[0]
    assert "killed by SIGKILL" in d.log() and "requeued 1 job(s)" in d.log()


def test_worker_that_keeps_crashing_backs_off_and_poison_pill_dies(daemon, r, client):
    client.push({"class": testjobs.KillMyWorker, "args": ["pill"]})
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--max-interruptions", "3")
    d.wait_children(1)
    wait_for(lambda: r.zcard("dead") == 1, 30, message="the poison pill in the dead set")
    assert r.llen("started") == 3
    job = json.loads(r.zrange("dead", 0, 0)[0])
    assert job["interrupted_count"] == 3 and "died 3 times" in job["error_message"]
    assert "restarting in" in d.log()
    client.push({"class": testjobs.Record, "args": ["after"]})
    wait_for(lambda: r.lrange("done", 0, -1) == [b"after"], 15, message="work to go on")


def test_children_exit_when_the_master_is_killed(daemon, r):
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    children = d.wait_children(2)
    os.kill(d.pid, signal.SIGKILL)
    d.wait(5)
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 5,
             message="orphaned workers to exit")


def test_boot_error_stops_the_master_with_one_clear_line(daemon, r):
    d = daemon("--workers", "2", "-r", "broken_app")
    assert d.wait(30) == 3
    log = d.log()
    assert "cannot load the app: ModuleNotFoundError: No module named 'this_module_does_not_exist'" in log
    assert "Traceback" not in log
    assert log.count("cannot load the app") <= 2  # one per worker that tried, no fork loop


def test_unreachable_redis_one_line_then_retry(daemon, r):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    d = daemon("--workers", "1", "-r", "testjobs", "--redis-url", url)
    d.wait_log("cannot reach Redis")
    time.sleep(3)  # it keeps retrying: still no second line
    assert d.proc.poll() is None
    log = d.log()
    assert log.count("cannot reach Redis") == 1 and "redis://:***@127.0.0.1" in log
    assert "hunter2" not in log and "Traceback" not in log
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0


def test_bad_flags_exit_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "sidepunch.server.cli", "--threads", "lots"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--threads" in proc.stderr and "Traceback" not in proc.stderr


def test_scheduled_and_retried_jobs_run(daemon, r, client):
    client.push({"class": testjobs.Record, "args": ["scheduled"], "at": time.time() + 1})
    r.zadd("retry", {json.dumps({"class": "testjobs.Record", "args": ["retried"], "queue": "default",
                                 "retry": True, "retry_count": 0, "jid": "r" * 24}): time.time()})
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--poll-interval", "0.5")
    d.wait_children(1)
    wait_for(lambda: sorted(r.lrange("done", 0, -1)) == [b"retried", b"scheduled"], 15,
             message="scheduled and retried jobs")


def test_remote_quiet_and_stop_through_signals_list(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs")
    d.wait_children(1)
    identity = wait_for(lambda: next(iter(r.smembers("processes")), None), 10, message="a process")
    r.lpush(identity + b"-signals", "TSTP")
    wait_for(lambda: r.hget(identity, "quiet") == b"true", 15, message="remote quiet")
    r.lpush(identity + b"-signals", "TERM")
    assert d.wait(30) == 0


def test_death_handlers_and_server_middleware_from_flags(daemon, r, client):
    dead_jid = client.push({"class": testjobs.DiesAtOnce, "args": []})
    ok_jid = client.push({"class": testjobs.Record, "args": ["ok"], "queue": "default"})
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--death-handler", "testjobs.record_death",
               "--middleware", "testjobs.timing_middleware")
    wait_for(lambda: r.lrange("deaths", 0, -1) == [f"{dead_jid} LookupError".encode()], 15,
             message="the death handler")
    wait_for(lambda: f"after {ok_jid}".encode() in r.lrange("middleware", 0, -1), 15, message="the middleware")
    assert b"before testjobs.Record default" in r.lrange("middleware", 0, -1) and r.zcard("dead") == 1


def test_each_worker_closes_its_middleware_once_when_it_stops(daemon, r, client):
    client.push({"class": testjobs.Record, "args": ["ok"]})
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs", "--middleware", "testjobs.Flushing")
    wait_for(lambda: r.lrange("done", 0, -1) == [b"ok"], 15, message="the job")
    pids = {c.pid for c in d.wait_children(2)}
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    closed = [int(p) for p in r.lrange("closed", 0, -1)]
    assert sorted(closed) == sorted(pids)  # once per worker, by the worker itself


def test_unloadable_death_handler_is_a_boot_error(daemon, r):
    d = daemon("--workers", "1", "-r", "testjobs", "--death-handler", "testjobs.no_such_function")
    assert d.wait(30) == 3
    assert "testjobs.no_such_function is not a function in module testjobs" in d.log()


def test_daemon_warns_about_jobs_on_queues_it_does_not_fetch(daemon, r, client):
    client.push({"class": testjobs.Record, "args": ["x"], "queue": "mail"})
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs")
    d.wait_log("queue 'mail' has 1 job(s) but this daemon does not fetch from it (add -q mail)", 15)


def test_embedded_redis_command_runs_until_interrupted(tmp_path):
    from sidepunch.embedded import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sidepunch.embedded", "--port", str(port)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert f"redis://127.0.0.1:{port}/0" in first
        import redis as redis_lib
        assert redis_lib.Redis(port=port).ping()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        with pytest.raises(redis_lib.ConnectionError):
            redis_lib.Redis(port=port, socket_connect_timeout=1).ping()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_switch_interval_is_set_in_every_worker_and_nowhere_else(daemon, r, client):
    """--switch-interval (milliseconds) becomes each worker's sys.setswitchinterval; the default is 5 ms."""
    before = sys.getswitchinterval()
    for args, expected in ((("--switch-interval", "40"), 0.04), ((), 0.005)):
        r.delete("switch")
        client.push({"class": testjobs.SwitchInterval, "args": []})
        d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", *args)
        wait_for(lambda: r.llen("switch") >= 1, 30, message="the job to run")
        assert float(r.lpop("switch")) == pytest.approx(expected)
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    assert sys.getswitchinterval() == before  # parsing settings does not touch the calling process
