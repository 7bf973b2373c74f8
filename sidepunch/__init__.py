"""Sidepunch: Sidekiq-compatible background jobs for Python.

Client side: `Job`, `@job`, `Client`, `AsyncClient` (for asyncio code: `await Job.aperform_async(...)`),
`configure`. The daemon is `sidepunchd` (sidepunch.cli); the admin API is sidepunch.api. `Manager` runs jobs inside
the current process (sidepunch.server.manager); it is imported on first use, so an app that only enqueues never
loads the server's code. Importing this package connects to nothing and reads no environment variable.
"""
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .client.push import Client, configure, default_client  # noqa: E402
from .client.aio import AsyncClient, default_async_client  # noqa: E402
from .core.errors import JobTimeout  # noqa: E402
from .core.middleware import Middleware, MiddlewareContext, Outcome, Reschedule  # noqa: E402
from .client.job import Job, JobSetter, job  # noqa: E402
from .core.payload import PayloadError  # noqa: E402

__all__ = ["AsyncClient", "Client", "Job", "JobSetter", "JobTimeout", "Middleware", "MiddlewareContext", "Outcome",
           "PayloadError", "Reschedule", "configure", "default_async_client", "default_client", "job", "__version__"]

if TYPE_CHECKING:
    from .server.manager import Manager


def __getattr__(name: str) -> Any:
    """`sidepunch.Manager`, imported on first use (left out of __all__ so `import *` does not load it either)."""
    if name == "Manager":
        from .server.manager import Manager
        return Manager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
