"""`sidepunch locks [list | delete KEY]`: the locks of unique jobs, over sidepunch.api.unique (the parser's part
is in parser.py). The listing shows each lock's digest in full; `delete` takes a lock's key or digest; exit 1
when there is no such lock, 2 without a KEY. Imports core, client and api only.
"""
from __future__ import annotations

import argparse

import redis

from ..api.unique import UniqueLock, delete_unique_lock, unique_locks
from .output import Output, table
from .parser import Failure, Status

HEADERS = ("JID", "CLASS", "TTL")
#: A digest is 64 hex digits; a hostile key name under the prefix is cut past this.
DIGEST_WIDTH = 100


def cmd_locks(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    if args.action == "delete":
        if not args.key:
            raise Failure("sidepunch locks delete: give the lock's KEY (or its digest)", Status.USAGE)
        done = delete_unique_lock(r, args.key)
        out.emit({"key": args.key, "deleted": done},
                 lambda: f"deleted {args.key}" if done else f"no unique lock {args.key!r}")
        return Status.OK if done else Status.NOT_FOUND
    locks = unique_locks(r, args.limit)
    out.emit([lock.to_dict() for lock in locks], lambda: _text(locks))
    return Status.OK


def _text(locks: list[UniqueLock]) -> str:
    """One line per lock, its digest in full (what `locks delete` takes; a table would cut it), then a table of
    the rest. Output.emit escapes every line."""
    if not locks:
        return "no unique locks held"
    digests = [_cut(lock.digest, DIGEST_WIDTH) for lock in locks]
    width = max(len("DIGEST"), *map(len, digests))
    rest = table(HEADERS, [(lock.jid if lock.jid is not None else f"(not a lock value: {lock.kind})",
                            lock.job_class or "-", "-" if lock.ttl is None else f"{lock.ttl:.0f}s")
                           for lock in locks]).split("\n")
    return "\n".join(f"{digest.ljust(width)}  {line}".rstrip()
                     for digest, line in zip(["DIGEST", *digests], rest))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
