"""`sidepunch limits [list | reset NAME [--forget]]`: the rate limiters and their state now, over
sidepunch.api.LimitSet (the parser's part is in parser.py). Exit 1 when NAME is no registered limiter, 2 without
a NAME. Imports core, client and api only.
"""
from __future__ import annotations

import argparse
from typing import Any

import redis

from ..api.limits import LimitSet
from .output import Output, table
from .parser import Failure, Status

HEADERS = ("NAME", "KIND", "LIMIT", "IN USE", "AVAILABLE", "WAITING")


def cmd_limits(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    limits = LimitSet(r)
    if args.action == "list":
        return _list(limits, out)
    if not args.name:
        raise Failure("sidepunch limits reset: give the limiter's NAME", Status.USAGE)
    known = args.name in limits.names()
    if known:
        limits.reset(args.name, forget=args.forget)
    verb = "forgot" if args.forget else "reset"
    out.emit({"name": args.name, "reset": known, "forgotten": known and args.forget},
             lambda: f"{verb} {args.name}" if known else f"no rate limiter named {args.name!r}")
    return Status.OK if known else Status.NOT_FOUND


def _list(limits: LimitSet, out: Output) -> Status:
    infos = limits.list()
    data: list[dict[str, Any]] = [info.to_dict() for info in infos]

    def text() -> str:
        rows = [(i.name, i.kind or "-", i.describe(), str(i.in_use), f"{i.available:g}", str(i.waiting))
                for i in infos]
        return table(HEADERS, rows) if rows else "no rate limiters (none has been used yet)"
    out.emit(data, text)
    return Status.OK
