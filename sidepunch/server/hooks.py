"""A worker's middleware: built once at boot from the daemon's config and from what the app registered in code.

`--middleware PATH` names a server function `mw(instance, job, queue, call_next)` or a `sidepunch.Middleware`
subclass; `--death-handler PATH` a function `handler(job, exc)`. A class is built once per worker process with
a context holding a Redis client, the clock and the daemon's config, and all its hooks run: around every perform,
at every death, and around every push this process makes through the default client (a job pushing jobs). A
Middleware the app registered with `sidepunch.configure(middleware=[...])` while it was imported runs its
server and death hooks here too: one registration covers both sides (a class registered both ways still runs
once per push and once per job). Config middleware is outermost.

Imports core and client; never the processor or the child, which call it.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import time
from typing import Any

from ..client.push import default_client
from ..core.connection import make_client
from ..core.middleware import (DeathHandler, FunctionMiddleware, Middleware, MiddlewareContext, ServerMiddleware,
                               build, hooks, load_dotted)


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
