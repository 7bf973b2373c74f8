"""An app for the tracing tests: it sets up the OpenTelemetry SDK in the worker that imports it, with an
exporter that writes each finished span as JSON to the Redis list `otel:spans`, so a test in another process
reads what the daemon traced. Its jobs report to Redis too (`RPUSH ran <jid>`).

Run with `-r otel_app --middleware sidepunch.contrib.opentelemetry.TracingMiddleware`. Only daemons import it
(it sets the process's global tracer provider).
"""
import asyncio
import json
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import sidepunch

SPANS = "otel:spans"


def _redis():
    return sidepunch.default_client().redis


def span_record(span):
    """A finished SDK span as plain JSON: ids in hex, attributes, events, status."""
    parent = span.parent
    return {"name": span.name, "kind": span.kind.name, "trace_id": f"{span.context.trace_id:032x}",
            "span_id": f"{span.context.span_id:016x}",
            "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
            "parent_remote": parent.is_remote if parent is not None else None,
            "attributes": dict(span.attributes), "status": span.status.status_code.name,
            "description": span.status.description,
            "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in span.events]}


class RedisListExporter(SpanExporter):
    """Synchronous (with SimpleSpanProcessor): a span is in Redis once the job that made it is recorded."""

    def export(self, spans):
        _redis().rpush(SPANS, *[json.dumps(span_record(s)) for s in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self):
        return None


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(RedisListExporter()))
trace.set_tracer_provider(provider)


class Traced(sidepunch.Job):
    def perform(self, value):
        _redis().rpush("ran", self.jid)


class AsyncTraced(sidepunch.Job):
    async def perform(self, value):
        await asyncio.sleep(0)
        _redis().rpush("ran", self.jid)


class Fails(sidepunch.Job):
    retry = 3

    def perform(self):
        _redis().rpush("ran", self.jid)
        raise KeyError("fails on purpose")


class AsyncDies(sidepunch.Job):
    retry = 0

    async def perform(self):
        _redis().rpush("ran", self.jid)
        raise ValueError("dies on purpose")


class Spawns(sidepunch.Job):
    """Pushes a Traced from inside the job: the worker's default client carries the server middleware's
    around_push, so that push is a producer span under this job's consumer span."""

    def perform(self):
        _redis().rpush("ran", self.jid)
        Traced.perform_async("spawned")


class Sleeps(sidepunch.Job):
    """Runs past its timeout (pushed with "timeout")."""

    def perform(self, seconds):
        _redis().rpush("ran", self.jid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # short sleeps: the interrupt lands between two of them
            time.sleep(0.01)


class AsyncSleeps(sidepunch.Job):
    async def perform(self, seconds):
        _redis().rpush("ran", self.jid)
        await asyncio.sleep(seconds)
