"""OpenTelemetry tracing for Sidepunch: a producer span around every push and a consumer span around every job.

- `TracingClientMiddleware` (`around_push`): starts a PRODUCER span "create <queue>" for each job pushed (a
  bulk push gives one per job) and writes its context into the payload as the W3C Trace Context fields
  `traceparent` and `tracestate` (top-level keys, see keys.TRACEPARENT; Sidekiq ignores them). The span covers
  building the message: the Redis write follows, one round trip for the whole push, hence "create" in the
  messaging semantic conventions rather than "send".
- `TracingServerMiddleware` (`around_perform`, `around_perform_async`): runs each job, sync or async, inside a
  CONSUMER span "process <queue>" whose parent is the context the payload carries (the producer span), or a
  new trace for a payload without one (a Ruby client, a job pushed before tracing was on). A failure records
  the exception, sets status ERROR and says where the job goes: retry, dead or discarded, decided by the rules
  of core/retries.py (the daemon's RetryPolicy's; tests/test_retries.py checks that they agree).
- `TracingMiddleware`: both, for `--middleware` (jobs, and pushes made from jobs) or `configure()`.

Tracing never changes how a job runs or ends: a trace context field that is not a string of sane length, or
that does not parse, is ignored (a bad traceparent: the span starts a new trace); an error of the tracing SDK is logged once per
middleware and the job runs untraced. Spans go to whatever TracerProvider the process has (the global one,
or a subclass's `tracer_provider`); with none set, the API's no-op tracer costs next to nothing and writes
no field.

Imports opentelemetry-api (the `opentelemetry` extra), sidepunch's core and its __version__; nothing in sidepunch
imports this module.
"""
from __future__ import annotations

import logging
import re
import traceback
from typing import Any, Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from ..core import keys, retries
from ..core.middleware import Expired, Middleware, MiddlewareContext, RateLimited, Reschedule

log = logging.getLogger("sidepunch.opentelemetry")

# Attribute names: the messaging semantic conventions', then ours under messaging.sidepunch.* (the
# conventions' place for a system's own attributes, like messaging.kafka.*).
SYSTEM, SYSTEM_NAME = "messaging.system", "sidepunch"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"
JOB_CLASS = "messaging.sidepunch.job.class"
#: The payload's retry_count when the run started (Sidekiq's: absent on the first run, 0 on the first retry).
RETRY_COUNT = "messaging.sidepunch.job.retry_count"
#: How the run ended: done, retry, dead, discarded, cancelled, rescheduled, rate_limited or expired.
OUTCOME = "messaging.sidepunch.job.outcome"
#: On the retry / dead / discarded event: the retry_count the failure writes, and the job's retry limit.
NEXT_RETRY_COUNT = "messaging.sidepunch.job.next_retry_count"
RETRY_LIMIT = "messaging.sidepunch.job.retry_limit"

#: The longest trace context fields read from a payload (a version-00 traceparent has 55 characters; W3C
#: bounds tracestate at 32 members); a longer value is ignored, never parsed.
MAX_TRACEPARENT = 256
MAX_TRACESTATE = 8192
MAX_TEXT = 200           # class names and jids put on spans
MAX_MESSAGE = 10_000     # exception messages and stack traces put on spans
INT64 = range(-2 ** 63, 2 ** 63)  # what an OTLP exporter can carry; a payload's integers may be bigger


# W3C Trace Context's tracestate list member: key "=" value (the spec's grammar, level 1).
_TRACESTATE_MEMBER = re.compile(r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
                                r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
MAX_TRACESTATE_MEMBERS = 32


class PayloadGetter(Getter[Mapping[str, Any]]):
    """Reads trace context fields from a decoded payload: a string of sane length, or nothing at all (a
    number, a list, an object or a huge string from a hostile payload never reaches the propagator). A
    tracestate must also follow W3C's grammar: the API logs a warning quoting each malformed one, and a
    payload's text must not reach the log, once per job, newlines and all."""

    LIMITS = {keys.TRACEPARENT: MAX_TRACEPARENT, keys.TRACESTATE: MAX_TRACESTATE}

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        """[value] if the payload's `key` is a non-empty string within its limit (and, for tracestate, well
        formed), else None."""
        value = carrier.get(key)
        if type(value) is not str or not 0 < len(value) <= self.LIMITS.get(key, MAX_TRACEPARENT):
            return None
        if key == keys.TRACESTATE and not tracestate_ok(value):
            return None
        return [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        """The trace context fields the payload has."""
        return [key for key in self.LIMITS if key in carrier]


PAYLOAD_GETTER = PayloadGetter()


def tracestate_ok(value: str) -> bool:
    """True if `value` is a W3C tracestate list the propagator reads without a complaint: at most 32
    members, each key=value (empty members and spaces or tabs around them allowed)."""
    members = [member.strip(" \t") for member in value.split(",")]
    members = [member for member in members if member]
    return len(members) <= MAX_TRACESTATE_MEMBERS and all(_TRACESTATE_MEMBER.fullmatch(m) for m in members)


class _Tracing(Middleware):
    """What both sides share: the tracer, the propagator, and one warning when tracing itself fails.

    Subclass to change `tracer_provider` (None: the global one, looked up lazily, so the provider may be set
    after the middleware is built) or `propagator` (W3C Trace Context, the two fields keys.py documents)."""

    tracer_provider: Any = None
    propagator: TextMapPropagator = TraceContextTextMapPropagator()

    def __init__(self, context: MiddlewareContext | None) -> None:
        super().__init__(context)
        self.tracer = trace.get_tracer("sidepunch", __version__, tracer_provider=self.tracer_provider)
        self._complained = False

    #: How long a stopping worker waits for its buffered spans to be exported (close()).
    flush_millis = 5000

    def close(self) -> None:
        """The worker stops (it leaves with os._exit, so the SDK's own exit hook never runs): export the spans a
        BatchSpanProcessor still holds, waiting at most flush_millis."""
        provider = self.tracer_provider or trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            try:
                flush(self.flush_millis)
            except Exception:
                self._trouble("flush its spans at exit")

    def _trouble(self, what: str) -> None:
        """Log the first tracing failure of this middleware with its traceback; later ones are not logged."""
        if not self._complained:
            self._complained = True
            log.warning("tracing could not %s; the job goes on (logged once per process)", what, exc_info=True)

    def _close(self, span: Span, token: Any) -> None:
        """Detach the span's context (if it was attached) and end the span."""
        try:
            if token is not None:
                otel_context.detach(token)
            span.end()
        except Exception:
            self._trouble("end a span")


class TracingClientMiddleware(_Tracing):
    """The push side: a producer span per job, its context written into the payload."""

    def around_push(self, job: dict, call_next: Callable[[dict], Any]) -> Any:
        """Start the producer span, inject its context into `job`, push with it as the current span."""
        span = self._producer(job)
        if span is None:
            return call_next(job)
        token = _attach(span, None)
        try:
            result = call_next(job)
        except BaseException as exc:
            self._pushed(span, token, exc, None)
            raise
        self._pushed(span, token, None, result)
        return result

    def _pushed(self, span: Span, token: Any, exc: BaseException | None, result: Any) -> None:
        try:
            if exc is not None:
                _mark_error(span, exc)  # e.g. an inner middleware refused the job
            elif result is None or result is False:
                _set(span, OUTCOME, "stopped")  # an inner middleware kept the job out of Redis
        except Exception:
            self._trouble("record how a push ended")
        self._close(span, token)

    def _producer(self, job: dict) -> Span | None:
        try:
            queue = job.get("queue")
            queue = queue if type(queue) is str else "default"
            span = self.tracer.start_span(f"create {queue}", kind=SpanKind.PRODUCER,
                                          attributes=_job_attributes(job, queue, "create"))
        except Exception:
            self._trouble("start a producer span")
            return None
        try:
            if span.get_span_context().is_valid:  # no SDK: the payload is left as it is
                job.pop(keys.TRACEPARENT, None)
                job.pop(keys.TRACESTATE, None)  # a stale one must not ride along with the new traceparent
                self.propagator.inject(job, context=trace.set_span_in_context(span))
        except Exception:
            self._trouble("write the trace context into the payload")
        return span


class TracingServerMiddleware(_Tracing):
    """The worker side: a consumer span per job, sync or async, child of the span that pushed it."""

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        """Run a sync job inside its consumer span."""
        scope = self._consumer(job, queue)
        if scope is None:
            return call_next()
        try:
            result = call_next()
        except BaseException as exc:
            self._ended(scope, instance, job, exc)
            raise
        self._ended(scope, instance, job, result if isinstance(result, Reschedule) else None)
        return result

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        """Run an async job inside its consumer span (the job's task has a context of its own)."""
        scope = self._consumer(job, queue)
        if scope is None:
            return await call_next()
        try:
            result = await call_next()
        except BaseException as exc:
            self._ended(scope, instance, job, exc)
            raise
        self._ended(scope, instance, job, result if isinstance(result, Reschedule) else None)
        return result

    def _consumer(self, job: dict, queue: str) -> tuple[Span, Any] | None:
        """(the consumer span, the token of its attached context), or None if tracing failed."""
        parent = self._parent(job)
        try:
            span = self.tracer.start_span(f"process {queue}", context=parent, kind=SpanKind.CONSUMER,
                                          attributes=_job_attributes(job, queue, "process"))
        except Exception:
            self._trouble("start a consumer span")
            return None
        return span, _attach(span, parent)

    def _parent(self, job: dict) -> Context:
        """The context the payload carries, or an empty one (the span starts a trace) if it has none, or a
        broken one. Never the thread's current context: a job's parent is whoever pushed it."""
        try:
            return self.propagator.extract(job, context=Context(), getter=PAYLOAD_GETTER)
        except Exception:  # a propagator that chokes on a value: the job is traced from a new root
            return Context()

    def _ended(self, scope: tuple[Span, Any], instance: Any, job: dict, exc: BaseException | None) -> None:
        span, token = scope
        try:
            if exc is None:
                _set(span, OUTCOME, "done")
            elif isinstance(exc, Expired):
                _set(span, OUTCOME, "expired")  # its deadline passed: dropped without running, not a failure
            elif isinstance(exc, Reschedule):  # RateLimited too: back in the schedule, not a failure
                outcome = "rate_limited" if isinstance(exc, RateLimited) else "rescheduled"
                _set(span, OUTCOME, outcome)
                span.add_event(f"sidepunch.job.{outcome}", {"messaging.sidepunch.job.delay": exc.seconds})
            elif getattr(instance, "cancelled", False) is True:  # stopped by sidepunch.api.cancel: not retried
                _set(span, OUTCOME, "cancelled")
            else:
                _mark_error(span, exc)
                self._mark_fate(span, instance, job)
        except Exception:
            self._trouble("record how a job ended")
        self._close(span, token)

    def _mark_fate(self, span: Span, instance: Any, job: dict) -> None:
        """Where the failure sends the job, by the rules the daemon's RetryPolicy applies (core/retries.py)."""
        config = self.context.config if self.context is not None else None
        max_retries = getattr(config, "max_retries", retries.DEFAULT_MAX_RETRIES)
        if type(max_retries) is not int:
            max_retries = retries.DEFAULT_MAX_RETRIES
        outcome, count, limit = retries.predict(job, instance, max_retries)
        _set(span, OUTCOME, outcome.value)
        event = {name: value for name, value in ((NEXT_RETRY_COUNT, count), (RETRY_LIMIT, limit)) if value in INT64}
        span.add_event(f"sidepunch.job.{outcome.value}", event)


class TracingMiddleware(TracingClientMiddleware, TracingServerMiddleware):
    """Both sides in one class: with `--middleware` it traces every job and every push a job makes."""


def _attach(span: Span, parent: Context | None) -> Any:
    """Make `span` current (on top of `parent`, so what the propagator extracted besides the span stays);
    returns the token to detach, or None."""
    try:
        return otel_context.attach(trace.set_span_in_context(span, parent))
    except Exception:
        return None


def _job_attributes(job: Mapping[str, Any], queue: str, operation: str) -> dict[str, Any]:
    """The messaging attributes of a span about `job`; fields of the wrong type or size are left out."""
    attributes: dict[str, Any] = {SYSTEM: SYSTEM_NAME, OPERATION_TYPE: operation, OPERATION_NAME: operation,
                                  DESTINATION: queue}
    jid = job.get("jid")
    if type(jid) is str:
        attributes[MESSAGE_ID] = jid[:MAX_TEXT]
    for field in ("wrapped", "class"):  # ActiveJob's real class first, as Sidekiq's tools show it
        klass = job.get(field)
        if type(klass) is str and klass:
            attributes[JOB_CLASS] = klass[:MAX_TEXT]
            break
    count = job.get("retry_count")
    if type(count) is int and count in INT64:
        attributes[RETRY_COUNT] = count
    return attributes


def _set(span: Span, name: str, value: Any) -> None:
    span.set_attribute(name, value)


def _mark_error(span: Span, exc: BaseException) -> None:
    """The exception as the semantic conventions' "exception" event, `error.type` and status ERROR. Reads the
    exception with care: its message or its traceback may raise, and it is re-raised as it was all the same."""
    kind = _type_name(exc)
    message = _message(exc)
    span.add_event("exception", {"exception.type": kind, "exception.message": message,
                                 "exception.stacktrace": _stacktrace(exc)})
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"[:MAX_TEXT]))


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" or type(module) is not str else f"{module}.{kind.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:MAX_MESSAGE]
    except BaseException:  # noqa: B036 - a job's __str__ may raise anything; the job's own failure stands
        return "(the exception's message raised an exception)"


def _stacktrace(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_tb(exc.__traceback__))[-MAX_MESSAGE:]
    except Exception:
        return ""


__all__ = ["TracingClientMiddleware", "TracingServerMiddleware", "TracingMiddleware", "PayloadGetter",
           "PAYLOAD_GETTER"]
