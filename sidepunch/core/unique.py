"""Unique jobs' pure half: what makes two pushes duplicates (the digest), and a job's lock: key, value, lifetime.

Shared by the client (client/unique.py computes the digest at a push and takes the lock in the push's own
round trip), the worker's `features.unique.UniqueFeature` (which releases the lock) and the admin API (which
lists locks). No I/O here. Everything read from a payload is hostile: a job whose unique fields are not what a
push writes gets no lock (its release is then a compare-and-delete that matches nothing).

The digest is SHA-256, in hex, of the JSON array [class, queue, identity], where identity is what the job
class's `unique_args(*args)` returns, or the args themselves. A payload without `unique_digest` (pushed by
Ruby, say) has the default one, computed from its own class, queue and args, the same way on every side.

Must not import: anything of sidepunch's above core.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from . import keys

#: The payload fields of a unique job: the class option, the option saying when the lock goes, and the digest.
OPTION, UNTIL, DIGEST = "unique_for", "unique_until", "unique_digest"
#: Scripts in core/lua: the push that takes locks, and the release by the lock's own job.
PUSH_SCRIPT, RELEASE_SCRIPT = "unique_push", "release_unique"
#: The longest unique window (seconds), as client/options.py checks it.
MAX_SECONDS = 10 ** 8
_HEX = frozenset("0123456789abcdef")


def digest(class_name: Any, queue: Any, identity: Any) -> str:
    """The digest of a push; TypeError if `identity` is not made of JSON values (it says what was wrong)."""
    try:
        text = json.dumps([class_name, queue, identity], sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"what identifies a unique job (its args, or what unique_args returned) must be JSON "
                        f"values (str, number, bool, None, list, dict with str keys): {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()


def window(value: Any) -> float | None:
    """A unique_for (or expires_in) value as seconds, or None if it is not a number in (0, MAX_SECONDS]."""
    if type(value) not in (int, float) or not 0 < value <= MAX_SECONDS:  # NaN fails the range test
        return None
    return float(value)


def job_digest(job: dict) -> str:
    """The digest a job's lock is under: its `unique_digest` if well-formed, else the default one."""
    given = job.get(DIGEST)
    if type(given) is str and len(given) == 64 and _HEX.issuperset(given):
        return given
    return digest(job.get("class"), job.get("queue"), job.get("args"))


def lock_value(job: dict) -> str:
    """What a lock holds: JSON [jid, class]. Its own job compares the whole value before deleting it."""
    return json.dumps([job.get("jid"), job.get("class")], separators=(",", ":"), ensure_ascii=True)


def lock_ttl_ms(job: dict, now: float, at: float | None) -> int | None:
    """The lock's lifetime in ms for a job pushed at `now`, due at `at` (None: now): unique_for, shortened to
    expires_in when that is shorter (an expired job is dropped, so its lock must not outlive its deadline),
    plus the wait of a scheduled job. None if unique_for is not a valid window (no lock)."""
    seconds = window(job.get(OPTION))
    if seconds is None:
        return None
    expires = window(job.get("expires_in"))
    if expires is not None:
        seconds = min(seconds, expires)
    if at is not None and at > now:
        seconds += at - now
    return max(1, math.ceil(seconds * 1000))


def held_lock(job: dict) -> tuple[str, str] | None:
    """(key, value) of the lock a fetched job holds if it was pushed as unique, else None."""
    if window(job.get(OPTION)) is None:
        return None
    try:
        return keys.unique_lock(job_digest(job)), lock_value(job)
    except TypeError:  # not JSON: a payload decode would not give (defensive)
        return None
