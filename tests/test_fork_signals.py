"""Signals sent to a worker in the instant after fork(), before it installed its own handlers, are not lost.

The master blocks its signals across fork() and the worker unblocks them once its handlers are in place
(server/children.py). To hit that instant every time, the daemon runs with a sitecustomize that makes each new
worker wait a moment before `Launcher.run` (i.e. before it installs anything); the test TERMs each new worker as
soon as it appears among the master's children. Without the mask, the master's own handler, copied by fork(),
takes the TERM into the master's copied state and the worker runs on, deaf to it. Also: the mask itself, in a
plain fork, and the master's reading of its workers' status lines (children.py).
"""
import os
import re
import signal
import sys
import time

import psutil

from conftest import APPS, ROOT, wait_for
from sidepunch.server.children import MASTER_SIGNALS, ChildRecord, fork, unblock_after_fork

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402

BOOT_DELAY = 1.0
ROUNDS = 5

HOOK = """
import os, signal, time
from sidepunch.server import launcher

_run = launcher.Launcher.run

def run(self):
    time.sleep(BOOT_DELAY)  # still the master's handlers and, with the fix, its blocked mask
    if signal.SIGTERM in signal.sigpending():  # the TERM came in the window and waits for our handlers
        open(os.path.join(HITS, str(os.getpid())), "w").close()
    _run(self)

launcher.Launcher.run = run
"""


def children_of(pid):
    try:
        return {p.pid for p in psutil.Process(pid).children()}
    except psutil.NoSuchProcess:
        return set()


def term_the_next_new_child(master, known, timeout=20.0):
    """Poll the master's children fast; TERM the first one not in `known` the moment it shows up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = children_of(master) - known
        if fresh:
            pid = min(fresh)
            psutil.Process(pid).send_signal(signal.SIGTERM)
            return pid
        time.sleep(0.002)
    raise AssertionError("no new worker was forked")


def test_term_sent_right_after_fork_stops_the_worker_gracefully(daemon, r, client, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    hits = tmp_path / "hits"
    hits.mkdir()
    (hook / "sitecustomize.py").write_text(f"BOOT_DELAY = {BOOT_DELAY}\nHITS = {str(hits)!r}\n" + HOOK)
    tokens = [f"t{i}" for i in range(60)]
    client.push_bulk({"class": testjobs.Sleep, "args": [[t, 0.2] for t in tokens]})
    d = daemon("--workers", "2", "--threads", "2", "--timeout", "1", "-r", "testjobs",
               env={"PYTHONPATH": ":".join([str(hook), str(APPS), str(ROOT)])})
    d.wait_children(2, timeout=30)
    wait_for(lambda: r.scard("processes") == 2, 15, message="both workers booted and registered")
    wait_for(lambda: "recoverer" in " ".join(" ".join(p.cmdline()) for p in psutil.Process(d.pid).children()),
             10, message="the recoverer")
    known = children_of(d.pid)
    psutil.Process(min(d.children(), key=lambda p: p.pid).pid).send_signal(signal.SIGTERM)  # first replacement
    targets = []
    for _ in range(ROUNDS):
        pid = term_the_next_new_child(d.pid, known)
        known.add(pid)
        targets.append(pid)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 15,
                 message=f"worker {pid}, sent TERM right after its fork, to stop")
    assert sorted(int(p.name) for p in hits.iterdir()) == sorted(targets)  # each TERM landed in the window
    for pid in targets:
        d.wait_log(f"(pid {pid}) exited with status 0", 10)
        assert re.search(rf"^\S+ \S+ {pid} INFO sidepunch.child: worker \d+ stopping: finishing", d.log(), re.M)
        assert not re.search(rf"\(pid {pid}\) killed by", d.log())
    wait_for(lambda: set(tokens) <= {t.decode() for t in r.lrange("done", 0, -1)}, 60,
             message="every job to run (nothing lost to the stopped workers)")
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and r.llen("queue:default") == 0
    assert r.keys("working:*") == []


def test_fork_blocks_the_masters_signals_in_the_child_only_until_it_unblocks():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pid = fork()
    if pid == 0:  # the child: report through the exit status, touch nothing else
        blocked = set(MASTER_SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
        unblock_after_fork()
        cleared = not set(MASTER_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])
        os._exit(0 if blocked and cleared else 1)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the parent's mask is restored at once
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_child_record_hears_its_workers_lines_even_split_across_reads():
    record = ChildRecord(1, "abc", 0, 0.0, -1, "host:1:abc")
    assert record.hear(b"ready\nbeat 3 4", now=5.0) == []
    assert record.ready and record.last_beat == 5.0 and record.busy == 0
    assert record.hear(b"2\nretire over --max-jobs 10\n", now=6.0) == ["over --max-jobs 10"]
    assert (record.busy, record.processed, record.last_beat) == (3, 42, 6.0) and record.buffer == b""
