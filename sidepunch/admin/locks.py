"""`sidepunch locks [list | delete KEY]`: the locks of unique jobs, over sidepunch.api.unique (the parser's part is
in parser.py). `delete` takes a lock's key or digest; exit 1 when there is no such lock, 2 without a KEY.
Imports core, client and api only.
"""
from __future__ import annotations

import argparse

import redis

from ..api.unique import delete_unique_lock, unique_locks
from .output import Output, table
from .parser import Failure, Status

HEADERS = ("KEY", "JID", "CLASS", "TTL")


def cmd_locks(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    if args.action == "delete":
        if not args.key:
            raise Failure("sidepunch locks delete: give the lock's KEY (or its digest)", Status.USAGE)
        done = delete_unique_lock(r, args.key)
        out.emit({"key": args.key, "deleted": done},
                 lambda: f"deleted {args.key}" if done else f"no unique lock {args.key!r}")
        return Status.OK if done else Status.NOT_FOUND
    locks = unique_locks(r, args.limit)

    def text() -> str:
        rows = [(lock.key, lock.jid if lock.jid is not None else f"(not a lock value: {lock.kind})",
                 lock.job_class or "-", "-" if lock.ttl is None else f"{lock.ttl:.0f}s") for lock in locks]
        return table(HEADERS, rows) if rows else "no unique locks held"
    out.emit([lock.to_dict() for lock in locks], text)
    return Status.OK
