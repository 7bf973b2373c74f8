"""Argument parsing of the `sidepunch` command, and how it fails: `Status` (exit statuses) and `Failure`.

Owns the commands' flags and arguments and checking their values (whole numbers in range), and keeping a Redis
URL given in the wrong place out of the usage error argparse echoes. Imports core and api only (never server; the web package is imported by command.py).

Must not import: sidepunch.server (core, client and api only).
"""
from __future__ import annotations

import argparse
import re
import sys
from enum import IntEnum
from typing import Any, Callable, Sequence

from .. import api
from ..core.urls import hide_urls


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    USAGE = 2
    NO_REDIS = 3
    BUG = 4


class Failure(Exception):
    """A one-line error for the user, with the exit status to end with."""

    def __init__(self, message: str, status: Status = Status.NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    _argv: Sequence[str] = ()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        # A Redis URL given in the wrong place is echoed by argparse; its password must not be.
        raise Failure(f"{self.prog}: {hide_urls(message, self._argv)} (see --help)", Status.USAGE)


def _whole(text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    value = int(text)
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {low}")
    if value > high:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {high:,}")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1, 1_000_000)


def _days(text: str) -> int:
    return _whole(text, 0, api.MAX_HISTORY_DAYS)


def _common_options() -> argparse.ArgumentParser:
    # The shared options work before or after the command; SUPPRESS keeps a subparser from resetting them.
    common = _Parser(add_help=False)
    common.add_argument("--redis-url", default=argparse.SUPPRESS, metavar="URL",
                        help="Redis to inspect (default: $REDIS_PROVIDER / $REDIS_URL, else localhost)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts instead of tables")
    return common


Add = Callable[[str, str], argparse.ArgumentParser]


def _paged(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=_positive, default=25, help="jobs per page (default 25)")
    p.add_argument("--page", type=_positive, default=1, help="page number, from 1")


def _add_listings(add: Add) -> None:
    add("stats", "counters, set sizes and latency").add_argument(
        "--days", type=_days, default=0,
        help=f"also show per-day counts for the last N days (UTC), at most {api.MAX_HISTORY_DAYS}")
    add("queues", "queues with size, latency and whether paused")
    p = add("jobs", "jobs waiting in a queue (newest first)")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--oldest-first", action="store_true", help="list in the order the jobs will run")
    _paged(p)
    for name, text in (("retries", "the retry set, soonest first"), ("scheduled", "scheduled jobs, soonest first"),
                       ("dead", "the dead set, most recent first")):
        _paged(add(name, text))


def _add_actions(add: Add) -> None:
    p = add("retry", "enqueue a job from the retry (or dead) set now")
    p.add_argument("jid", nargs="?", metavar="JID")
    p.add_argument("--all", action="store_true", help="retry every job in the retry set")
    add("delete", "delete a job from the retry, scheduled or dead set").add_argument("jid", metavar="JID")
    add("kill", "move a job from the retry or scheduled set to the dead set").add_argument("jid", metavar="JID")
    add("clear", "empty a queue, or the retry, scheduled or dead set").add_argument(
        "target", metavar="QUEUE|retry|scheduled|dead", help="a set name, else a queue (queue:NAME forces a queue)")
    p = add("enqueue", "push a job")
    p.add_argument("job_class", metavar="CLASS")
    p.add_argument("args_json", metavar="ARGS_JSON", nargs="?", default="[]", help="a JSON array (default [])")
    p.add_argument("--queue", "-q", help="queue name (default: default)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 10**8:  # NaN fails both
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and {10**8:,} seconds")
    return value


def _add_jobs(add: Add) -> None:
    add("status", "where a job is: " + ", ".join(api.STATES) + " (exit 1 when unknown)").add_argument(
        "jid", metavar="JID")
    add("cancel", "stop a job: removed (it was waiting), signalled (it is running; its process stops it within "
        "a second) or not_found (exit 1)").add_argument("jid", metavar="JID")
    p = add("result", "print the kept return value of a job, as JSON (its class sets keep_result)")
    p.add_argument("jid", metavar="JID")
    p.add_argument("--timeout", type=_seconds, default=0.0, metavar="S",
                   help="wait up to S seconds for it (default: do not wait)")


def _add_processes(add: Add) -> None:
    add("processes", "live processes")
    add("workers", "jobs running right now")
    for name, text in (("quiet", "ask a process to stop fetching jobs"), ("stop", "ask a process to shut down")):
        p = add(name, text)
        p.add_argument("id", nargs="?", metavar="ID", help="identity, a unique prefix of it, or a pid")
        p.add_argument("--all", action="store_true", help="every live process")


def _add_periodic(add: Add) -> None:
    p = add("periodic", "periodic (cron) entries: list (default), enable NAME, disable NAME, run NAME (enqueue now)")
    p.add_argument("action", nargs="?", default="list", choices=("list", "enable", "disable", "run"))
    p.add_argument("name", nargs="?", metavar="NAME")


def _add_batches(add: Add) -> None:
    add("batches", "batches, newest first, with their progress").add_argument(
        "--limit", type=lambda t: _whole(t, 1, 10_000), default=100, metavar="N", help="at most N (default 100)")
    add("batch", "one batch's status, pending and failed jobs (exit 1 when unknown)").add_argument("bid", metavar="BID")


def _add_limits(add: Add) -> None:
    p = add("limits", "rate limiters and their state: list (default), reset NAME (frees its slots, clears its log)")
    p.add_argument("action", nargs="?", default="list", choices=("list", "reset"))
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--forget", action="store_true", help="with reset: also unlist it until it is used again")


def _add_pausing(add: Add) -> None:
    add("pause", "stop every daemon fetching a queue (pushes are still accepted)").add_argument("queue", metavar="QUEUE")
    add("unpause", "let daemons fetch a paused queue again").add_argument("queue", metavar="QUEUE")


def _add_locks(add: Add) -> None:
    p = add("locks", "locks of unique jobs: list (default), delete KEY (a lock's key or digest)")
    p.add_argument("action", nargs="?", default="list", choices=("list", "delete"))
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("--limit", type=lambda t: _whole(t, 1, 10 ** 6), default=1000, help="list at most N (1000)")


def _port(text: str) -> int:
    return _whole(text, 1, 65535)


def _add_web(add: Add) -> None:
    p = add("web", "serve the web dashboard (needs the web extra: pip install 'sidepunch[web]')")
    p.add_argument("--port", type=_port, default=9292, help="TCP port (default 9292)")
    p.add_argument("--bind", default="127.0.0.1", metavar="HOST",
                   help="address to listen on (default 127.0.0.1; elsewhere, set SIDEPUNCH_WEB_USERNAME and "
                        "SIDEPUNCH_WEB_PASSWORD)")
    p.add_argument("--read-only", action="store_true", help="hide and refuse every action")


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(prog="sidepunch", parents=[common],
                     description="Inspect and manage Sidepunch/Sidekiq queues, sets and processes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    _add_listings(add)
    _add_actions(add)
    _add_jobs(add)
    _add_processes(add)
    _add_periodic(add)
    _add_batches(add)
    _add_limits(add)
    _add_pausing(add)
    _add_locks(add)
    _add_web(add)
    return parser
