"""`sidepunch pause QUEUE` / `sidepunch unpause QUEUE`: queue pausing over sidepunch.api.pausing (the parser's part
is in parser.py), and the PAUSED column `sidepunch queues` shows. Exit 0 whether or not the queue was paused
before (the command says which); 2 for a name no daemon could fetch. Imports core, client and api only.
"""
from __future__ import annotations

import argparse

import redis

from ..api import pausing
from ..api.ops import BadRequest
from .output import Output
from .parser import Status


def cmd_pause(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    try:
        changed = pausing.pause(r, args.queue)
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from None
    out.emit({"queue": args.queue, "paused": True, "changed": changed},
             lambda: f"paused queue {args.queue}" + ("" if changed else " (it was paused already)")
             + ": daemons stop fetching it within about a second; pushes are still accepted")
    return Status.OK


def cmd_unpause(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    changed = pausing.unpause(r, args.queue)
    out.emit({"queue": args.queue, "paused": False, "changed": changed},
             lambda: f"unpaused queue {args.queue}" if changed else f"queue {args.queue} was not paused")
    return Status.OK


def paused_names(r: redis.Redis) -> frozenset[str]:
    """The paused queue names, for `sidepunch queues`."""
    return frozenset(pausing.paused_queues(r))
