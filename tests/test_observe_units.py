"""Unit tests of the metrics' parts (sidepunch/server/observe): the tally lines a worker writes and the totals
the master keeps (hostile lines, bounded labels, lines under PIPE_BUF), counts flushed before acknowledgements,
the health verdict, queue latency from hostile payloads, restart reasons, the listener's errors, and that
nothing of it is imported without --metrics-port."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sidepunch.server.config import QueueSpec
from sidepunch.server.fetch import BasicFetch, ReliableFetch, ThreadSlot
from sidepunch.server.observe.acks import metered
from sidepunch.server.observe.feed import open_listener, restart_reason
from sidepunch.server.observe.redisinfo import latency
from sidepunch.server.observe.tally import (MAX_LINE, MAX_QUEUES, OTHER_QUEUES, MeteredCounters, Totals, encode)
from sidepunch.server.settings import ConfigError
from sidepunch.server.stats import MAX_CLASSES, OTHER_CLASSES

ROOT = Path(__file__).resolve().parent.parent


def _lines(counters: MeteredCounters) -> list[bytes]:
    sent: list[bytes] = []
    counters.report = lambda line: sent.append(line) or True
    counters.flush()
    return sent


def _totals(lines: list[bytes]) -> Totals:
    totals = Totals()
    for line in lines:
        kind, _, body = line.rstrip(b"\n").partition(b" ")
        assert kind == b"tally" and totals.add_line(body)
    return totals


def test_a_tally_travels_whole_and_adds_up():
    counters = MeteredCounters()
    for i in range(300):  # long class names: the tally takes several lines, each under PIPE_BUF
        name = ("\U0001f600" * 198 if i % 2 else "k\n\"" * 66) + str(i % 40)  # escapes: 12 and 2 bytes a character
        counters.record(i % 3 == 0, False, name, 0.002 * i, "default")
    counters.record(False, True, "Cancelled", 0.1, "low")
    counters.event("expired")
    counters.note("retried")
    lines = _lines(counters)
    assert len(lines) > 1 and all(len(line) < 4096 and line.count(b"\n") == 1 for line in lines)
    totals = _totals(lines)
    assert sum(row[0] for row in totals.rows.values()) == 301
    assert sum(row[1] for row in totals.rows.values()) == 100
    assert totals.events == {"cancelled": 1, "expired": 1, "retried": 1}
    assert _lines(counters) == []  # nothing twice
    assert counters.total_processed == 301 and counters.take()[2] == {"cancelled": 1, "expired": 1}


def test_lines_the_pipe_cannot_take_wait_in_order():
    counters = MeteredCounters()
    counters.record(True, False, "A", 0.01, "q")
    counters.report = lambda line: False  # a full pipe
    counters.flush()
    counters.record(False, False, "B", 0.01, "q")  # meanwhile counted in the (bounded) rows
    counters.flush()
    totals = _totals(_lines(counters) + _lines(counters))
    assert {k: v[:2] for k, v in totals.rows.items()} == {("A", "q"): [1, 1], ("B", "q"): [1, 0]}


def test_no_master_no_growth():
    counters = MeteredCounters()  # an embedded Manager's: report stays None
    for _ in range(1000):
        counters.record(False, False, "A", 0.0, "q")
        counters.flush()
    assert counters._unsent == [] and counters._rows == {}


def test_labels_stay_bounded():
    counters = MeteredCounters()
    for i in range(MAX_CLASSES + 50):
        counters.record(False, False, f"C{i}", 0.0, "q")
    counters.record(False, False, 12345, 0.0, "q")  # not a string
    totals = _totals(_lines(counters))
    classes = {k for k, _ in totals.rows}
    assert len(classes) <= MAX_CLASSES + 1 and OTHER_CLASSES in classes
    many = Totals()
    for i in range(MAX_QUEUES + 20):
        many.add_line(json.dumps({"r": [["A", f"q{i}", 1, 0, 0.0, []]], "e": {}}))
    assert len({q for _, q in many.rows}) == MAX_QUEUES + 1 and ("A", OTHER_QUEUES) in many.rows
    assert sum(row[0] for row in many.rows.values()) == MAX_QUEUES + 20


HOSTILE = [b"", b"{", b"[]", b"null", b'{"r": 1, "e": {}}', b'{"r": [[1, 2, 3]], "e": {}}',
           b'{"r": [["A", "q", -1, 0, 0, []]], "e": {}}', b'{"r": [["A", "q", "1", 0, 0, []]], "e": {}}',
           b'{"r": [["A", "q", 1, 0, "x", []]], "e": {}}', b'{"r": [], "e": {"retried": -5}}',
           b'{"r": [["A", "q", 1, 0, 0, [[999, 1]]]], "e": {}}', b"[" * 100_000, b'{"r": [], "e": []}',
           "\ud800".encode("utf-8", "surrogatepass"), b'{"r": [["A", "q", 1, 0, 1e999, [[0, 1]]]], "e": {}}']


@pytest.mark.parametrize("line", HOSTILE)
def test_hostile_lines_never_raise(line):
    totals = Totals()
    totals.add_line(line)  # what a worker running app code may write is parsed, never trusted
    for (_, _), (count, failed, seconds, buckets) in totals.rows.items():
        assert count >= 0 and failed >= 0 and seconds >= 0 and all(0 <= i for i in buckets)
    assert all(v >= 0 for v in totals.events.values())


def test_random_garbage_lines_never_raise():
    rng = random.Random(17)
    totals = Totals()
    for _ in range(2000):
        good = json.dumps({"r": [["A", "q", rng.randint(0, 5), 0, 0.1, [[rng.randint(0, 16), 1]]]], "e": {}})
        cut = rng.randint(0, len(good))
        totals.add_line(good[:cut] + "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 3))))
    assert all(row[0] >= 0 for row in totals.rows.values())


@pytest.mark.parametrize("base", [ReliableFetch, BasicFetch])
def test_counts_are_flushed_before_acknowledgements(r, base):
    """At every flush the jobs whose counts it carries are still in Redis's working list (not yet acked)."""
    config = SimpleNamespace(queues=(QueueSpec("default"),), threads=1, workers=1)
    counters = MeteredCounters()
    fetcher = metered(base, counters).for_thread(r, config, "host:1:abc", ThreadSlot(1, 0))
    seen: list[tuple[int, int]] = []
    counters.report = lambda line: seen.append((_counted(line), _held(r))) or True
    for i in range(6):
        r.lpush("queue:default", json.dumps({"class": "A", "jid": str(i), "args": []}))
    done = 0
    while done < 6:
        unit = fetcher.fetch()
        if unit is None:
            continue
        counters.record(False, False, "A", 0.0, "default")
        done += 1
        if fetcher.ack(unit, 0.0):
            fetcher.send_acks()
    fetcher.fetch()  # the last acks ride on this fetch (reliable)
    assert sum(n for n, _ in seen) == 6
    if base is ReliableFetch:
        assert all(held >= counted for counted, held in seen)  # counted while still held: not yet acked
        assert _held(r) == 0


def _counted(line: bytes) -> int:
    return sum(row[2] for row in json.loads(line.split(b" ", 1)[1])["r"])


def _held(r) -> int:
    return sum(r.llen(key) for key in r.scan_iter("working:*"))


def test_metered_ack_into_flushes_first(r):
    counters = MeteredCounters()
    order: list[str] = []
    counters.report = lambda line: order.append("flush") or True
    counters.record(True, False, "A", 0.0, "default")
    pipe = r.pipeline(transaction=True)
    metered(ReliableFetch, counters).ack_into(pipe, SimpleNamespace(working="w", payload=b"x"))
    order.append("sent")
    pipe.execute()
    assert order == ["flush", "sent"]


def test_plain_counters_are_unchanged_without_metrics():
    from sidepunch.server.stats import Counters
    plain = Counters()
    plain.record(False, False, "A", 0.1, "q")
    assert not hasattr(plain, "flush") and plain.take()[:2] == (1, 0)


@pytest.mark.parametrize("reason, clean, label", [
    ("", False, "crash"), ("", True, "exited"), ("stuck: no heartbeat", False, "stuck"),
    ("RSS 900 MB over --max-memory 512 MB", True, "memory"), ("reload (HUP)", True, "reload"),
    ("processed 100 jobs (--max-jobs 100)", True, "max_jobs"), ("it closed its status pipe", True, "status_pipe"),
    ("a job would not stop", True, "retired"), ("\x00" * 10_000, True, "retired")])
def test_restart_reasons_are_a_bounded_set(reason, clean, label):
    assert restart_reason(reason, clean) == label


@pytest.mark.parametrize("payload", [None, b"", b"not json", b"[]", b'{"enqueued_at": "x"}',
                                     b'{"enqueued_at": NaN}', b'{"enqueued_at": 1e999}',
                                     b'{"enqueued_at": ' + b"9" * 400 + b"}", b"[" * 50_000,
                                     b'{"enqueued_at": 99999999999999}', b'{"enqueued_at": true}'])
def test_latency_of_hostile_payloads(payload):
    value = latency(payload, 1_700_000_000.0)
    assert value >= 0 and value == value


def test_latency_in_seconds_and_milliseconds():
    assert latency(b'{"enqueued_at": 1699999990.5}', 1_700_000_000.0) == pytest.approx(9.5)
    assert latency(b'{"enqueued_at": 1699999990000}', 1_700_000_000.0) == pytest.approx(10)


def test_health_verdicts():
    pytest.importorskip("prometheus_client")
    from sidepunch.server.observe.collect import MetricsState, health
    config = SimpleNamespace(healthz_redis_grace=5.0)
    state = MetricsState(time.monotonic())
    assert health(state, time.monotonic(), config)[0] == 503  # the master has not spoken yet
    state.apply("state", b'{"workers": 2, "beating": 2, "busy": 0, "restarts": {}}')
    now = state.master_at
    assert health(state, now, config) == (200, {"status": "ok", "workers": 2, "heartbeating": 2})
    state.apply("state", b'{"workers": 1, "beating": 0}')
    status, body = health(state, state.master_at, config)
    assert status == 503 and "no worker" in body["reason"]
    state.apply("state", b'{"workers": 1, "beating": 1}')
    state.redis_ok_at, state.redis_error = state.master_at - 6, "ConnectionError: refused"
    status, body = health(state, state.master_at, config)
    assert status == 503 and "Redis" in body["reason"] and "refused" in body["reason"]
    assert health(state, state.master_at + 60, config)[1]["reasons"][0].startswith("the master")
    state.apply("state", b'{"workers": 1, "beating": 1, "stopping": true}')
    assert health(state, state.master_at, config)[1]["reasons"][0] == "the daemon is stopping"
    state.apply("state", b"[1, 2")  # a bad line changes nothing
    state.apply("bogus", b"{}")


@pytest.mark.parametrize("bind, port", [("no such host.invalid", 9), ("300.1.1.1", 9), ("127.0.0.1\x00", 9), ("", 9),
                                        ("203.0.113.1", 9)])
def test_listener_errors_are_config_errors(bind, port):
    with pytest.raises(ConfigError) as info:
        open_listener(SimpleNamespace(metrics_bind=bind, metrics_port=port))
    assert "\n" not in str(info.value)


def test_nothing_of_it_is_imported_without_metrics_port():
    code = ("import sys, sidepunch.server.cli, sidepunch.server.master, sidepunch.server.launcher, "
            "sidepunch.server.parts; bad = [m for m in sys.modules if m.startswith(('prometheus_client', "
            "'sidepunch.server.observe'))]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_uses_only_exported_names():
    dashboard = json.loads((ROOT / "docs" / "grafana" / "sidepunch.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"sidepunch_\w+", e)}
    docs = (ROOT / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"^\| `(sidepunch_\w+)`", docs, re.M))
    assert used and used <= documented, used - documented
    assert len(dashboard["panels"]) == len({p["id"] for p in dashboard["panels"]})


def test_an_exporter_that_keeps_dying_is_restarted_ever_more_slowly():
    """No log flood: each young death doubles the wait before the next exporter (up to a minute)."""
    import socket as sockets
    from sidepunch.server.observe.feed import MAX_RESTART_AFTER, Observer
    with sockets.socket() as listener:
        observer = Observer(SimpleNamespace(worker_timeout=60), listener, fork=lambda: 999_999_999)
        delays = []
        for _ in range(10):
            observer.tick([], time.monotonic() + 3600, ())  # due: "forks" (the fake pid), feeds, sends the state
            assert observer.owns(999_999_999)
            observer.exited(256, stopping=False)
            delays.append(observer._delay)
        assert delays[:3] == [2.0, 4.0, 8.0] and delays[-1] == MAX_RESTART_AFTER
        observer.tick([], time.monotonic(), ())
        assert observer.pid is None  # not yet due
