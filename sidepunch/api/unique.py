"""The locks of unique jobs as the admin sees them: `unique_locks()` lists them, `delete_unique_lock()` removes
one by hand (a duplicate can then be pushed), `unique_lock_of(job)` names the lock a job holds, if it holds one.

A lock is `sidepunch:unique:<digest>` (keys.unique_lock), a STRING whose value is JSON [jid, class], with a TTL.
Everything read from Redis is hostile input: a value that is not that JSON is listed with jid and class None,
a key of another type is listed with its type, never raised. Imports core and client only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from ..core import keys
from ..core.unique import held_lock

#: Locks listed at most (SCAN stops there); `sidepunch locks --limit` changes it.
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class UniqueLock:
    """One lock: its key, digest (the key without its prefix), holder's jid and class (None when the value is not
    what a push writes), seconds left (None: no TTL), and the key's Redis type ("string" when it is a lock)."""
    key: str
    digest: str
    jid: str | None
    job_class: str | None
    ttl: float | None
    kind: str = "string"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "digest": self.digest, "jid": self.jid, "class": self.job_class, "ttl": self.ttl,
                "type": self.kind}


def unique_locks(r: redis.Redis, limit: int = DEFAULT_LIMIT) -> list[UniqueLock]:
    """The locks held now (at most `limit`), sorted by key; one SCAN, then one pipelined read per 100."""
    found: list[bytes] = []
    for key in r.scan_iter(match=keys.UNIQUE_PREFIX + "*", count=1000):
        found.append(key)
        if len(found) >= limit:
            break
    found.sort()
    out: list[UniqueLock] = []
    for start in range(0, len(found), 100):
        chunk = found[start:start + 100]
        pipe = r.pipeline(transaction=False)
        for key in chunk:
            pipe.type(key)
            pipe.pttl(key)
        replies = pipe.execute()
        kinds = {key: _text(replies[2 * i]) for i, key in enumerate(chunk)}
        ttls = {key: replies[2 * i + 1] for i, key in enumerate(chunk)}
        values = _values(r, [k for k in chunk if kinds[k] == "string"])
        out += [_lock(key, kinds[key], ttls[key], values.get(key)) for key in chunk if kinds[key] != "none"]
    return out


def delete_unique_lock(r: redis.Redis, key_or_digest: str) -> bool:
    """Delete one lock, named by its key or its digest; False if there is none. Only keys under the unique
    prefix are ever deleted, whatever the argument says."""
    if not isinstance(key_or_digest, str) or not key_or_digest:
        raise TypeError(f"delete_unique_lock takes a lock key or digest (str), got {key_or_digest!r}")
    digest = key_or_digest.removeprefix(keys.UNIQUE_PREFIX)
    return bool(r.delete(keys.unique_lock(digest)))


def unique_lock_of(r: redis.Redis, job: dict[str, Any]) -> UniqueLock | None:
    """The lock `job` (a decoded payload) holds now, or None (not unique, lapsed, or held by another job)."""
    lock = held_lock(job)
    if lock is None:
        return None
    key, value = lock
    pipe = r.pipeline(transaction=False)
    pipe.type(key)
    pipe.pttl(key)
    kind, ttl = pipe.execute()
    if _text(kind) != "string" or r.get(key) != value.encode():
        return None
    return _lock(key.encode(), "string", ttl, value.encode())


def _values(r: redis.Redis, string_keys: list[bytes]) -> dict[bytes, Any]:
    return dict(zip(string_keys, r.mget(string_keys))) if string_keys else {}


def _lock(key: bytes, kind: str, pttl: Any, raw: Any) -> UniqueLock:
    name = key.decode("utf-8", "replace")
    jid = klass = None
    if isinstance(raw, bytes):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list) and len(value) == 2:
            jid = value[0] if isinstance(value[0], str) else None
            klass = value[1] if isinstance(value[1], str) else None
    ttl = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    return UniqueLock(name, name.removeprefix(keys.UNIQUE_PREFIX), jid, klass, ttl, kind)


def _text(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


__all__ = ["DEFAULT_LIMIT", "UniqueLock", "delete_unique_lock", "unique_lock_of", "unique_locks"]
