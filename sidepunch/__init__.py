"""Sidepunch: Sidekiq-compatible background jobs for Python.

Client side: `Job`, `@job`, `Client`, `AsyncClient` (for asyncio code: `await Job.aperform_async(...)`),
`configure`. The daemon is `sidepunchd` (sidepunch.cli); the admin API is sidepunch.api. Importing this package
connects to nothing and reads no environment variable.
"""
__version__ = "0.1.0"

from .client.push import Client, configure, default_client  # noqa: E402
from .client.aio import AsyncClient, default_async_client  # noqa: E402
from .core.errors import JobTimeout  # noqa: E402
from .core.middleware import Middleware, MiddlewareContext, Outcome, Reschedule  # noqa: E402
from .client.job import Job, JobSetter, job  # noqa: E402
from .core.payload import PayloadError  # noqa: E402

__all__ = ["AsyncClient", "Client", "Job", "JobSetter", "JobTimeout", "Middleware", "MiddlewareContext", "Outcome",
           "PayloadError", "Reschedule", "configure", "default_async_client", "default_client", "job", "__version__"]
