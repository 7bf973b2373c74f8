"""Fast tests of sidepunch.contrib.opentelemetry (the tracing middleware), in this process with the SDK's in-memory exporter: the trace context a push writes, the consumer span
of sync and async jobs, failures and where they go, and payloads whose trace context fields are missing or
hostile. tests/test_opentelemetry_process.py runs the same through a real daemon."""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
from types import SimpleNamespace

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import sidepunch  # noqa: E402
from sidepunch.contrib import opentelemetry as otel  # noqa: E402
from sidepunch.core import keys  # noqa: E402
from sidepunch.core.middleware import Expired, MiddlewareContext, RateLimited, Reschedule  # noqa: E402
from sidepunch.core.payload import decode  # noqa: E402

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def tracing(provider):
    """A TracingMiddleware class reporting to this test's provider, and one instance of it."""
    class Tracing(otel.TracingMiddleware):
        tracer_provider = provider
    return Tracing, Tracing(MiddlewareContext(None, config=SimpleNamespace(max_retries=25)))


class Plain:
    """A job instance as the daemon builds it (only what the middleware reads)."""
    retry = True
    cancelled = False


def pushed(r, jid=None):
    """The decoded payloads in queue:default (oldest first), or the one with `jid`."""
    jobs = [decode(raw) for raw in reversed(r.lrange("queue:default", 0, -1))]
    return jobs if jid is None else next(j for j in jobs if j["jid"] == jid)


def consumer(exporter):
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    return span


def producer_of(exporter, jid):
    [span] = [s for s in exporter.get_finished_spans()
              if s.kind is SpanKind.PRODUCER and s.attributes[otel.MESSAGE_ID] == jid]
    return span


# --- the push side ---------------------------------------------------------------------------------------


def test_a_push_writes_the_producer_spans_context_as_traceparent(r, tracing, exporter):
    client = sidepunch.Client(redis=r, middleware=[tracing[0]])
    jid = client.push({"class": "myapp.Mail", "args": [1], "queue": "mail"})
    job = decode(r.lindex("queue:mail", 0))
    span = producer_of(exporter, jid)
    match = TRACEPARENT.fullmatch(job[keys.TRACEPARENT])
    assert match and match.groups() == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert keys.TRACESTATE not in job  # empty tracestate: no field
    assert span.name == "create mail" and span.parent is None
    assert dict(span.attributes) == {"messaging.system": "sidepunch", "messaging.operation.type": "create",
                                     "messaging.operation.name": "create", "messaging.destination.name": "mail",
                                     "messaging.message.id": jid, "messaging.sidepunch.job.class": "myapp.Mail"}


def test_a_push_inside_a_span_is_its_child_and_carries_its_tracestate(r, tracing, provider, exporter):
    client = sidepunch.Client(redis=r, middleware=[tracing[0]])
    outer = provider.get_tracer("test").start_span("request")
    state = trace.TraceState([("vendor", "v1")])
    context = trace.SpanContext(outer.get_span_context().trace_id, outer.get_span_context().span_id, False,
                                trace.TraceFlags(1), state)
    with trace.use_span(trace.NonRecordingSpan(context)):
        jid = client.push({"class": "X", "args": []})
    span = producer_of(exporter, jid)
    assert span.parent.span_id == outer.get_span_context().span_id
    assert span.context.trace_id == outer.get_span_context().trace_id
    assert pushed(r, jid)[keys.TRACESTATE] == "vendor=v1"


def test_every_job_of_a_bulk_push_gets_its_own_producer_span(r, tracing, exporter):
    client = sidepunch.Client(redis=r, middleware=[tracing[0]])
    jids = client.push_bulk({"class": "X", "args": [[1], [2], [3]]})
    parents = {TRACEPARENT.fullmatch(pushed(r, jid)[keys.TRACEPARENT]).group(2) for jid in jids}
    assert parents == {f"{producer_of(exporter, jid).context.span_id:016x}" for jid in jids}
    assert len(parents) == 3


def test_a_stale_trace_context_in_the_item_is_replaced(r, tracing, exporter):
    client = sidepunch.Client(redis=r, middleware=[tracing[0]])
    jid = client.push({"class": "X", "args": [], "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                       "tracestate": "old=1"})
    job = pushed(r, jid)
    assert TRACEPARENT.fullmatch(job["traceparent"]).group(2) == f"{producer_of(exporter, jid).context.span_id:016x}"
    assert "tracestate" not in job


def test_an_async_push_inside_a_span_is_its_child(redis_server, r, tracing, provider, exporter):
    async def push():
        client = sidepunch.AsyncClient(redis_server.url, middleware=[tracing[0]])
        with provider.get_tracer("test").start_as_current_span("handler") as outer:
            await asyncio.sleep(0)
            jid = await client.push({"class": "X", "args": []})
        await client.aclose()
        return outer, jid
    outer, jid = asyncio.run(push())
    span = producer_of(exporter, jid)
    assert span.parent.span_id == outer.get_span_context().span_id
    assert TRACEPARENT.fullmatch(pushed(r, jid)[keys.TRACEPARENT]).group(2) == f"{span.context.span_id:016x}"


def test_without_an_sdk_the_payload_has_no_trace_fields(r):
    class NoSdk(otel.TracingClientMiddleware):
        tracer_provider = trace.NoOpTracerProvider()
    client = sidepunch.Client(redis=r, middleware=[NoSdk])
    jid = client.push({"class": "X", "args": [7]})
    assert set(pushed(r, jid)) == {"class", "args", "jid", "queue", "retry", "created_at", "enqueued_at"}


def test_a_push_stopped_or_refused_inside_is_marked_on_its_span(r, tracing, exporter):
    def stop(job, call_next):
        return None if job["args"] == ["stop"] else call_next(job)

    def refuse(job, call_next):
        if job["args"] == ["refuse"]:
            raise ValueError("refused by policy")
        return call_next(job)
    client = sidepunch.Client(redis=r, middleware=[tracing[0], stop, refuse])
    assert client.push({"class": "X", "args": ["stop"]}) is None
    with pytest.raises(ValueError, match="refused by policy"):
        client.push({"class": "X", "args": ["refuse"]})
    stopped, refused = exporter.get_finished_spans()
    assert stopped.attributes[otel.OUTCOME] == "stopped" and stopped.status.status_code is StatusCode.UNSET
    assert refused.status.status_code is StatusCode.ERROR and refused.attributes["error.type"] == "ValueError"
    assert r.llen("queue:default") == 0


# --- the worker side -------------------------------------------------------------------------------------


def _pushed_job(r, tracing, **item):
    client = sidepunch.Client(redis=r, middleware=[tracing[0]])
    jid = client.push({"class": "X", "args": [1], **item})
    return pushed(r, jid)


def test_a_sync_job_runs_in_a_consumer_span_child_of_its_producer(r, tracing, exporter):
    job = _pushed_job(r, tracing)
    seen = []
    result = tracing[1].around_perform(Plain(), job, "default",
                                       lambda: seen.append(trace.get_current_span().get_span_context()) or 42)
    span, made = consumer(exporter), producer_of(exporter, job["jid"])
    assert result == 42 and seen == [span.context]  # the job's own spans would be children of it
    assert span.context.trace_id == made.context.trace_id and span.parent.span_id == made.context.span_id
    assert span.parent.is_remote and span.name == "process default"
    assert dict(span.attributes) == {"messaging.system": "sidepunch", "messaging.operation.type": "process",
                                     "messaging.operation.name": "process",
                                     "messaging.destination.name": "default", "messaging.message.id": job["jid"],
                                     "messaging.sidepunch.job.class": "X", otel.OUTCOME: "done"}
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached after the job


def test_an_async_job_runs_in_a_consumer_span_child_of_its_producer(r, tracing, exporter):
    job = _pushed_job(r, tracing, retry_count=4)

    async def perform():
        await asyncio.sleep(0)
        return trace.get_current_span().get_span_context()

    async def run():
        return await tracing[1].around_perform_async(Plain(), job, "default", perform)
    seen = asyncio.run(run())
    span, made = consumer(exporter), producer_of(exporter, job["jid"])
    assert seen == span.context and span.parent.span_id == made.context.span_id
    assert span.context.trace_id == made.context.trace_id
    assert span.attributes[otel.RETRY_COUNT] == 4 and span.attributes[otel.OUTCOME] == "done"


def test_a_payload_without_trace_context_starts_a_new_trace(tracing, provider, exporter):
    job = {"class": "HardWorker", "args": [], "jid": "ruby1", "queue": "default", "retry": True}
    with trace.use_span(provider.get_tracer("test").start_span("left over in this thread")):
        tracing[1].around_perform(Plain(), job, "default", lambda: None)
    assert consumer(exporter).parent is None


@pytest.mark.parametrize("make, outcome", [(lambda: Reschedule(5), "rescheduled"),
                                           (lambda: RateLimited(5, "api"), "rate_limited")])
@pytest.mark.parametrize("how", ["raise", "return"])
def test_a_reschedule_or_rate_limit_is_no_error(tracing, exporter, make, outcome, how):
    def chain():
        if how == "raise":
            raise make()
        return make()
    job = {"class": "X", "args": [], "jid": "j"}
    try:
        tracing[1].around_perform(Plain(), job, "default", chain)
    except Reschedule:
        pass
    span = consumer(exporter)
    assert span.status.status_code is StatusCode.UNSET and span.attributes[otel.OUTCOME] == outcome
    assert [e.name for e in span.events] == [f"sidepunch.job.{outcome}"]


def test_an_expired_job_is_no_error(tracing, exporter):
    def chain():
        raise Expired()
    with pytest.raises(Expired):
        tracing[1].around_perform(Plain(), {"class": "X", "args": [], "jid": "j"}, "default", chain)
    span = consumer(exporter)
    assert span.status.status_code is StatusCode.UNSET and span.attributes[otel.OUTCOME] == "expired"


def test_a_cancelled_job_is_marked_cancelled_not_failed(tracing, exporter):
    instance = Plain()

    def perform():
        instance.cancelled = True
        raise asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        tracing[1].around_perform(instance, {"class": "X", "args": [], "jid": "j"}, "default", perform)
    span = consumer(exporter)
    assert span.attributes[otel.OUTCOME] == "cancelled" and span.status.status_code is StatusCode.UNSET


def _fail(tracing, job, instance=None, exc=None):
    exc = exc or KeyError("no such row")

    def perform():
        raise exc
    with pytest.raises(type(exc)) as raised:
        tracing[1].around_perform(instance or Plain(), job, "default", perform)
    assert raised.value is exc  # the job's own exception, untouched
    return exc


@pytest.mark.parametrize("item, outcome, count, limit", [
    ({}, "retry", 0, 25),
    ({"retry_count": 3}, "retry", 4, 25),
    ({"retry": 2, "retry_count": 0}, "retry", 1, 2),
    ({"retry": 2, "retry_count": 1}, "dead", 2, 2),
    ({"retry": 0}, "dead", 0, 0),
    ({"retry": False}, "discarded", 0, 25),
])
def test_a_failure_records_the_exception_and_where_the_job_goes(tracing, exporter, item, outcome, count, limit):
    job = {"class": "X", "args": [], "jid": "j", "retry": True, **item}
    _fail(tracing, job)
    span = consumer(exporter)
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "KeyError: 'no such row'"
    assert span.attributes["error.type"] == "KeyError" and span.attributes[otel.OUTCOME] == outcome
    exception, fate = span.events
    assert exception.name == "exception" and exception.attributes["exception.type"] == "KeyError"
    assert exception.attributes["exception.message"] == "'no such row'"
    assert "in perform" in exception.attributes["exception.stacktrace"]
    assert fate.name == f"sidepunch.job.{outcome}"
    assert dict(fate.attributes) == {otel.NEXT_RETRY_COUNT: count, otel.RETRY_LIMIT: limit}


def test_the_retry_limit_comes_from_the_daemons_config_and_the_class(provider, exporter):
    class Tracing(otel.TracingServerMiddleware):
        tracer_provider = provider
    middleware = Tracing(MiddlewareContext(None, config=SimpleNamespace(max_retries=1)))
    tracing = (Tracing, middleware)
    _fail(tracing, {"class": "X", "args": [], "jid": "a", "retry": True, "retry_count": 0})
    instance = Plain()
    instance.retry = 5
    _fail(tracing, {"class": "X", "args": [], "jid": "b", "retry_count": 0}, instance)  # no `retry`: the class's
    first, second = exporter.get_finished_spans()
    assert first.attributes[otel.OUTCOME] == "dead" and second.attributes[otel.OUTCOME] == "retry"


def test_an_exception_whose_message_raises_is_recorded_and_reraised(tracing, exporter):
    class Nasty(Exception):
        def __str__(self):
            raise SystemExit("from __str__")
    _fail(tracing, {"class": "X", "args": [], "jid": "j"}, exc=Nasty())
    span = consumer(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.message"].startswith("(the exception's message raised")


# --- hostile trace context -------------------------------------------------------------------------------


def hostile_values(rng):
    """Trace context values a payload may hold: wrong types, broken and oversized strings, near misses."""
    good = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    fixed = [None, 0, -1, 10 ** 30, 1.5, True, False, [], [good], {}, {"traceparent": good}, "", " ", "garbage",
             "00", "00-", good.upper(), good + "-", good[:-1], "ff" + good[2:], "00-" + "0" * 32 + "-" + "cd" * 8 + "-01",
             "00-" + "ab" * 16 + "-" + "0" * 16 + "-01", good.replace("-", "_"), good + "\x00", "é" * 55,
             "\u2028" + good, "x" * 10 ** 6, good * 10_000, "00-" + "ab" * 16 + "-" + "cd" * 8 + "-zz",
             [[[[["deep"]]]]], "=,=,=" * 100, ",".join(f"k{i}=v" for i in range(10_000)),
             ",".join(f"k{i}=v" for i in range(33)), "a=1\nWARNING forged log line", "a=1,a=2", "A=1", "a= ",
             "a=1,,  ,b=2\t", "t@v=x", "@v=x", "a=" + "v" * 257]
    printable = "0123456789abcdef-ABCDEF=,_ \t\x00é\U0001F600"
    generated = ["".join(rng.choice(printable) for _ in range(rng.randrange(1, 120))) for _ in range(60)]
    return fixed + generated


def test_hostile_trace_context_never_stops_a_job(tracing, exporter, caplog):
    good = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    values = hostile_values(random.Random(17))
    runs = []
    for n, (parent, state) in enumerate(itertools.chain(((v, None) for v in values), ((good, v) for v in values),
                                                        ((v, v) for v in values))):
        job = {"class": "X", "args": [n], "jid": f"j{n}", "retry": True}
        for key, value in ((keys.TRACEPARENT, parent), (keys.TRACESTATE, state)):
            if value is not None:
                job[key] = value
        assert tracing[1].around_perform(Plain(), job, "default", lambda: runs.append(n) or n) == n
    spans = exporter.get_finished_spans()
    assert runs == list(range(3 * len(values))) and len(spans) == len(runs)
    with_good_parent = spans[len(values):2 * len(values)]
    assert {s.parent.span_id for s in with_good_parent} == {0xcdcdcdcdcdcdcdcd}  # a bad tracestate is dropped
    assert all(s.attributes[otel.OUTCOME] == "done" for s in spans)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_hostile_job_fields_stay_off_the_span_or_are_cut(tracing, exporter):
    job = {"class": "X" * 5000, "args": [], "jid": ["not", "a", "string"], "retry_count": 10 ** 40,
           "retry": 10 ** 50, "wrapped": {"a": 1}}
    _fail(tracing, job)
    span = consumer(exporter)
    assert otel.MESSAGE_ID not in span.attributes and otel.RETRY_COUNT not in span.attributes
    assert span.attributes[otel.JOB_CLASS] == "X" * otel.MAX_TEXT
    assert dict(span.events[1].attributes) == {}  # counts beyond what an exporter can carry are left out


# --- tracing that fails ----------------------------------------------------------------------------------


class BrokenTracer:
    def start_span(self, *args, **kwargs):
        raise RuntimeError("exporter misconfigured")


def test_a_broken_tracer_leaves_jobs_and_pushes_alone_and_says_so_once(r, caplog):
    class Broken(otel.TracingMiddleware):
        def __init__(self, context):
            super().__init__(context)
            self.tracer = BrokenTracer()
    client = sidepunch.Client(redis=r, middleware=[Broken])
    caplog.set_level(logging.WARNING, "sidepunch.opentelemetry")
    jids = [client.push({"class": "X", "args": [i]}) for i in range(3)]
    assert [job["jid"] for job in pushed(r)] == jids and "traceparent" not in pushed(r)[0]
    middleware = client.middleware[0]
    assert [middleware.around_perform(Plain(), {"jid": "j"}, "default", lambda: i) for i in range(3)] == [0, 1, 2]
    assert asyncio.run(middleware.around_perform_async(Plain(), {}, "default", lambda: asyncio.sleep(0, "a"))) == "a"
    assert caplog.text.count("tracing could not") == 1


class Fragile(trace.NonRecordingSpan):
    """A span with a real context whose every write raises (a broken SDK or span processor)."""

    def _broken(self, *args, **kwargs):
        raise RuntimeError("the span broke")

    add_event = set_attribute = set_status = record_exception = end = _broken


def test_spans_that_break_on_every_write_change_no_job_and_no_push(r, tracing, caplog):
    real = tracing[1].tracer

    class Tracer:
        def start_span(self, *args, **kwargs):
            return Fragile(real.start_span(*args, **kwargs).get_span_context())
    tracing[1].tracer = Tracer()
    middleware = tracing[1]
    assert middleware.around_perform(Plain(), {"jid": "j"}, "default", lambda: "ran") == "ran"
    exc = _fail(tracing, {"class": "X", "args": [], "jid": "j"})  # the job's own exception, re-raised as it was
    assert isinstance(exc, KeyError)
    def later():
        raise Reschedule(1)
    with pytest.raises(Reschedule):
        middleware.around_perform(Plain(), {"jid": "j"}, "default", later)
    client = sidepunch.Client(redis=r)
    client.install([middleware])
    jid = client.push({"class": "X", "args": []})
    assert pushed(r, jid)["args"] == [] and keys.TRACEPARENT in pushed(r, jid)
    assert caplog.text.count("tracing could not") == 1


def test_a_span_that_cannot_end_does_not_undo_the_job(tracing, caplog):
    class Unendable:
        def __init__(self, span):
            self.span = span

        def __getattr__(self, name):
            return getattr(self.span, name)

        def end(self):
            raise RuntimeError("processor broke")
    real = tracing[1].tracer

    class Tracer:
        def start_span(self, *args, **kwargs):
            return Unendable(real.start_span(*args, **kwargs))
    tracing[1].tracer = Tracer()
    assert tracing[1].around_perform(Plain(), {"jid": "j"}, "default", lambda: "ran") == "ran"
    assert "tracing could not end a span" in caplog.text


def test_only_the_tracing_module_imports_opentelemetry():
    import ast
    from pathlib import Path
    package = Path(sidepunch.__file__).parent
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(name.split(".")[0] == "opentelemetry" for name in names):
                importers.add(str(path.relative_to(package)))
    assert importers == {"contrib/opentelemetry.py"}


@pytest.mark.parametrize("value, ok", [
    ("a=1", True), ("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", True), ("a=1,,  ,b=2\t", True),
    ("t0@vendor=x", True), (",".join(f"k{i}=v" for i in range(32)), True),
    (",".join(f"k{i}=v" for i in range(33)), False), ("A=1", False), ("a=1\nforged", False), ("a= ", False),
    ("a", False), ("=1", False), ("a=" + "v" * 257, False), ("@v=x", False), ("a=é", False),
])
def test_tracestate_is_read_only_when_well_formed(tracing, exporter, value, ok):
    assert otel.tracestate_ok(value) is ok
    job = {"class": "X", "args": [], "jid": "j", "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
           "tracestate": value}
    tracing[1].around_perform(Plain(), job, "default", lambda: None)
    span = consumer(exporter)
    assert span.parent.span_id == 0xcdcdcdcdcdcdcdcd
    assert bool(span.context.trace_state) is ok  # the job's span carries the vendors' entries on
