"""Tracing through a real daemon: this process pushes with TracingClientMiddleware and an in-memory exporter;
sidepunchd runs the jobs with `--middleware sidepunch.contrib.opentelemetry.TracingMiddleware` and the app
tests/apps/otel_app.py, whose exporter writes each finished span to the Redis list `otel:spans`. The perform
span must be a child of the enqueue span (same trace, parent = the producer span) for sync and async jobs,
failures must say where the job went (and it must be there), a payload without trace context (as Ruby's
client writes it) must start a trace, and hostile trace context must never stop a job."""
from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import sidepunch  # noqa: E402
from sidepunch.contrib.opentelemetry import TracingClientMiddleware  # noqa: E402
from sidepunch.core.payload import decode, encode  # noqa: E402

from conftest import wait_for  # noqa: E402
from test_opentelemetry import hostile_values  # noqa: E402

MIDDLEWARE = "sidepunch.contrib.opentelemetry.TracingMiddleware"
SPANS = "otel:spans"


@pytest.fixture
def traced(r):
    """(a client whose pushes are traced in this process, the in-memory exporter of its spans)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    class Tracing(TracingClientMiddleware):
        tracer_provider = provider
    return sidepunch.Client(redis=r, middleware=[Tracing]), exporter


def start(daemon, *extra):
    return daemon("--workers", "1", "--threads", "2", "-r", "otel_app", "--middleware", MIDDLEWARE, *extra)


def daemon_spans(r, count, timeout=20.0):
    """The daemon's finished spans once there are `count` of them, as JSON records (otel_app.span_record)."""
    wait_for(lambda: r.llen(SPANS) >= count, timeout, message=f"{count} spans from the daemon")
    return [json.loads(raw) for raw in r.lrange(SPANS, 0, -1)]


def by_jid(spans, kind="CONSUMER"):
    return {s["attributes"]["messaging.message.id"]: s for s in spans if s["kind"] == kind}


def producer(exporter, jid):
    [span] = [s for s in exporter.get_finished_spans() if s.attributes["messaging.message.id"] == jid]
    return span


def assert_child(span, parent, jid, klass):
    """`span` (the daemon's, as JSON) is the consumer span of job `jid`, child of the SDK span `parent`."""
    assert span["trace_id"] == f"{parent.context.trace_id:032x}"
    assert span["parent_span_id"] == f"{parent.context.span_id:016x}" and span["parent_remote"] is True
    assert span["name"] == "process default" and span["kind"] == "CONSUMER"
    attributes = span["attributes"]
    assert {k: attributes[k] for k in ("messaging.system", "messaging.destination.name", "messaging.message.id",
                                       "messaging.operation.type", "messaging.sidepunch.job.class")} == {
        "messaging.system": "sidepunch", "messaging.destination.name": "default", "messaging.message.id": jid,
        "messaging.operation.type": "process", "messaging.sidepunch.job.class": klass}


def test_the_perform_span_is_a_child_of_the_enqueue_span_for_sync_and_async_jobs(daemon, r, traced):
    client, exporter = traced
    sync = client.push({"class": "otel_app.Traced", "args": ["a"]})
    async_ = client.push({"class": "otel_app.AsyncTraced", "args": ["b"]})
    d = start(daemon)
    spans = by_jid(daemon_spans(r, 2))
    for jid, klass in ((sync, "otel_app.Traced"), (async_, "otel_app.AsyncTraced")):
        made = producer(exporter, jid)
        assert made.name == "create default" and made.attributes["messaging.system"] == "sidepunch"
        assert_child(spans[jid], made, jid, klass)
        assert spans[jid]["status"] == "UNSET" and spans[jid]["attributes"]["messaging.sidepunch.job.outcome"] == "done"
    assert sorted(x.decode() for x in r.lrange("ran", 0, -1)) == sorted([sync, async_])
    assert "tracing could not" not in d.log()


def test_failures_record_the_exception_and_whether_the_job_retries_or_dies(daemon, r, traced):
    client, exporter = traced
    retries = client.push({"class": "otel_app.Fails", "args": []})
    again = client.push({"class": "otel_app.Fails", "args": [], "retry_count": 1})  # a retry of an earlier run
    dies = client.push({"class": "otel_app.AsyncDies", "args": [], "retry": 0})  # a class name: no class options
    start(daemon)
    spans = by_jid(daemon_spans(r, 3))
    wait_for(lambda: r.zcard("retry") == 2 and r.zcard("dead") == 1, message="the retry and dead entries")
    expected = {retries: ("otel_app.Fails", "retry", "KeyError", 0, None),
                again: ("otel_app.Fails", "retry", "KeyError", 2, 1),
                dies: ("otel_app.AsyncDies", "dead", "ValueError", 0, None)}
    for jid, (klass, outcome, error, count, was) in expected.items():
        span = spans[jid]
        assert_child(span, producer(exporter, jid), jid, klass)
        assert span["status"] == "ERROR" and span["attributes"]["error.type"] == error
        assert span["attributes"]["messaging.sidepunch.job.outcome"] == outcome
        assert span["attributes"].get("messaging.sidepunch.job.retry_count") == was
        exception, fate = span["events"]
        assert exception["name"] == "exception" and exception["attributes"]["exception.type"] == error
        assert "on purpose" in exception["attributes"]["exception.message"]
        assert fate["name"] == f"sidepunch.job.{outcome}"
        assert fate["attributes"]["messaging.sidepunch.job.next_retry_count"] == count
        where = "retry" if outcome == "retry" else "dead"  # and the job is where the span says
        [stored] = [decode(m) for m in r.zrange(where, 0, -1) if decode(m)["jid"] == jid]
        assert stored["retry_count"] == count and stored["traceparent"] == decode_traceparent(exporter, jid)


def decode_traceparent(exporter, jid):
    made = producer(exporter, jid)
    return f"00-{made.context.trace_id:032x}-{made.context.span_id:016x}-{int(made.context.trace_flags):02x}"


def ruby_payload(jid, klass="otel_app.Traced", **extra):
    """A job as Ruby's Sidekiq client writes it: no trace context unless given."""
    now = time.time()
    return encode({"class": klass, "args": ["ruby"], "retry": True, "queue": "default", "jid": jid,
                   "created_at": now, "enqueued_at": now, **extra})


def test_a_payload_without_trace_context_runs_as_a_root_span(daemon, r):
    r.lpush("queue:default", ruby_payload("ruby0000000000000000000a"))
    r.sadd("queues", "default")
    start(daemon)
    [span] = daemon_spans(r, 1)
    assert span["parent_span_id"] is None and span["attributes"]["messaging.message.id"] == "ruby0000000000000000000a"
    assert span["attributes"]["messaging.sidepunch.job.outcome"] == "done"
    assert r.lrange("ran", 0, -1) == [b"ruby0000000000000000000a"]


def test_hostile_trace_context_never_stops_a_job_and_good_jobs_keep_flowing(daemon, r, traced):
    client, exporter = traced
    values = [v for v in hostile_values(__import__("random").Random(5)) if not (type(v) is str and len(v) > 10 ** 5)]
    values += ["y" * 300_000]  # one huge one is enough through Redis
    jids = []
    for n, value in enumerate(values):
        jid = f"hostile{n:017d}"
        jids.append(jid)
        fields = {"traceparent": value, "tracestate": value} if n % 2 else {"traceparent": value}
        r.lpush("queue:default", ruby_payload(jid, **fields))
    r.sadd("queues", "default")
    d = start(daemon, "--threads", "4")
    spans = by_jid(daemon_spans(r, len(values), timeout=60))
    good = client.push({"class": "otel_app.AsyncTraced", "args": ["after"]})
    wait_for(lambda: good in by_jid(daemon_spans(r, len(values) + 1)), message="the good job's span")
    assert_child(by_jid(daemon_spans(r, len(values) + 1))[good], producer(exporter, good), good,
                 "otel_app.AsyncTraced")
    ran = [x.decode() for x in r.lrange("ran", 0, -1)]
    assert sorted(ran) == sorted(jids + [good])  # every job ran, exactly once
    assert all(spans[jid]["attributes"]["messaging.sidepunch.job.outcome"] == "done" for jid in jids)
    assert all(spans[jid]["parent_span_id"] is None for jid in jids)  # none of them parses
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0 and r.llen("queue:default") == 0
    assert d.proc.poll() is None and "tracing could not" not in d.log() and "opentelemetry" not in d.log()


def test_a_job_pushed_by_a_job_continues_the_trace(daemon, r, traced):
    client, exporter = traced
    outer = client.push({"class": "otel_app.Spawns", "args": []})
    start(daemon)
    spans = daemon_spans(r, 3)
    consumers, producers = by_jid(spans), by_jid(spans, "PRODUCER")
    [inner] = [jid for jid in consumers if jid != outer]
    first = producer(exporter, outer)
    assert_child(consumers[outer], first, outer, "otel_app.Spawns")
    made_inside = producers[inner]
    assert made_inside["parent_span_id"] == consumers[outer]["span_id"] and made_inside["parent_remote"] is False
    assert consumers[inner]["parent_span_id"] == made_inside["span_id"]
    assert {s["trace_id"] for s in spans} == {f"{first.context.trace_id:032x}"}


def test_a_job_stopped_by_its_timeout_is_an_error_that_retries(daemon, r, traced):
    client, exporter = traced
    jids = {client.push({"class": klass, "args": [30], "timeout": 0.5}): klass
            for klass in ("otel_app.Sleeps", "otel_app.AsyncSleeps")}
    d = start(daemon, "--interrupt-grace", "5")
    spans = by_jid(daemon_spans(r, 2))
    wait_for(lambda: r.zcard("retry") == 2, message="both jobs in the retry set")
    for jid, klass in jids.items():
        assert_child(spans[jid], producer(exporter, jid), jid, klass)
        assert spans[jid]["status"] == "ERROR" and spans[jid]["attributes"]["messaging.sidepunch.job.outcome"] == "retry"
    assert {decode(m)["error_class"] for m in r.zrange("retry", 0, -1)} == {"sidepunch.JobTimeout"}
    assert "tracing could not" not in d.log()


def test_a_stopping_worker_exports_the_spans_its_batch_processor_still_holds(daemon, r, client):
    for i in range(3):
        client.push({"class": "otel_batch_app.Buffered", "args": [i]})
    d = daemon("--workers", "1", "--threads", "2", "-r", "otel_batch_app", "--middleware", MIDDLEWARE)
    wait_for(lambda: r.llen("ran") == 3, 20, message="the jobs")
    time.sleep(0.5)
    assert r.llen(SPANS) == 0  # held by the BatchSpanProcessor (10 minutes)
    d.signal(15)
    assert d.wait(40) == 0
    assert [json.loads(x) for x in r.lrange(SPANS, 0, -1)] == ["process default"] * 3
