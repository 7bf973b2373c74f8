"""Sidepunch: Sidekiq-compatible background jobs for Python.

Client side: `Job`, `@job`, `@periodic` (cron schedules), `Client`, `AsyncClient` (for asyncio code: `await Job.aperform_async(...)`),
`configure`. The daemon is `sidepunchd` (sidepunch.cli); the admin API is sidepunch.api. `Manager` runs jobs inside
the current process (sidepunch.server.manager). Importing this package connects to nothing, reads no environment
variable and imports nothing of sidepunch's: every name below is imported on first use (PEP 562), so
`import sidepunch.server.cli` does not load redis-py into sidepunchd's master, and an app that only enqueues never
loads the server's code.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each exported name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "Client": ".client.push", "configure": ".client.push", "default_client": ".client.push",
    "AsyncClient": ".client.aio", "default_async_client": ".client.aio",
    "JobTimeout": ".core.errors", "ResultTimeout": ".core.errors", "ResultError": ".core.errors",
    "Middleware": ".core.middleware", "MiddlewareContext": ".core.middleware", "Outcome": ".core.middleware",
    "Reschedule": ".core.middleware",
    "Job": ".client.job", "JobSetter": ".client.job", "job": ".client.job",
    "PayloadError": ".core.payload",
    "Manager": ".server.manager",
    "periodic": ".client.periodic",
    "Batch": ".client.batch",
    "ReliablePushFull": ".client.reliable",
}

# Not Manager: `from sidepunch import *` in a web app must not load the daemon's code.
#: Subpackages reachable as attributes after a plain `import sidepunch` (imported on first use).
_SUBMODULES = frozenset({"api", "limits", "testing"})

__all__ = ["AsyncClient", "Batch", "Client", "Job", "JobSetter", "JobTimeout", "Middleware",
           "MiddlewareContext", "Outcome", "PayloadError", "ReliablePushFull", "Reschedule", "ResultError",
           "ResultTimeout", "configure", "default_async_client", "default_client", "job", "periodic", "__version__"]

if TYPE_CHECKING:
    from .client.aio import AsyncClient, default_async_client
    from .client.batch import Batch
    from .client.reliable import ReliablePushFull
    from .client.job import Job, JobSetter, job
    from .client.periodic import periodic
    from .client.push import Client, configure, default_client
    from .core.errors import JobTimeout, ResultError, ResultTimeout
    from .core.middleware import Middleware, MiddlewareContext, Outcome, Reschedule
    from .core.payload import PayloadError
    from .server.manager import Manager


def __getattr__(name: str) -> Any:
    """Import an exported name on first use and keep it here (the next lookup does not come back).
    `Manager` is left out of __all__, so `import *` loads the client but not the server."""
    if name in _SUBMODULES:  # `import sidepunch` then `sidepunch.api.Queue(...)`, as the README writes it
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
