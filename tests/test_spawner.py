"""The master imports no redis-py: its spawner process (server/spawner.py, spawnlink.py) holds redis-py and the
worker code, runs the start-up Redis check, and forks workers and the recoverer as the master's own children.

Checked here: the master's import list and its mapped libraries hold no redis-py, asyncio or ssl; the workers
and the recoverer are the master's children; a killed spawner is restarted with one log line and loses or
orphans no worker; a process that exits before its pid reaches the master is still reaped as that worker; the
direct fallback (no subreaper) runs jobs too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil

from conftest import APPS, ROOT, wait_for
from test_spawner_review import _bare_master

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402

HEAVY = ("redis", "asyncio", "ssl", "hiredis", "sidepunch.core.connection", "sidepunch.server.launcher",
         "sidepunch.server.recoverer", "sidepunch.server.recovery")


def test_the_master_code_path_imports_no_redis():
    """What `sidepunchd` imports before and while it runs the master (not the spawner's lazy imports)."""
    code = ("import sys; import sidepunch.server.cli, sidepunch.server.master, sidepunch.server.spawnlink; "
            "import json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(ROOT)).stdout
    loaded = json.loads(out)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY]


def title(process):
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone (a killed spawner, once the master has reaped it)
        return ""


def spawner_of(d):
    found = [p for p in psutil.Process(d.pid).children() if title(p).startswith("sidepunchd spawner")]
    return found[0] if len(found) == 1 else None


def test_running_master_maps_no_redis_and_its_workers_are_its_children(daemon, r, client):
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    workers = d.wait_children(2, timeout=30)
    wait_for(lambda: r.scard("processes") == 2, 15, message="both workers registered")
    maps = open(f"/proc/{d.pid}/maps").read()
    assert "_ssl" not in maps and "_asyncio" not in maps and "hiredis" not in maps
    spawner = wait_for(lambda: spawner_of(d), 10, message="the spawner")
    assert "_ssl" in open(f"/proc/{spawner.pid}/maps").read()  # what it holds, for its children to share
    assert all(w.ppid() == d.pid for w in workers)
    client.push_bulk({"class": testjobs.Record, "args": [[f"j{i}"] for i in range(20)]})
    wait_for(lambda: r.llen("done") == 20, 20, message="the jobs to run")
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0


def test_a_killed_spawner_is_restarted_and_no_worker_is_lost(daemon, r, client):
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs")
    workers = {p.pid for p in d.wait_children(2, timeout=30)}
    old = wait_for(lambda: spawner_of(d), 10, message="the spawner")
    old.kill()
    d.wait_log("the spawner process exited (signal SIGKILL); starting another")
    new = wait_for(lambda: (lambda s: s if s is not None and s.pid != old.pid else None)(spawner_of(d)), 15,
                   message="a new spawner")
    assert {p.pid for p in d.children()} == workers and all(psutil.Process(w).ppid() == d.pid for w in workers)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)  # its replacement comes from the new spawner
    wait_for(lambda: len(d.children()) == 2 and victim not in {p.pid for p in d.children()}, 20,
             message="a replacement worker")
    client.push_bulk({"class": testjobs.Record, "args": [[f"k{i}"] for i in range(30)]})
    wait_for(lambda: r.llen("done") == 30, 30, message="every job to run")
    assert d.log().count("the spawner process exited") == 1 and new.is_running()
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    assert r.keys("working:*") == [] and r.llen("queue:default") == 0


def test_the_direct_fallback_without_a_subreaper_runs_jobs(daemon, r, client, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "from sidepunch.server import spawnlink\nspawnlink.become_subreaper = lambda: False\n")
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs",
               env={"PYTHONPATH": ":".join([str(hook), str(APPS), str(ROOT)])})
    d.wait_children(2, timeout=30)
    assert spawner_of(d) is None
    client.push_bulk({"class": testjobs.Record, "args": [[f"d{i}"] for i in range(20)]})
    wait_for(lambda: r.llen("done") == 20, 20, message="the jobs to run")
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
    assert r.keys("working:*") == []


def test_a_worker_that_exits_before_its_pid_arrives_is_reaped_as_that_worker(monkeypatch, caplog):
    """The spawner's answer can come after the worker's exit was reaped: the exit waits for it."""
    master, recovered = _bare_master()
    status_r, status_w = os.pipe()
    os.close(status_w)
    pid = 4242424
    master._exited(pid, 1 << 8)  # exit status 1, of a pid not yet heard of
    assert pid in master.spawner.early and not master.children
    answer = {"spawned": "worker", "pid": pid, "number": 1, "nonce": "abc", "generation": 0, "quiet": False}
    monkeypatch.setattr(master.spawner, "answers", lambda: [(answer, [status_r])])
    caplog.set_level("INFO")
    master._hear_spawner()
    assert not master.children and pid not in master.spawner.early
    assert [(x.number, x.pid, x.interrupted) for x in recovered] == [(1, pid, True)]
    assert f"worker 1 (pid {pid}) exited with status 1" in caplog.text
    try:
        os.fstat(status_r)
        raise AssertionError("the status pipe was not closed")
    except OSError:
        pass



def test_a_spawner_that_cannot_start_is_retried_with_one_line_each_time(daemon, r, client, tmp_path):
    """The first two spawners crash before they answer (as a broken install would); the third one works. Redis
    is checked, and the workers started, only through a spawner that lives."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\nfrom sidepunch.server import spawner\n_run = spawner.Spawner.run\n"
        f"TRIES = {str(tmp_path / 'tries')!r}\n"
        "def run(self):\n"
        "    with open(TRIES, 'a') as fh:\n"
        "        fh.write('x')\n"
        "    if os.path.getsize(TRIES) <= 2:\n"
        "        raise RuntimeError('cannot start on purpose')\n"
        "    return _run(self)\n"
        "spawner.Spawner.run = run\n")
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs",
               env={"PYTHONPATH": ":".join([str(hook), str(APPS), str(ROOT)])})
    d.wait_children(2, timeout=30)
    client.push_bulk({"class": testjobs.Record, "args": [[f"s{i}"] for i in range(10)]})
    wait_for(lambda: r.llen("done") == 10, 20, message="the jobs to run")
    log = d.log()
    assert log.count("the spawner process exited (status 1); starting another") == 2
    assert log.count("RuntimeError: cannot start on purpose") == 2 and log.count("master") >= 1
    d.signal(signal.SIGTERM)
    assert d.wait(40) == 0
