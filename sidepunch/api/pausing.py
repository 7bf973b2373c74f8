"""Queue pausing: `pause`, `unpause`, `is_paused` and `paused_queues` over keys.PAUSED, a Redis SET of queue
names (exact bytes, no `queue:` prefix). `Queue(name).pause()` / `.unpause()` / `.paused` (api/__init__.py) call
these; the CLI (admin/pausing.py) and the dashboard (web/pausing.py) too.

A paused queue keeps accepting pushes; every daemon's fetchers read the set at most once a second
(server/fetch/paused.py) and stop taking jobs from it within about a second (a blocking fetch that returns a
job of a queue paused meanwhile puts it back); jobs already running finish. Pausing a queue that has no jobs yet (or no daemon) is allowed: the
state waits in Redis. Imports core and client only.
"""
from __future__ import annotations

from typing import Any

import redis as redis_lib

from ..client.push import default_client
from ..client.validate import check_queue_name
from ..core import keys
from .records import name_key, name_of

__all__ = ["pause", "unpause", "is_paused", "paused_queues"]


def pause(redis: redis_lib.Redis, name: Any) -> bool:
    """Pause queue `name`; True if it was not paused before. TypeError / ValueError for a name no daemon could
    fetch (not a str, empty, a comma, control characters, too long: client.validate's rules)."""
    check_queue_name(name, "queue")
    return bool(redis.sadd(keys.PAUSED, name_key(name)))


def unpause(redis: redis_lib.Redis, name: Any) -> bool:
    """Let daemons fetch queue `name` again; True if it was paused. Any str is taken (a name read back from
    Redis, surrogates included), so whatever is in the set can be removed."""
    if not isinstance(name, str):
        raise TypeError(f"a queue name is a str, not {type(name).__name__}")
    return bool(redis.srem(keys.PAUSED, name_key(name)))


def is_paused(redis: redis_lib.Redis, name: str) -> bool:
    """Whether queue `name` is paused (False for a name that is no str)."""
    return isinstance(name, str) and bool(redis.sismember(keys.PAUSED, name_key(name)))


def paused_queues(redis: redis_lib.Redis | None = None) -> list[str]:
    """The paused queue names, sorted; bytes that are not UTF-8 come back as surrogates (see records.name_of).
    A key of another type under keys.PAUSED counts as nothing paused, as the daemons read it. Without `redis`,
    the configured client's connection."""
    client = redis if redis is not None else default_client().redis
    try:
        members = client.smembers(keys.PAUSED)
    except redis_lib.ResponseError:
        return []
    return sorted(name_of(m) for m in members)
