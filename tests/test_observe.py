"""Process tests of `sidepunchd --metrics-port` (docs/observability.md): the counts in /metrics add up exactly
over a SIGKILLed worker, never go backwards, parse with prometheus_client's parser; /healthz follows Redis and
the workers; a port that cannot be served is a usage error (exit 2)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import psutil
import pytest
import redis

from conftest import APPS, wait_for
from sidepunch.embedded import RedisServer, free_port

sys.path.insert(0, str(APPS))
import metricsjobs  # noqa: E402

prometheus_parser = pytest.importorskip("prometheus_client.parser")


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value; parsed by prometheus_client's parser."""
    status, body = get(port, "/metrics")
    assert status == 200, body
    samples = {}
    for family in prometheus_parser.text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and all((k, labels[k]) in lab for k in labels))


def start(daemon, *args, port=None, url=None):
    port = port or free_port()
    d = daemon("-r", "metricsjobs", "--metrics-port", str(port), *args, url=url)
    wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="/healthz 200")
    return d, port


def push_counted(client, n: int, fail_every: int = 10) -> None:
    client.push_bulk({"class": metricsjobs.Counted, "args": [[i % fail_every == 0] for i in range(n)]})


def test_counts_add_up_over_a_sigkilled_worker(daemon, r, client):
    """1,000 jobs (100 fail) on 2 workers; a worker is SIGKILLed while both its threads run a job, just after
    its last quick jobs were acknowledged: every execution is counted once, failures match the retry set."""
    d, port = start(daemon, "-w", "2", "-c", "2")
    push_counted(client, 500)
    client.push_bulk({"class": metricsjobs.Hold, "args": [[] for _ in range(4)]})
    holders = wait_for(lambda: _two_holders(r), timeout=60, message="one worker with both threads holding")
    before = scrape(port)
    os.kill(holders, signal.SIGKILL)  # no wait: its last counts must already be with the master
    wait_for(lambda: total(scrape(port), "sidepunch_worker_restarts_total", reason="crash") == 1, timeout=30,
             message="the restart counted")
    after = scrape(port)
    for key, value in before.items():
        if key[0].endswith(("_total", "_count", "_bucket", "_sum")):
            assert after.get(key, 0) >= value, key  # counters never go backwards over a killed worker
    r.set("release", 1)
    push_counted(client, 500)
    wait_for(lambda: int(r.get("runs") or 0) == 1004 and not r.llen("queue:default"), timeout=120,
             message="every job run")
    samples = wait_for(lambda: _settled(port), timeout=30, message="the counts to settle")
    runs, fail_runs = int(r.get("runs")), int(r.get("fail-runs"))
    assert (runs, fail_runs) == (1004, 100)
    assert total(samples, "sidepunch_jobs_processed_total") == runs
    assert total(samples, "sidepunch_jobs_processed_total", **{"class": "metricsjobs.Counted", "queue": "default"}) \
        == 1000
    assert total(samples, "sidepunch_jobs_failed_total") == fail_runs == r.zcard("retry")
    assert total(samples, "sidepunch_jobs_retried_total") == 100
    assert total(samples, "sidepunch_job_duration_seconds_count", **{"class": "metricsjobs.Counted"}) == 1000
    assert total(samples, "sidepunch_retry_set_size") == 100
    assert total(samples, "sidepunch_workers") == 2


def _two_holders(r: redis.Redis) -> int | None:
    counts = Counter(int(pid) for pid in r.lrange("holding", 0, -1))
    return next((pid for pid, n in counts.items() if n >= 2), None)


def _settled(port: int) -> dict | None:
    """A scrape once the in-flight gauge is 0 and two scrapes agree (the master forwards within ms)."""
    first = scrape(port)
    time.sleep(0.6)
    second = scrape(port)
    if total(second, "sidepunch_jobs_in_flight") == 0 and \
            total(first, "sidepunch_jobs_processed_total") == total(second, "sidepunch_jobs_processed_total"):
        return second
    return None


def _when(samples: dict, condition) -> dict | None:
    return samples if condition(samples) else None


def test_metrics_text_names_and_labels(daemon, r, client):
    """Every contract name is there, with its labels, in text prometheus_client parses; queue size/latency
    come from Redis (a queue no worker fetches from keeps its jobs)."""
    d, port = start(daemon, "-w", "1", "-c", "2", "-q", "default", "-q", "idle")
    push_counted(client, 10, fail_every=5)
    r.sadd("queues", "other")
    r.lpush("queue:other", json.dumps({"class": "X", "args": [], "jid": "a" * 24, "enqueued_at": time.time() - 30}))
    wait_for(lambda: int(r.get("runs") or 0) == 10, message="jobs run")
    samples = wait_for(lambda: _when(scrape(port), lambda s: total(s, "sidepunch_jobs_processed_total") == 10))
    names = {name for name, _ in samples}
    for name in ("sidepunch_jobs_processed_total", "sidepunch_jobs_failed_total", "sidepunch_jobs_retried_total",
                 "sidepunch_jobs_dead_total", "sidepunch_jobs_expired_total", "sidepunch_jobs_rate_limited_total",
                 "sidepunch_jobs_cancelled_total", "sidepunch_job_duration_seconds_bucket",
                 "sidepunch_job_duration_seconds_count", "sidepunch_job_duration_seconds_sum",
                 "sidepunch_jobs_in_flight", "sidepunch_workers", "sidepunch_worker_restarts_total",
                 "sidepunch_queue_size", "sidepunch_queue_latency_seconds", "sidepunch_retry_set_size",
                 "sidepunch_scheduled_set_size", "sidepunch_dead_set_size"):
        assert name in names, name
    assert total(samples, "sidepunch_jobs_failed_total", **{"class": "metricsjobs.Counted"}) == 2
    samples = wait_for(lambda: _when(scrape(port), lambda s: total(s, "sidepunch_queue_size", queue="other")))
    assert total(samples, "sidepunch_queue_size", queue="other") == 1
    assert 25 < total(samples, "sidepunch_queue_latency_seconds", queue="other") < 300
    assert ("sidepunch_queue_size", (("queue", "idle"),)) in samples
    buckets = [v for (n, lab), v in samples.items() if n == "sidepunch_job_duration_seconds_bucket"]
    assert max(buckets) == 10
    assert get(port, "/nothing")[0] == 404
    assert psutil.Process(d.pid).num_threads() == 1  # the master forks: it stays single-threaded


def test_healthz_follows_redis(daemon, tmp_path):
    """503 with a JSON reason once Redis has been unreachable for the grace; 200 again once it answers."""
    server = RedisServer().start()
    try:
        d, port = start(daemon, "-w", "1", "-c", "1", "--healthz-redis-grace", "1", url=server.url)
        server.process.send_signal(signal.SIGSTOP)  # stopped: connections hang, as on a lost network
        try:
            status, body = wait_for(lambda: (a := get(port, "/healthz"))[0] == 503 and a, timeout=30,
                                    message="/healthz 503")
            began = time.monotonic()
            assert total(scrape(port), "sidepunch_redis_up") == 0
            assert time.monotonic() - began < 3  # a scrape reads the cache: it never waits on a hung Redis
        finally:
            server.process.send_signal(signal.SIGCONT)
        reason = json.loads(body)
        assert reason["status"] == "unhealthy" and "Redis" in reason["reason"]
        wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="/healthz 200 again")
        server.stop()  # shut down this time: connections are refused
        status, body = wait_for(lambda: (a := get(port, "/healthz"))[0] == 503 and a, timeout=30,
                                message="/healthz 503 with Redis down")
        assert "Redis" in json.loads(body)["reason"]
        server = RedisServer(port=server.port).start()
        wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=60, message="/healthz 200 once Redis is back")
    finally:
        server.stop()


def test_healthz_when_no_worker_heartbeats(daemon, r):
    """Workers that stop heartbeating (SIGSTOP) -> 503 naming it; the master replaces them (counted as stuck)
    and /healthz is 200 again."""
    d, port = start(daemon, "-w", "2", "-c", "1", "--worker-timeout", "3")
    workers = [p.pid for p in psutil.Process(d.pid).children() if p.pid not in _exporters(d.pid)
               and "worker" in " ".join(p.cmdline())]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    status, body = wait_for(lambda: (a := get(port, "/healthz"))[0] == 503 and a, timeout=30,
                            message="/healthz 503")
    assert "no worker" in json.loads(body)["reason"]
    wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=60, message="/healthz 200 with new workers")
    wait_for(lambda: total(scrape(port), "sidepunch_worker_restarts_total", reason="stuck") == 2, timeout=30,
             message="both counted once reaped (SIGKILL after the SIGABRT grace)")


@pytest.mark.parametrize("args, message", [
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--metrics-port", "http"], "--metrics-port"),
    (["--metrics-port", "-1"], "--metrics-port"),
    (["--metrics-bind", "no such host.invalid", "--metrics-port", "9"], "--metrics-bind"),
])
def test_bad_metrics_settings_exit_2(daemon, args, message):
    d = daemon(*args)
    assert d.proc.wait(30) == 2
    lines = d.log().strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], lines


def test_port_in_use_exits_2(daemon):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        d = daemon("--metrics-port", str(taken.getsockname()[1]))
        assert d.proc.wait(30) == 2
    lines = d.log().strip().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0], lines


def test_counts_survive_recycled_workers_and_a_killed_exporter(daemon, r, client):
    """Workers replaced by --max-jobs and a SIGKILLed exporter lose no count: the master keeps the totals and
    feeds them to the new exporter. Sync and async jobs are counted alike."""
    d, port = start(daemon, "-w", "2", "-c", "2", "--max-jobs", "40")
    client.push_bulk({"class": metricsjobs.Counted, "args": [[i % 10 == 0] for i in range(150)]})
    client.push_bulk({"class": metricsjobs.AsyncCounted, "args": [[i % 10 == 0] for i in range(150)]})
    wait_for(lambda: int(r.get("runs") or 0) == 300, timeout=120, message="every job run")
    samples = wait_for(lambda: _settled(port), timeout=30, message="the counts to settle")
    assert total(samples, "sidepunch_jobs_processed_total") == 300
    assert total(samples, "sidepunch_jobs_processed_total", **{"class": "metricsjobs.AsyncCounted"}) == 150
    assert total(samples, "sidepunch_jobs_failed_total") == 30 == r.zcard("retry")
    samples = wait_for(lambda: _when(scrape(port), lambda s: total(s, "sidepunch_worker_restarts_total",
                                                                   reason="max_jobs") >= 1),
                       timeout=60, message="a recycled worker reaped and counted")
    exporter = _exporters(d.pid)[0]
    os.kill(exporter, signal.SIGKILL)
    wait_for(lambda: [p for p in _exporters(d.pid) if p != exporter], timeout=30, message="a new exporter")
    again = wait_for(lambda: _when(scrape(port) if get(port, "/metrics")[0] == 200 else {},
                                   lambda s: total(s, "sidepunch_jobs_processed_total") == 300), timeout=30,
                     message="the totals in the new exporter")
    for key, value in samples.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert again.get(key, 0) >= value, key


def _exporters(master: int) -> list[int]:
    found = []
    for child in psutil.Process(master).children():
        try:
            if "metrics exporter" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:  # a worker that just exited
            pass
    return found


def test_hostile_class_names_stay_labels(daemon, r, client):
    """Jobs whose class is unknown, not a string, or full of quotes, newlines and other scripts still run (and
    fail) and are counted; the text still parses and the daemon keeps serving."""
    d, port = start(daemon, "-w", "1", "-c", "2")
    classes = ['no.such.Job"\n{x="1"}\\', "Ünïcødé.\U0001f600Job", "a" * 5000, "", "metricsjobs.Counted\x00"]
    for klass in (*classes, 12, None, ["x"], {"a": 1}):
        r.lpush("queue:default", json.dumps({"class": klass, "args": [], "jid": "b" * 24, "queue": "default",
                                             "retry": False}))
    client.push({"class": metricsjobs.Counted, "args": []})
    samples = wait_for(lambda: _when(scrape(port), lambda s: total(s, "sidepunch_jobs_processed_total",
                                                                   **{"class": "metricsjobs.Counted"}) == 1),
                       timeout=30, message="the good job counted")
    labels = {dict(lab).get("class") for (n, lab), _ in samples.items() if n == "sidepunch_jobs_processed_total"}
    assert {classes[0], classes[1], classes[4], "metricsjobs.Counted"} < labels  # exact, through the escaping
    assert total(samples, "sidepunch_jobs_failed_total") == 4  # the unknown classes ran and failed
    assert r.zcard("dead") == 5  # no class to run: the empty and non-string ones, dead with their reason
    assert all(label is None or len(label) <= 203 for label in labels)
    assert get(port, "/healthz")[0] == 200 and d.proc.poll() is None


def test_rate_limited_jobs_are_counted_as_redis_counts_them(daemon, r, client):
    """Jobs over a concurrency limit go back to the schedule: sidepunch_jobs_rate_limited_total matches
    stat:rate_limited, and every job is processed once it is admitted."""
    from sidepunch.core import keys
    d, port = start(daemon, "-r", "limitjobs", "-w", "2", "-c", "4", "--poll-interval", "0.2")
    client.push_bulk({"class": "limitjobs.Paired", "args": [[0.3] for _ in range(8)]})
    wait_for(lambda: r.scard("done") == 8, timeout=90, message="every limited job run")

    def agreed():
        samples = scrape(port)
        limited = total(samples, "sidepunch_jobs_rate_limited_total")
        return samples if limited and limited == int(r.get(keys.STAT_RATE_LIMITED) or 0) else None
    samples = wait_for(agreed, timeout=30, message="the metric and stat:rate_limited to agree")
    assert total(samples, "sidepunch_jobs_processed_total", **{"class": "limitjobs.Paired"}) == 8


def test_expired_jobs_are_counted_not_run(daemon, r, client):
    """Jobs fetched past their expires_at are acknowledged without running: sidepunch_jobs_expired_total counts
    them, not processed."""
    d, port = start(daemon, "-w", "1", "-c", "2")
    for i in range(5):
        r.lpush("queue:default", json.dumps({"class": "metricsjobs.Counted", "args": [], "jid": f"e{i:023d}",
                                             "queue": "default", "expires_at": 1000.5}))
    client.push({"class": metricsjobs.Counted, "args": []})
    samples = wait_for(lambda: _when(scrape(port), lambda s: total(s, "sidepunch_jobs_expired_total") == 5
                                     and total(s, "sidepunch_jobs_processed_total") == 1), timeout=30,
                       message="5 expired, 1 processed")
    assert int(r.get("runs")) == 1 and not r.llen("queue:default")
    assert total(samples, "sidepunch_jobs_failed_total") == 0


def _reset(port: int, data: bytes) -> None:
    """Send `data` and drop the connection with a TCP reset (SO_LINGER 0), as a hostile or dying client may."""
    import socket
    import struct
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(data)


def test_clients_that_reset_do_not_flood_the_log_with_tracebacks(daemon):
    """Scrapers that hang up mid-answer, and oversized requests reset at once, are the client's doing: the
    exporter logs no traceback for them (one per request would let any client flood the daemon's log), and
    keeps serving."""
    d, port = start(daemon)
    for _ in range(20):
        _reset(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        _reset(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert get(port, "/healthz")[0] == 200
    time.sleep(1)  # the handler threads of the reset connections have written whatever they write
    assert "Traceback" not in d.log() and "Exception occurred" not in d.log(), d.log()[-3000:]


def test_slow_clients_cannot_pile_up_threads_or_hold_the_health_probe(daemon):
    """Clients that trickle a request a byte at a time (slowloris) and never finish it: the exporter neither
    starts a thread per such connection without bound (threads count against the host's or container's process
    limit, which the master needs to fork workers) nor lets them keep /healthz from answering."""
    import socket
    d, port = start(daemon)
    exporter = psutil.Process(_exporters(d.pid)[0])
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        for _ in range(3):  # a byte every few seconds: each read of the server succeeds within its timeout
            for sock in slow:
                try:
                    sock.send(b"G")
                except OSError:
                    pass  # the exporter hung up on it: what it should do
            assert get(port, "/healthz")[0] == 200
            time.sleep(3)
        assert exporter.num_threads() < 150, exporter.num_threads()
        wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=15, message="/healthz answers")
    finally:
        for sock in slow:
            sock.close()


def test_a_queues_key_of_another_type_is_no_redis_outage(daemon, r):
    """The `queues` set is written by any client: a key of another type there (hostile, or a bug elsewhere) only
    hides the queues no -q names. Redis answers, so /healthz stays 200 (a probe that failed would have the
    orchestrator restart a working daemon over and over) and the configured queues are still measured."""
    d, port = start(daemon, "-q", "default", "--healthz-redis-grace", "1")
    r.delete("queues")
    r.set("queues", "not a set")
    time.sleep(3)  # past the grace and two polls
    status, body = get(port, "/healthz")
    assert status == 200, body
    samples = scrape(port)
    assert ("sidepunch_queue_size", (("queue", "default"),)) in samples
