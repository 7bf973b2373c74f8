"""Review of the spawner (the master imports no redis-py; spawner.py, spawnlink.py): attacks on it.

Defects found (each test failed on main 7b0e6d0): a --redis-url redis-py rejects only when it builds a
connection (bad ssl_cert_reqs, protocol) is a bad setting (exit 2, one line), and the URL check in a child fails
closed; something not Redis at the URL at boot is one outage line, not one line per attempt for ever; an exit
the master (a subreaper) reaped before the spawner forked a process is not that process's (pid reuse); a
process killed while it waits for its go byte is no spawner failure.
Sound on main, kept as regression tests: the spawner SIGKILLed with a fork in flight (before its answer, before
the go byte); a worker spawned during quiet; TERM while a worker is being spawned.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from types import SimpleNamespace
import subprocess
import sys

import psutil
import pytest

from conftest import APPS, ROOT, wait_for
from sidepunch.core import connection
from sidepunch.server import spawnlink
from sidepunch.server.master import Master
from sidepunch.server.spawner import Spawner, check_url_apart

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402

BUILD_TIME_ERRORS = ["rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus", "redis://127.0.0.1:1/0?protocol=9",
                     "redis://:s3cretpw@127.0.0.1:1/0?protocol=0"]


@pytest.mark.parametrize("url", BUILD_TIME_ERRORS)
def test_a_url_redis_py_rejects_at_connection_build_exits_2_with_one_line(url):
    env = {**os.environ, "PYTHONPATH": ":".join([str(APPS), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "sidepunch.server.cli", "--redis-url", url, "-r", "testjobs"],
                          capture_output=True, text=True, timeout=30, env=env, cwd=str(ROOT))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sidepunchd: error: bad Redis URL"), lines
    assert "s3cretpw" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("url", BUILD_TIME_ERRORS)
def test_check_url_says_bad_setting_for_build_time_errors(url):
    with pytest.raises(ValueError, match="^bad Redis URL"):
        connection.check_url(url)


def test_check_url_apart_fails_closed_when_its_child_dies(monkeypatch):
    """The child imports check_url from core.connection: a child that crashes (or is killed) in it says nothing."""
    def die(url):
        os._exit(3)
    monkeypatch.setattr(connection, "check_url", die)
    with pytest.raises(ValueError, match="could not be checked"):
        check_url_apart("redis://:hunter22@127.0.0.1:6379/0")
    try:
        check_url_apart("redis://:hunter22@127.0.0.1:6379/0")
    except ValueError as exc:
        assert "hunter22" not in str(exc)


def test_check_url_apart_still_passes_a_good_url_and_names_a_bad_one():
    check_url_apart("redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="^bad Redis URL"):
        check_url_apart("redis://127.0.0.1:notaport/0")


def _not_redis(listener):
    """Answers every connection as an HTTP server would, until the listener is closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            except OSError:
                pass


def test_something_not_redis_at_the_url_at_boot_logs_one_line_not_one_per_attempt(daemon, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_not_redis, args=(listener,), daemon=True)
    thread.start()
    try:
        d = daemon("--workers", "1", "-r", "testjobs", url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        d.wait_log("InvalidResponse", timeout=20)
        time.sleep(9)  # the master asks the spawner again every few seconds
        assert d.proc.poll() is None and d.log().count("InvalidResponse") == 1, d.log()
        d.signal(signal.SIGTERM)
        assert d.wait(20) == 0
    finally:
        listener.close()


def _bare_master():
    config = SimpleNamespace(max_interruptions=3, dead_max_jobs=10, dead_timeout=60, queues=[], workers=1,
                             threads=1, timeout=1, grace=1, fetch="reliable", worker_timeout=60, max_memory=0)
    recovered = []
    master = Master(config)
    master.spawner = spawnlink.SpawnerLink(config, (-1, -1), (-1, -1))
    master.observer, master.recoverer = None, SimpleNamespace(owns=lambda pid: False, recover=recovered.append)
    return master, recovered


def test_an_exit_reaped_before_the_fork_is_not_the_new_workers_even_with_the_same_pid(monkeypatch):
    """The master is a subreaper: it reaps orphans (a job's subprocess) and, with pids wrapping, a pid it saw
    exit can be the pid the spawner's next worker gets. That old exit must not retire the live worker (its
    jobs would be "recovered" while it runs them, and its later death would recover nothing)."""
    master, recovered = _bare_master()
    pid = 4242425
    master._exited(pid, 0)  # an orphan of a job, reaped
    assert pid in master.spawner.early
    status_r, status_w = os.pipe()
    answer = {"spawned": "worker", "pid": pid, "number": 1, "nonce": "n1", "generation": 0, "quiet": False,
              "forked_at": time.monotonic()}   # forked after that exit
    monkeypatch.setattr(master.spawner, "answers", lambda: [(answer, [status_r])])
    try:
        master._hear_spawner()
        assert pid in master.children and not recovered
    finally:
        os.close(status_w)
        for record in master.children.values():
            os.close(record.status_fd)


def test_the_spawner_stamps_each_pid_with_its_fork_time():
    """What the test above relies on: the answer carries the fork time (CLOCK_MONOTONIC is system-wide)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_fd, write_fd = os.pipe()
    config = SimpleNamespace()
    spawner = Spawner(config, theirs, (read_fd, -1), (read_fd, -1))
    before = time.monotonic()
    pid, go = spawner._fork(lambda: os._exit(0), "sidepunch test child", close=())
    try:
        assert spawner.forked_at >= before
    finally:
        Spawner._release(go, False)  # it exits unstarted
        for fd in (read_fd, write_fd):
            os.close(fd)
        ours.close()
        theirs.close()


HOLD_BEFORE_ANSWER = (
    "from sidepunch.server import spawner\n_send = spawner._send\n"
    "def send(sock, message, fds=()):\n"
    "    if message.get('spawned') == 'worker' and not os.path.exists(FLAG):\n"
    "        open(FLAG, 'w').write(str(message['pid']))\n"
    "        time.sleep(60)\n"
    "    return _send(sock, message, fds)\n"
    "spawner._send = send\n")
HOLD_BEFORE_GO = (
    "from sidepunch.server import spawner\n_release = spawner.Spawner._release\n"
    "def release(go_w, go):\n"
    "    if go and not os.path.exists(FLAG):\n"
    "        open(FLAG, 'w').write('held')\n"
    "        time.sleep(60)\n"
    "    return _release(go_w, go)\n"
    "spawner.Spawner._release = staticmethod(release)\n")


def _workers(d):
    try:
        kids = psutil.Process(d.pid).children()
    except psutil.Error:
        return []
    return [p for p in kids if _title(p).startswith("sidepunch worker") and "[starting]" not in _title(p)]


def _title(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("hook", [HOLD_BEFORE_ANSWER, HOLD_BEFORE_GO], ids=["before-answer", "before-go"])
def test_spawner_killed_with_a_fork_in_flight_strands_no_process_and_loses_no_job(daemon, r, client, tmp_path, hook):
    flag = tmp_path / "flag"
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(f"import os, time\nFLAG = {str(flag)!r}\n" + hook)
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs",
               env={"PYTHONPATH": ":".join([str(tmp_path / "hook"), str(APPS), str(ROOT)])})
    wait_for(flag.exists, 30, message="a fork held in flight")
    time.sleep(0.2)
    spawner = [p for p in psutil.Process(d.pid).children() if _title(p).startswith("sidepunchd spawner")]
    held = [p for p in psutil.Process(d.pid).children() if "[starting]" in _title(p)]
    assert len(spawner) == 1 and held, [_title(p) for p in psutil.Process(d.pid).children()]
    spawner[0].kill()
    wait_for(lambda: len(_workers(d)) == 2, 30, message="two running workers")
    for p in held:  # the held process never ran: gone, and reaped (the master is its parent)
        wait_for(lambda: not p.is_running(), 10, message=f"held process {p.pid} gone (exited and reaped)")
    client.push_bulk({"class": testjobs.Record, "args": [[f"h{i}"] for i in range(20)]})
    wait_for(lambda: r.llen("done") == 20, 30, message="every job to run")
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    assert r.keys("working:*") == [] and r.llen("queue:default") == 0


def test_a_worker_spawned_during_quiet_is_quiet_and_cont_reaches_it(daemon, r, client):
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    first = {p.pid for p in d.wait_children(2, timeout=30)}
    wait_for(lambda: r.scard("processes") == 2, 15, message="both workers registered")
    d.signal(signal.SIGUSR1)
    wait_for(lambda: d.log().count("quiet: no new jobs") >= 2, 10, message="both workers to go quiet")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)  # its replacement comes from the spawner, after the quiet
    wait_for(lambda: len(_workers(d)) == 2 and victim not in {p.pid for p in _workers(d)}, 20,
             message="a replacement worker")
    wait_for(lambda: r.scard("processes") == 2
             and all(r.hget(i, "quiet") == b"true" for i in r.smembers("processes")), 15,
             message="the replacement to report quiet")
    client.push_bulk({"class": testjobs.Record, "args": [[f"q{i}"] for i in range(6)]})
    time.sleep(3)
    assert r.llen("queue:default") == 6 and r.llen("done") == 0
    d.signal(signal.SIGCONT)
    wait_for(lambda: r.llen("done") == 6, 15, message="jobs to run after CONT")
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    assert r.keys("working:*") == []


def test_a_process_killed_before_its_go_byte_is_no_spawner_failure():
    """The OOM killer (or an operator) can kill a forked process while it waits for "go": the master has its pid
    and reaps it; the spawner must not log a failure and send a spurious "failed" answer for it."""
    go_r, go_w = os.pipe()
    os.close(go_r)  # the waiting process is gone
    Spawner._release(go_w, True)
    with pytest.raises(OSError):
        os.fstat(go_w)  # and the write end is closed all the same


def test_term_while_a_worker_is_being_spawned_stops_it_too(daemon, r, client, tmp_path):
    """The spawner holds its answer (the worker's pid) for 3 s; TERM comes meanwhile: the master waits for the
    pid, stops that worker as well, and exits 0 with nothing left running and no job stranded."""
    flag = tmp_path / "flag"
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(
        f"import os, time\nFLAG = {str(flag)!r}\n" + HOLD_BEFORE_ANSWER.replace("time.sleep(60)", "time.sleep(3)"))
    client.push_bulk({"class": testjobs.Record, "args": [[f"t{i}"] for i in range(5)]})
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs",
               env={"PYTHONPATH": ":".join([str(tmp_path / "hook"), str(APPS), str(ROOT)])})
    wait_for(flag.exists, 30, message="a fork held in flight")
    held = int(wait_for(lambda: flag.read_text(), 5, message="the held pid"))
    everyone = psutil.Process(d.pid).children()
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    wait_for(lambda: not psutil.pid_exists(held) or psutil.Process(held).status() == psutil.STATUS_ZOMBIE, 10,
             message="the held worker to exit")
    assert not [p.pid for p in everyone if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert r.keys("working:*") == [] and r.llen("queue:default") + r.llen("done") == 5


def test_a_worker_answer_without_its_descriptor_gets_a_closed_status_pipe():
    """The kernel may drop the SCM_RIGHTS descriptor (master out of descriptors): the worker is still adopted, on a
    pipe at end of file, which the master treats as a lost status pipe (retire, recover its jobs at exit)."""
    import os
    from sidepunch.server.spawnlink import status_end
    r, w = os.pipe()
    try:
        assert status_end([r]) == r
    finally:
        os.close(r)
        os.close(w)
    fd = status_end([])
    try:
        assert os.read(fd, 16) == b""
    finally:
        os.close(fd)
