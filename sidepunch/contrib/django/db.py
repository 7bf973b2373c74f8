"""Django database hygiene for jobs: `CloseOldConnections`, a server middleware the app registers.

A worker's processor threads live for hours and each keeps its own Django database connection (Django's
connections are per thread). Django closes a request's connection when the request ends, through its
request_started / request_finished signals; a job is no request, so the same is done around each job: a
connection past CONN_MAX_AGE, or broken (the database restarted), is closed before the job runs and again after
it, and the next query opens a fresh one. Async jobs (`async def perform`) are not wrapped: the ORM is used
from them through sync_to_async, whose threads Django manages.

Imports django and sidepunch's core.
"""
from __future__ import annotations

from typing import Any, Callable

from django.db import close_old_connections

from ...core.middleware import Middleware


class CloseOldConnections(Middleware):
    """Around each sync job: close this thread's expired or unusable Django connections, as a request does."""

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        close_old_connections()
        try:
            return call_next()
        finally:
            close_old_connections()
