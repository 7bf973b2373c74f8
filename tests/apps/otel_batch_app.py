"""A tracing app whose spans wait in a BatchSpanProcessor for ten minutes: they reach the Redis list `otel:spans`
only if the worker flushes them when it stops (the tracing middleware's close()). Run with
`-r otel_batch_app --middleware sidepunch.contrib.opentelemetry.TracingMiddleware`; daemons only."""
import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import sidepunch


class RedisNames(SpanExporter):
    def export(self, spans):
        sidepunch.default_client().redis.rpush("otel:spans", *[json.dumps(s.name) for s in spans])
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(RedisNames(), schedule_delay_millis=600_000))
trace.set_tracer_provider(provider)


class Buffered(sidepunch.Job):
    def perform(self, value):
        sidepunch.default_client().redis.rpush("ran", value)
