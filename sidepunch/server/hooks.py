"""A worker's middleware: built once at boot from the daemon's config and from what the app registered in code.

`--middleware PATH` names a server function `mw(instance, job, queue, call_next)` or a `sidepunch.Middleware`
subclass; `--death-handler PATH` a function `handler(job, exc)`; `--error-handler PATH` a function
`handler(exc, job)` called after every failure (load_error_handlers, failure_hook). A class is built once
per worker process with a context holding a Redis client, the clock and the daemon's config, and all its hooks
run: around every perform, at every death, and around every push this process makes through the default client
(a job pushing jobs). A Middleware the app registered with `sidepunch.configure(middleware=[...])` while it
was imported runs its server and death hooks here too: one registration covers both sides (a class registered
both ways still runs once per push and once per job). Config middleware is outermost.

Imports core and client; never the processor or the child, which call it.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from ..client.push import default_client
from ..core.connection import make_client
from ..core.middleware import (DeathHandler, FunctionMiddleware, Middleware, MiddlewareContext, ServerMiddleware,
                               build, hooks, load_dotted)

log = logging.getLogger("sidepunch.hooks")


def load_middleware(config: Any) -> tuple[tuple[ServerMiddleware, ...], tuple[DeathHandler, ...],
                                          tuple[Any, ...]]:
    """(the sync perform chain, the death handlers, the async perform chain) for this worker; installs the push
    hooks on its default client.

    Raises ImportError, AttributeError or TypeError naming a path that is not a function or Middleware class,
    and whatever a Middleware's constructor raises: the worker cannot boot without its middleware.
    """
    context = MiddlewareContext(lambda: make_client(config.redis_url), clock=time.time, config=config)
    configured = [build(load_dotted(path), context, "around_perform") for path in config.middleware]
    deaths = [FunctionMiddleware("on_death", load_dotted(path)) for path in config.death_handlers]
    client = default_client()
    classes = [mw for mw in configured if not isinstance(mw, FunctionMiddleware)]
    # A class registered both ways runs once on each side: in code it already wraps this client's pushes.
    in_code = [mw for mw in client.middleware if not isinstance(mw, FunctionMiddleware)]
    client.install([mw for mw in classes if type(mw) not in {type(c) for c in in_code}])
    in_code = [mw for mw in in_code if type(mw) not in {type(c) for c in classes}]
    everything: list[Middleware] = [*configured, *in_code, *deaths]
    return hooks(everything, "around_perform"), hooks(everything, "on_death"), hooks(everything, "around_perform_async")


def load_error_handlers(paths: tuple[str, ...]) -> tuple[tuple[str, Callable[..., Any]], ...]:
    """(path, function) of each --error-handler; ValueError (one line) names a path that does not load."""
    handlers = []
    for path in paths:
        try:
            handlers.append((path, load_dotted(path)))
        except Exception as exc:  # what importing the handler's module raised
            message = " ".join(str(exc).split())[:300]
            raise ValueError(f"--error-handler {path[:200]!r} cannot be loaded: {type(exc).__name__}: "
                             f"{message}") from None
    return tuple(handlers)


def failure_hook(handlers: Sequence[tuple[str, Callable[..., Any]]],
                 counters: Any) -> Callable[[dict, BaseException, Any], None] | None:
    """What runs after a failure is recorded (Outcomes.fail): each error handler, called with (exception, job),
    and, with --metrics-port, the count of where the failure went (retry or dead). None if nothing is to run."""
    note = getattr(counters, "note", None)
    if not handlers and note is None:
        return None

    def on_failure(job: dict, exc: BaseException, outcome: Any) -> None:
        if note is not None and outcome in ("retry", "dead"):
            note("retried" if outcome == "retry" else "dead")
        if handlers:
            call_error_handlers(handlers, exc, job)
    return on_failure


def call_error_handlers(handlers: Sequence[tuple[str, Callable[..., Any]]], exc: BaseException, job: dict) -> None:
    """Call each handler; what they raise is logged in one line for this failure, never propagated."""
    problems = []
    for path, handler in handlers:
        try:
            handler(exc, job)
        except BaseException as problem:  # a handler must never take the worker down (SystemExit included)
            problems.append(f"{path}: {type(problem).__name__}: {' '.join(str(problem).split())[:300]}")
    if problems:
        log.warning("error handler(s) raised while reporting the failure of %.200s jid=%.100s: %s",
                    job.get("class"), job.get("jid"), "; ".join(problems))
