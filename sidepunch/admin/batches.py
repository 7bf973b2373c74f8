"""`sidepunch batches` (the batches, newest first, with their progress) and `sidepunch batch BID` (one batch's
status and its pending and failed jobs), over sidepunch.api.BatchStatus and BatchSet (the parser's part is in
parser.py). `batch` exits 1 for an unknown or expired BID. Imports core, client and api only.
"""
from __future__ import annotations

import argparse
from typing import Any

import redis

from ..api.batches import BatchSet, BatchStatus
from .output import Output, table, when
from .parser import Status

HEADERS = ("BID", "DESCRIPTION", "STATE", "DONE", "TOTAL", "PENDING", "FAILURES", "CREATED")
#: How many pending and failed jids `sidepunch batch BID` prints (the JSON output has them all).
SHOWN_JIDS = 20


def cmd_batches(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    batches = BatchSet(r).list(limit=args.limit)
    data: list[dict[str, Any]] = [b.to_dict() for b in batches]

    def text() -> str:
        rows = [(b.bid, b.description[:40] or "-", b.state, f"{b.progress:.0%}", b.total, b.pending, b.failures,
                 when(b.created_at)) for b in batches]
        return table(HEADERS, rows) if rows else "no batches"
    out.emit(data, text)
    return Status.OK


def cmd_batch(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    status = BatchStatus(args.bid, r)
    if not status.exists:
        out.emit({"bid": args.bid, "exists": False}, lambda: f"no batch {args.bid!r} (unknown, or its data expired)")
        return Status.NOT_FOUND
    pending, failed = status.pending_jids(), status.failed_jids()
    data = {**status.to_dict(), "pending_jids": pending, "failed_jids": failed, "children": status.children()}

    def text() -> str:
        s = status
        lines = [f"batch {s.bid}: {s.state}, {s.total - s.pending} of {s.total} succeeded ({s.progress:.0%}), "
                 f"{s.failures} failing", f"description: {s.description or '-'}", f"parent: {s.parent or '-'}",
                 f"created: {when(s.created_at)}  completed: {when(s.completed_at)}  succeeded: "
                 f"{when(s.succeeded_at)}  first death: {when(s.died_at)}",
                 f"callbacks registered: {', '.join(s.callbacks) or '-'}"]
        for name, jids in (("pending", pending), ("failed", failed), ("nested batches", data["children"])):
            if jids:
                more = f" (and {len(jids) - SHOWN_JIDS} more)" if len(jids) > SHOWN_JIDS else ""
                lines.append(f"{name}: {' '.join(jids[:SHOWN_JIDS])}{more}")
        return "\n".join(lines)
    out.emit(data, text)
    return Status.OK
