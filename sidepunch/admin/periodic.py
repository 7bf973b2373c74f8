"""`sidepunch periodic [list | enable NAME | disable NAME | run NAME]`: the periodic entries, over
sidepunch.api.PeriodicSet (the parser's part is in parser.py). Exit 1 when NAME is no entry a daemon declares,
2 without a NAME. Imports core, client and api only.
"""
from __future__ import annotations

import argparse
from typing import Any

import redis

from ..api.periodic import PeriodicSet
from .output import Output, table, when
from .parser import Failure, Status

HEADERS = ("NAME", "SCHEDULE", "ZONE", "JOB", "NEXT RUN", "LAST RUN", "LAST JID", "ENABLED")


def cmd_periodic(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    entries = PeriodicSet(r)
    if args.action == "list":
        return _list(entries, out)
    if not args.name:
        raise Failure(f"sidepunch periodic {args.action}: give the entry's NAME", Status.USAGE)
    if args.action == "run":
        jid = entries.run(args.name)
        out.emit({"name": args.name, "jid": jid}, lambda: jid or f"no periodic entry named {args.name!r}")
        return Status.OK if jid else Status.NOT_FOUND
    done = entries.enable(args.name) if args.action == "enable" else entries.disable(args.name)
    out.emit({"name": args.name, args.action + "d": done},
             lambda: f"{args.action}d {args.name}" if done else f"no periodic entry named {args.name!r}")
    return Status.OK if done else Status.NOT_FOUND


def _list(entries: PeriodicSet, out: Output) -> Status:
    infos = entries.list()
    data: list[dict[str, Any]] = [info.to_dict() for info in infos]

    def text() -> str:
        rows = [(i.name, i.entry.cron if i.entry else i.problem, i.entry.tz if i.entry else "-",
                 i.entry.job if i.entry else "-", when(i.next_run), when(i.last_run), i.last_jid or "-",
                 "yes" if i.enabled else "no") for i in infos]
        return table(HEADERS, rows) if rows else "no periodic entries (no daemon declares any)"
    out.emit(data, text)
    return Status.OK
