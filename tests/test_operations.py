"""Operations: sd_notify, rolling restart (HUP), recycling by memory and job count, job timeouts, stuck
workers, and logging. Real forks, real signals, a real unix datagram socket."""
import json
import os
import re
import signal
import socket
import sys
import threading
import time

import psutil
import redis

import sidepunch
import pytest

from conftest import APPS, ROOT, wait_for

sys.path.insert(0, str(APPS))
import testjobs  # noqa: E402


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; records (time, message) pairs."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            for line in data.split("\n"):
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix=""):
        return [m for _, m in self.messages if m.startswith(prefix)]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_sd_notify_ready_status_watchdog_reload_stopping(daemon, r, notify_socket):
    d = daemon("--workers", "2", "--threads", "2", "-r", "testjobs",
               env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000"})
    wait_for(lambda: notify_socket.lines("READY=1"), 15, message="READY=1")
    ready_at = next(t for t, m in notify_socket.messages if m == "READY=1")
    assert len(d.children()) == 2 and r.scard("processes") == 2  # every worker was up and registered
    time.sleep(3)
    pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1" and t > ready_at]
    assert len(pings) >= 4  # every 0.5 s (half of WATCHDOG_USEC)
    assert max(b - a for a, b in zip(pings, pings[1:])) < 1.0
    status = notify_socket.lines("STATUS=")[-1]
    assert re.match(r"STATUS=2 workers, \d+ of 4 threads busy, \d+ jobs processed", status)
    before = len(notify_socket.lines("READY=1"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(notify_socket.lines("READY=1")) > before, 20, message="READY=1 after the reload")
    order = [m for _, m in notify_socket.messages if m in ("READY=1", "RELOADING=1")]
    assert order[-2:] == ["RELOADING=1", "READY=1"]
    assert notify_socket.lines("MONOTONIC_USEC=")
    d.signal(signal.SIGSTOP)  # a wedged master sends nothing
    time.sleep(2)
    stalled_since = time.monotonic() - 1.5
    d.signal(signal.SIGCONT)
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0
    assert notify_socket.lines("STOPPING=1")
    assert not [t for t, m in notify_socket.messages if m == "WATCHDOG=1" and stalled_since < t < stalled_since + 1]


def test_watchdog_is_off_without_watchdog_usec(daemon, r, notify_socket):
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", env={"NOTIFY_SOCKET": notify_socket.path})
    wait_for(lambda: notify_socket.lines("READY=1"), 15, message="READY=1")
    time.sleep(1.5)
    assert not notify_socket.lines("WATCHDOG=1")
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0


def _write_app(path, version):
    path.write_text(f'''
import os
import sidepunch
VERSION = {version!r}

class Version(sidepunch.Job):
    def perform(self, value):
        sidepunch.default_client().redis.rpush("versions", f"{{VERSION}}:{{value}}:{{os.getpid()}}")
''')


def test_hup_reloads_code_without_dropping_capacity_or_jobs(daemon, r, client, tmp_path):
    app = tmp_path / "hupapp.py"
    _write_app(app, "v1")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(APPS), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    d = daemon("--workers", "2", "--threads", "3", "-r", "hupapp", "-r", "testjobs", env=env)
    d.wait_children(2)
    client.push({"class": "hupapp.Version", "args": ["a"]})
    wait_for(lambda: r.llen("versions") == 1, 10, message="the v1 job")
    values = [str(i) for i in range(1500)]
    client.push_bulk({"class": testjobs.Chaos, "args": [[v, 0.01] for v in values]})
    fewest = [2]
    sampling = threading.Event()

    def fetching_workers():
        count = 0
        for child in d.children():
            try:
                title = " ".join(child.cmdline())
            except psutil.Error:  # exited between listing and reading
                continue
            count += "worker" in title and "stopping" not in title
        return count

    def sample():
        while not sampling.is_set():
            fewest[0] = min(fewest[0], fetching_workers())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for version, value in (("v2", "b"), ("v3", "c")):
            old = {c.pid for c in d.children()}
            _write_app(app, version)
            d.signal(signal.SIGHUP)
            wait_for(lambda: len(d.children()) == 2 and not old & {c.pid for c in d.children()}, 40,
                     message="the old generation to retire")
            client.push({"class": "hupapp.Version", "args": [value]})
            wait_for(lambda: any(v.startswith(f"{version}:{value}:".encode()) for v in r.lrange("versions", 0, -1)),
                     10, message=f"the {version} code to run")
    finally:
        sampling.set()
        sampler.join()
    wait_for(lambda: len(set(r.lrange("done", 0, -1))) == len(values), 60, message="every job across the reloads")
    assert fewest[0] >= 2, "capacity dropped during the rolling restart"
    assert d.log().count("(replaced: reload (HUP))") == 4


def test_max_jobs_recycles_workers(daemon, r, client):
    client.push_bulk({"class": testjobs.Pid, "args": [[str(i)] for i in range(120)]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--max-jobs", "40")
    wait_for(lambda: r.llen("done") == 120, 60, message="all jobs")
    pids = {v.decode().split(":")[1] for v in r.lrange("pids", 0, -1)}
    assert len(pids) >= 3
    wait_for(lambda: "(replaced: processed" in d.log(), 10, message="the reason in the log")
    assert "--max-jobs 40" in d.log()


def test_max_memory_recycles_a_bloated_worker(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--max-memory", "120")
    (first,) = d.wait_children(1)
    client.push({"class": testjobs.Hog, "args": ["hog"]})
    wait_for(lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE, 40,
             message="the bloated worker to be replaced")
    d.wait_children(1)
    log = d.log()
    assert re.search(r"retiring worker 1 \(pid \d+\): RSS \d+ MB over --max-memory 120 MB", log)
    assert r.lrange("done", 0, -1) == [b"hog"]


def test_job_timeout_fails_the_job_and_replaces_its_worker(daemon, r, client):
    client.push({"class": testjobs.Overdue, "args": ["stuck", 60]})
    client.push({"class": testjobs.Sleep, "args": ["neighbour", 2]})
    # --timeout: how long the retiring worker waits for its running jobs; the neighbour needs about one second.
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--timeout", "4")
    (first,) = d.wait_children(1)
    wait_for(lambda: r.zcard("retry") == 1, 15, message="the timed-out job in the retry set")
    job = json.loads(r.zrange("retry", 0, 0)[0])
    assert job["error_class"] == "sidepunch.JobTimeout" and "1s timeout" in job["error_message"]
    wait_for(lambda: b"neighbour" in r.lrange("done", 0, -1), 10, message="the other job to finish")
    wait_for(lambda: first.pid not in {c.pid for c in d.children()} and len(d.children()) == 1, 30,
             message="a replacement worker")
    assert "did not stop within" in d.log() and "retiring" in d.log()
    assert r.llen("queue:default") == 0 and r.keys("working:*") == []


def test_default_job_timeout_flag(daemon, r, client):
    client.push({"class": testjobs.Sleep, "args": ["slow", 60]})
    daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--job-timeout", "1")
    wait_for(lambda: r.zcard("retry") == 1, 15, message="the timed-out job")
    assert json.loads(r.zrange("retry", 0, 0)[0])["error_class"] == "sidepunch.JobTimeout"


def test_stuck_worker_is_aborted_killed_and_its_job_recovered(daemon, r, client):
    client.push({"class": testjobs.Pid, "args": ["frozen", 3]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--worker-timeout", "3")
    (first,) = d.wait_children(1)
    wait_for(lambda: r.llen("pids") == 1, 10, message="the job to start")
    os.kill(first.pid, signal.SIGSTOP)  # as if stuck in C code: no heartbeat, no progress
    wait_for(lambda: r.lrange("done", 0, -1) == [b"frozen"], 30, message="the job to run again elsewhere")
    log = d.log()
    assert "sent no heartbeat for 3s" in log and "SIGABRT" in log and "requeued 1 job(s)" in log
    assert len(r.lrange("pids", 0, -1)) == 2


def test_logging_json_job_lines_logfile_and_pidfile(daemon, r, client, tmp_path):
    logfile, pidfile = tmp_path / "sp.log", tmp_path / "sp.pid"
    jid = client.push({"class": testjobs.Record, "args": ["x"]})
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--log-format", "json",
               "--logfile", str(logfile), "--pidfile", str(pidfile))
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(d.pid), 10, message="the pidfile")
    wait_for(lambda: logfile.exists() and f"done testjobs.Record jid={jid}" in logfile.read_text(), 15,
             message="the job's finish line")
    entries = [json.loads(line) for line in logfile.read_text().splitlines()]
    start = next(e for e in entries if e["msg"].startswith("start testjobs.Record"))
    done = next(e for e in entries if e["msg"].startswith("done testjobs.Record"))
    assert f"jid={jid} queue=default" in start["msg"] and re.search(r"queue=default \d+\.\d{3}s$", done["msg"])
    assert {"ts", "level", "pid", "logger", "msg"} <= set(done)
    d.signal(signal.SIGTERM)
    assert d.wait(60) == 0 and not pidfile.exists()


def test_journald_lines_have_no_timestamp_and_warning_level_hides_job_lines(daemon, r, client):
    client.push({"class": testjobs.Record, "args": ["x"]})
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", env={"JOURNAL_STREAM": "8:1234"})
    d.wait_log("done testjobs.Record", 15)
    assert not re.search(r"^\d{4}-\d\d-\d\d", d.log(), re.M)
    assert re.search(r"^<6>\d+ INFO sidepunch.job: done testjobs.Record", d.log(), re.M)
    d.signal(signal.SIGTERM)
    d.signal(signal.SIGCONT)  # as systemd does right after TERM: must not read as "resuming"
    assert d.wait(60) == 0 and "resuming" not in d.log()
    quiet = daemon("--workers", "1", "--threads", "1", "-r", "testjobs", "--log-level", "warning")
    quiet.wait_children(1)
    client.push({"class": testjobs.Record, "args": ["y"]})
    wait_for(lambda: r.llen("done") == 2, 15, message="the second job")
    assert "testjobs.Record" not in quiet.log()


def test_a_stalled_redis_never_stalls_the_masters_loop(daemon, notify_socket, tmp_path):
    """Redis SIGSTOPped and a worker SIGKILLed: the master still reaps, replaces and pings the watchdog on time
    (its Redis work runs in the recoverer thread); after SIGCONT the killed worker's job is put back and rerun."""
    from sidepunch.embedded import RedisServer
    server = RedisServer().start()
    try:
        own = redis.Redis.from_url(server.url)
        d = daemon("--workers", "2", "--threads", "1", "-r", "testjobs", url=server.url,
                   env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000"})
        wait_for(lambda: notify_socket.lines("READY=1"), 20, message="READY=1")
        sidepunch.Client(redis=own).push({"class": "testjobs.Sleep", "args": ["s", 60]})
        wait_for(lambda: own.lrange("started", 0, -1) == [b"s"], 10, message="the job to start")
        d.wait_log("start testjobs.Sleep")
        victim = int(re.search(r"(\d+) INFO sidepunch.job: start testjobs.Sleep", d.log()).group(1))
        others = {p.pid for p in d.children()} - {victim}
        os.kill(server.process.pid, signal.SIGSTOP)
        stalled = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        d.wait_log("killed by SIGKILL", timeout=3)
        wait_for(lambda: len({p.pid for p in d.children()} - others - {victim}) == 1, 3,
                 message="a replacement worker while Redis is stalled")
        time.sleep(3)
        pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1" and t > stalled]
        gaps = [b - a for a, b in zip([stalled] + pings, pings + [time.monotonic()])]
        assert len(pings) >= 5 and max(gaps) < 1.5, gaps  # every 0.5 s, through the stall
        assert "requeued" not in d.log()
        os.kill(server.process.pid, signal.SIGCONT)
        d.wait_log("requeued 1 job(s)", timeout=30)
        wait_for(lambda: own.lrange("started", 0, -1) == [b"s", b"s"], 30, message="the job to run again")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_a_killed_recoverer_is_replaced_and_recovery_goes_on(daemon, r, client):
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs")
    d.wait_children(1)

    def recoverers():
        return [p for p in psutil.Process(d.pid).children() if "recoverer" in " ".join(p.cmdline())]
    (first,) = wait_for(recoverers, 10, message="the recoverer process")
    first.kill()
    d.wait_log("the recoverer process exited (signal SIGKILL); starting another")
    (second,) = wait_for(lambda: [p for p in recoverers() if p.pid != first.pid], 10, message="a new recoverer")
    client.push({"class": "testjobs.Sleep", "args": ["s", 60]})
    wait_for(lambda: r.lrange("started", 0, -1) == [b"s"], 10, message="the job to start")
    (worker,) = d.children()
    worker.kill()
    d.wait_log("requeued 1 job(s)", timeout=15)  # the new recoverer put the job back
    wait_for(lambda: r.lrange("started", 0, -1) == [b"s", b"s"], 20, message="the job to run again")
