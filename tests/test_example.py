"""The counters example (examples/counters): its HTTP API, its jobs against a failing service, and the demo run
the way a user runs it. Every process a test starts is stopped by its pid; the demo's tests also check that
the demo stopped everything it started."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, wait_for
from sidepunch.embedded import free_port

EXAMPLES = ROOT / "examples"
DEMO = EXAMPLES / "counters" / "demo.py"
# The example is an app, not part of the installed package: tests import it the way sidepunchd does.
sys.path.insert(0, str(EXAMPLES))

from counters import demo, jobs  # noqa: E402

# The tests only talk to 127.0.0.1; a proxy from the environment must not intercept them.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def example_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(EXAMPLES), str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **extra)


def call(method: str, url: str, body: object = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers), for error statuses too."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_service(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "counters.service", "--port", str(port)], cwd=EXAMPLES,
                            env=example_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/counters"), 15, message="the counters service")
    except BaseException:
        stop(proc)
        raise
    return proc


def _answers(url: str) -> bool:
    try:
        return call("GET", url)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def service():
    port = free_port()
    proc = start_service(port)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


# -- the HTTP service ------------------------------------------------------------------------------------------

def test_increment_decrement_and_read(service):
    assert call("POST", f"{service}/counters/apples/increment", {"by": 5})[:2] == \
        (200, {"name": "apples", "value": 5})
    assert call("POST", f"{service}/counters/apples/decrement", {"by": 2})[1] == {"name": "apples", "value": 3}
    assert call("POST", f"{service}/counters/apples/increment")[1]["value"] == 4  # no body: by 1
    assert call("GET", f"{service}/counters/apples")[:2] == (200, {"name": "apples", "value": 4})
    assert call("GET", f"{service}/counters")[1]["apples"] == 4


def test_names_are_url_decoded(service):
    assert call("POST", f"{service}/counters/red%20plums/decrement", {"by": 3})[1] == \
        {"name": "red plums", "value": -3}
    assert call("GET", f"{service}/counters")[1]["red plums"] == -3


def test_an_idempotency_key_is_applied_once(service):
    headers = {"Idempotency-Key": "jid-123", "Content-Type": "application/json"}
    first = call("POST", f"{service}/counters/once/increment", {"by": 7}, headers)
    again = call("POST", f"{service}/counters/once/increment", {"by": 7}, headers)
    assert first[:2] == again[:2] == (200, {"name": "once", "value": 7})
    assert call("GET", f"{service}/counters/once")[1]["value"] == 7


@pytest.mark.parametrize("method, path, body, status, says", [
    ("POST", "/counters/untouched/increment", b"{not json", 400, "not valid JSON"),
    ("POST", "/counters/untouched/increment", b"[1, 2]", 400, "JSON object"),
    ("POST", "/counters/untouched/increment", {"by": "2"}, 400, '"by"'),
    ("POST", "/counters/untouched/decrement", {"by": 0}, 400, '"by"'),
    ("POST", "/counters/untouched/increment", {"by": True}, 400, '"by"'),
    ("POST", "/counters/untouched/increment", {"by": 1.5}, 400, '"by"'),
    ("GET", "/counters/untouched", None, 404, "no counter named 'untouched'"),
    ("GET", "/nothing/here", None, 404, "no route"),
    ("GET", "/counters/untouched/increment/more", None, 404, "no route"),
    ("POST", "/counters/untouched/multiply", {"by": 2}, 404, "no route"),
    ("GET", "/counters/untouched/increment", None, 405, "accepts POST"),
    ("POST", "/counters", {"by": 1}, 405, "accepts GET"),
    ("DELETE", "/counters/untouched", None, 405, "accepts GET"),
])
def test_errors_are_json_and_change_nothing(service, method, path, body, status, says):
    got, payload, headers = call(method, service + path, body)
    assert got == status
    assert says in payload["error"]
    assert headers["Content-Type"] == "application/json"
    if status == 405:
        assert headers["Allow"] in ("GET", "POST")
    assert call("GET", f"{service}/counters/untouched")[0] == 404


def test_service_exits_cleanly_on_sigterm():
    proc = start_service(free_port())
    assert stop(proc) == 0


# -- the jobs against a failing service --------------------------------------------------------------------------

class FailingHandler(BaseHTTPRequestHandler):
    """Answers every POST with 500, and remembers what it was sent."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, json.loads(body), self.headers.get("Idempotency-Key")))
        reply = json.dumps({"error": "database on fire"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_job_raises_on_an_error_status(failing_service, monkeypatch):
    monkeypatch.setenv("COUNTERS_URL", "http://127.0.0.1:%d/" % failing_service.server_address[1])
    job = jobs.Increment()
    job.jid = "b1f0"
    with pytest.raises(jobs.CountersError, match="answered 500: database on fire") as raised:
        job.perform("apples", 2)
    assert raised.value.status == 500
    assert failing_service.received == [("/counters/apples/increment", {"by": 2}, "b1f0")]


def test_a_job_raises_when_the_service_is_down(monkeypatch):
    monkeypatch.setenv("COUNTERS_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OSError):
        jobs.Decrement().perform("apples", 1)


def test_the_url_is_read_when_the_job_runs(monkeypatch):
    monkeypatch.delenv("COUNTERS_URL", raising=False)
    with pytest.raises(RuntimeError, match="COUNTERS_URL is not set"):
        jobs.Increment().perform("apples")


def test_sidepunchd_puts_a_failing_job_in_the_retry_set(daemon, client, r, failing_service):
    url = "http://127.0.0.1:%d" % failing_service.server_address[1]
    daemon("-w", "1", "-c", "2", "-r", "counters.jobs", env={"COUNTERS_URL": url, "PYTHONPATH": example_env()[
        "PYTHONPATH"]})
    jid = client.push({"class": jobs.Increment, "args": ["apples", 3]})
    wait_for(lambda: r.zcard("retry") == 1, 20, message="the failed job in the retry set")
    failed = json.loads(r.zrange("retry", 0, 0)[0])
    assert (failed["jid"], failed["retry_count"]) == (jid, 0)
    assert failed["error_class"] == "counters.jobs.CountersError"
    assert "database on fire" in failed["error_message"]
    assert failing_service.received == [("/counters/apples/increment", {"by": 3}, jid)]


# -- the demo, as a user runs it ---------------------------------------------------------------------------------

class DemoRun:
    """The demo in its own session, its output in a file, and every descendant seen while it ran."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.output = tmp_path / "demo.out"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(DEMO), *args], cwd=tmp_path, env=example_env(),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def _look(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def wait_output(self, pattern: str, timeout: float) -> re.Match:
        def found():
            self._look()
            assert self.proc.poll() is None or re.search(pattern, self.text()), f"demo exited:\n{self.text()}"
            return re.search(pattern, self.text())
        return wait_for(found, timeout, message=f"{pattern!r} in the demo's output")

    def wait(self, timeout: float) -> int:
        wait_for(lambda: self._look() or self.proc.poll() is not None, timeout, message="the demo to exit")
        return self.proc.returncode

    def survivors(self) -> list[psutil.Process]:
        """Descendants still running; psutil checks the start time, so a reused pid is not mistaken for one."""
        alive = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in self.survivors():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def run_demo(tmp_path):
    runs: list[DemoRun] = []

    def start(*args: str) -> DemoRun:
        runs.append(DemoRun(list(args), tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        run.kill_all()


def printed_counts(text: str) -> dict[str, int]:
    rows = re.findall(r"^  (\S+) +(-?\d+) +expected +(-?\d+) +ok$", text, re.M)
    assert all(got == want for _, got, want in rows), text
    return {name: int(got) for name, got, _ in rows}


def test_demo_once_checks_the_counts_and_stops_everything(run_demo):
    run = run_demo("--once", "--jobs", "800", "--workers", "2", "--threads", "5")
    assert run.wait(90) == 0, run.text()
    out = run.text()
    assert printed_counts(out) == demo.expected_counts(demo.plan(800, seed=7))
    assert re.search(r"OK: all 800 jobs landed in [\d.]+s, \d+ jobs/s", out)
    assert "sidepunchd stopped (exit status 0)" in out
    assert "sidepunchd logged" not in out
    assert len(run.seen) >= 5, "expected Redis, the service, sidepunchd and its two workers"
    assert run.survivors() == []


@pytest.mark.parametrize("how", ["ctrl-c to the terminal's process group", "sigterm to the demo"])
def test_demo_keeps_running_until_stopped(run_demo, how):
    run = run_demo("--jobs", "300", "--workers", "1", "--threads", "4")
    run.wait_output("Press Ctrl-C to stop", 60)
    expected = demo.expected_counts(demo.plan(300, seed=7))
    assert printed_counts(run.text()) == expected
    # Enqueue more with the command the demo printed; the demo shows the new count once it lands.
    command = re.search(r"^  (cd .* -m counters\.enqueue .*)$", run.text(), re.M).group(1)
    subprocess.run(command, shell=True, check=True, env=example_env(), timeout=30)
    run.wait_output(rf"counts now: apples={expected['apples'] + 5}\b", 30)
    if how.startswith("ctrl-c"):
        # The terminal signals the whole foreground group, Redis included; the demo must still stop in order.
        os.killpg(run.proc.pid, signal.SIGINT)
    else:
        run.proc.send_signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.text()
    assert "sidepunchd stopped (exit status 0)" in run.text()
    # Had Redis quit on the Ctrl-C, the workers could not deregister and the demo would show their errors.
    assert "sidepunchd logged" not in run.text()
    assert run.survivors() == []


def test_demo_stops_everything_when_its_output_pipe_is_gone(tmp_path):
    """`demo.py | tee log` and Ctrl-C: tee dies first, so the demo's farewell prints hit a broken pipe;
    it must still stop sidepunchd, the service and Redis."""
    proc = subprocess.Popen([sys.executable, str(DEMO), "--jobs", "200", "--workers", "1", "--threads", "2"],
                            cwd=tmp_path, env=example_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    seen: list[psutil.Process] = []
    try:
        for line in proc.stdout:
            if b"Press Ctrl-C to stop" in line:
                break
        seen = psutil.Process(proc.pid).children(recursive=True)
        assert len(seen) >= 4, "expected Redis, the service, sidepunchd and a worker"
        proc.stdout.close()  # the reader (tee) is gone
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        wait_for(lambda: not [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 30,
                 message="every process the demo started to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in seen:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
