"""Testing modes for code that pushes jobs, the way Sidekiq::Testing works, hooked only at the client's write seam.

- `with sidepunch.testing.fake() as jobs:` every push of the process is kept in memory (`jobs.jobs()`,
  `jobs.drain()`, `jobs.drain(until=...)`, `await jobs.adrain()`, `jobs.clear()`); see fake.py.
- `with sidepunch.testing.inline():` every push runs its jobs at once, in process; see inline.py.

Both take `server_middleware=`: None (the default) runs around each job the perform hooks of the middleware
registered with `sidepunch.configure()`, as a worker does; a list runs exactly those (`[]`: none). Client
middleware always runs, at the push, as in production. Death handlers, retries, timeouts and cancellation do not
apply: what a job raises reaches the test.

A mode covers every push of the process (every client, every thread) while its `with` block runs, and only then:
leaving the block, even by an exception, restores normal pushes. Modes nest (the innermost wins). The pytest
fixtures `sidepunch_fake`, `sidepunch_inline` and `sidepunch_redis` come from the top-level module
sidepunch_pytest, registered as a pytest plugin by the package's entry point.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

from typing import Any, Sequence

from .fake import FakeJobs
from .inline import Inline
from .runner import UnknownJob

__all__ = ["FakeJobs", "Inline", "UnknownJob", "fake", "inline"]


def fake(*, server_middleware: Sequence[Any] | None = None) -> FakeJobs:
    """Collect pushes in memory while the returned context manager is entered: `with fake() as jobs:`."""
    return FakeJobs(server_middleware)


def inline(*, server_middleware: Sequence[Any] | None = None) -> Inline:
    """Run every push's jobs at once while the returned context manager is entered: `with inline():`."""
    return Inline(server_middleware)
