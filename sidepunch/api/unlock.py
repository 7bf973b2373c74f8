"""Releasing the unique locks of jobs an admin removed: a payload deleted from a queue or a set, killed to the
dead set, cleared with its queue or set, or cancelled while it waited no longer holds its lock (as Sidekiq
Enterprise does when a job is deleted through its API or Web UI), so a duplicate can be pushed again at once.

A lock is only released by the compare-and-delete the worker uses (core/lua/release_unique.lua): only if it
still holds that job's own value, never the lock a duplicate took since. Payloads are hostile input: only those
whose bytes mention `unique_for` are decoded (a cheap pre-filter, so plain jobs cost a substring test), and one
that does not decode strictly or carries no valid window holds no lock. Locks go in pipelined round trips of
RELEASE_BATCH. A release that meets a Redis error is logged and left to the lock's TTL: the removal itself was
done and is not undone or reported as failed.

`clear_key` empties a queue or set and releases the locks of what it held: in one MULTI the key is renamed
aside (keys.clearing) with a TTL, so the clear is as atomic as an UNLINK and a crash mid-way leaves nothing
for good; its entries are then read in chunks and the aside key unlinked.

Imports core only.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Callable, Iterable

import redis

from ..core import keys, scripts
from ..core.payload import PayloadError, decode
from ..core.unique import RELEASE_SCRIPT, held_lock

log = logging.getLogger("sidepunch.unique")
#: Locks released per pipelined round trip; entries read per chunk when a cleared key is scanned.
RELEASE_BATCH = 100
CLEAR_CHUNK = 1000
#: Seconds a cleared key set aside lives if the clear stops half-way (a crash, an outage).
ASIDE_TTL = 3600
_MARK = b'"unique_for"'


def locks_of(payloads: Iterable[bytes | str]) -> list[tuple[str, str]]:
    """(key, value) of each lock these payloads hold if they were pushed as unique (duplicates once)."""
    found: dict[tuple[str, str], None] = {}
    for raw in payloads:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        if not isinstance(data, bytes) or _MARK not in data:
            continue
        try:
            lock = held_lock(decode(data))
        except (PayloadError, TypeError, ValueError):
            continue
        if lock is not None:
            found[lock] = None
    return list(found)


def release_locks(r: redis.Redis, payloads: Iterable[bytes | str]) -> int:
    """Release the locks the removed `payloads` still hold; returns how many were released."""
    locks = locks_of(payloads)
    if not locks:
        return 0
    script = scripts.unbound(RELEASE_SCRIPT)
    released = 0
    try:
        for start in range(0, len(locks), RELEASE_BATCH):
            pipe = r.pipeline(transaction=False)
            for key, value in locks[start:start + RELEASE_BATCH]:
                script(keys=[key], args=[value], client=pipe)
            released += sum(1 for reply in pipe.execute(raise_on_error=False) if reply == 1)
    except redis.RedisError as exc:
        log.warning("could not release the unique locks of removed jobs (%s): they lapse by their TTL", exc)
    return released


def clear_key(r: redis.Redis, key: str, kind: str, also: Callable[[Any], None] | None = None) -> int:
    """Empty `key` (a "zset" or a "list") in one MULTI, with `also(pipe)`'s commands, and release the locks its
    entries held; returns how many entries it held. Redis errors of the MULTI are raised, as before."""
    aside = keys.clearing(secrets.token_hex(12))
    pipe = r.pipeline(transaction=True)
    pipe.zcard(key) if kind == "zset" else pipe.llen(key)
    pipe.rename(key, aside)  # an error if there is no such key: then there is nothing to release
    pipe.expire(aside, ASIDE_TTL)
    if also is not None:
        also(pipe)
    replies = pipe.execute(raise_on_error=False)
    moved = replies[1] is True
    try:
        error = next((reply for i, reply in enumerate(replies) if i != 1 and isinstance(reply, Exception)), None)
        if error is not None:
            raise error
        if moved:
            _release_aside(r, aside, kind)
    finally:
        if moved:
            r.unlink(aside)
    return int(replies[0])


def _release_aside(r: redis.Redis, aside: str, kind: str) -> None:
    """Release the locks of the entries of a cleared key set aside (private to this call: it does not change)."""
    read = r.zrange if kind == "zset" else r.lrange
    start = 0
    while True:
        try:
            rows = read(aside, start, start + CLEAR_CHUNK - 1)
        except redis.ResponseError:  # a key of another type stood under the name: it holds no job
            return
        if not rows:
            return
        release_locks(r, rows)
        start += len(rows)


__all__ = ["release_locks", "clear_key", "locks_of"]
