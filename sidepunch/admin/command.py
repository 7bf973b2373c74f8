"""`sidepunch`: the admin command line, a thin layer over sidepunch.api.

Owns argument parsing, output (aligned tables, or `--json` for scripts) and turning failures into one line
on stderr with an exit status, never a traceback. It holds no Redis logic of its own: every read and move
is an api.py call, so the CLI and the API cannot disagree.

Whatever is in Redis is hostile input: names that are not UTF-8, payloads that are not JSON or hold NaN,
times of 1e300. Every cell is escaped so job data cannot drive the terminal, and `--json` output is always
strict JSON (NaN and infinities become null, as in JavaScript).

Exit statuses: 0 done; 1 nothing matched (unknown jid, process or queue), Redis refused the command, or
`retry --all` left entries it cannot enqueue; 2 bad usage (flags, JSON, Redis URL); 3 Redis unreachable;
4 an unexpected error (a bug: the one line says what).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import time
from enum import IntEnum
from typing import Any, Callable, Sequence

import redis

from .. import api
from .output import Output, escape, table, when
from ..api.records import loads
from ..client.push import Client
from ..core.connection import OUTAGE_ERRORS, check_url, hide_urls, make_client, mask_url, resolve_url, scrub
from ..core.payload import PayloadError

SETS = {"retry": api.RetrySet, "retries": api.RetrySet, "scheduled": api.ScheduledSet,
        "schedule": api.ScheduledSet, "dead": api.DeadSet, "morgue": api.DeadSet}


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


# -------------------------------------------------------------------------------------------- commands

def cmd_stats(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    stats = api.Stats(r)
    data = stats.summary()
    try:
        history = stats.history(args.days) if args.days else []
    except ValueError as exc:
        raise Failure(f"sidepunch stats: --days: {exc}", Status.USAGE) from None
    if history:
        data["history"] = [vars(day) for day in history]

    def text() -> str:
        rate = data["success_rate"]
        rows = [("Processed", data["processed"]), ("Failed", data["failed"]),
                ("Success rate", "-" if rate is None else f"{rate * 100:.2f}%"), ("Enqueued", data["enqueued"]),
                ("Scheduled", data["scheduled_size"]), ("Retries", data["retry_size"]),
                ("Dead", data["dead_size"]), ("Processes", data["processes_size"]),
                ("Busy", data["workers_size"]), ("Default latency", f"{data['default_queue_latency']:.1f}s")]
        body = "\n".join(f"{k + ':':<17}{v}" for k, v in rows)
        if history:
            body += "\n\n" + table(["DATE", "PROCESSED", "FAILED"],
                                   [(d.date, d.processed, d.failed) for d in history])
        return body
    out.emit(data, text)


def cmd_queues(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    now = time.time()
    queues = [(q.name, *_size_and_latency(q)) for q in api.Queue.all(r, clock=lambda: now)]
    data = [{"name": n, "size": s, "latency": lat} for n, s, lat in queues]
    out.emit(data, lambda: table(["QUEUE", "SIZE", "LATENCY"], [
        (n, "-" if s is None else s, "-" if lat is None else f"{lat:.1f}s") for n, s, lat in queues])
        if queues else "no queues")


def _size_and_latency(queue: api.Queue) -> tuple[int | None, float | None]:
    """None for both when `queue:<name>` is not a list: one odd key must not hide the other queues."""
    try:
        return queue.size, queue.latency
    except redis.ResponseError:
        return None, None


def _job_row(e: api.JobRecord, *extra: Any) -> tuple:
    args = e.display_args if e.ok else e.text()
    return (e.id, e.display_class, *extra, args)


def cmd_jobs(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    queue = api.Queue(args.queue, r)
    size = queue.size
    if size == 0 and not queue.known:
        raise Failure(f"no queue named {args.queue!r} (see `sidepunch queues`)")
    jobs = queue.page(args.page, args.limit, oldest_first=args.oldest_first)

    def text() -> str:
        order = "oldest first" if args.oldest_first else "newest first"
        head = f"queue {args.queue}: {size} job(s), {order}"
        rows = [_job_row(j, when(j.enqueued_at)) for j in jobs]
        return head + ("\n" + table(["JID", "CLASS", "ENQUEUED", "ARGS"], rows) if rows else "")
    out.emit([j.to_dict() for j in jobs], text)


def _list_set(jobset: api.JobSet, args: argparse.Namespace, out: Output) -> None:
    entries = jobset.page(args.page, args.limit)
    size = jobset.size

    def text() -> str:
        if not entries:
            return f"{jobset.name} set is empty" if size == 0 else f"no entries on page {args.page}"
        if isinstance(jobset, api.ScheduledSet):
            headers, rows = ["JID", "CLASS", "QUEUE", "AT", "ARGS"], [
                _job_row(e, e.queue or "-", when(e.score)) for e in entries]
        else:
            label = "DIED" if isinstance(jobset, api.DeadSet) else "NEXT RETRY"
            headers = ["JID", "CLASS", "QUEUE", "RETRIES", label, "ERROR", "ARGS"]
            rows = [_job_row(e, e.queue or "-", "-" if e.retry_count is None else e.retry_count,
                             when(e.score), _error(e)) for e in entries]
        shown = f"{(max(args.page, 1) - 1) * args.limit + 1}-{(max(args.page, 1) - 1) * args.limit + len(entries)}"
        return f"{jobset.name}: {size} job(s), showing {shown}\n" + table(headers, rows)
    out.emit([e.to_dict() for e in entries], text)


def _error(e: api.SortedEntry) -> str:
    """A dead entry's reason says why it is there; it wins over the error of its last run."""
    if e.reason is not None:
        return e.reason
    if e.error_class is None:
        return "-"
    return f"{e.error_class}: {e.error_message or ''}"[:60]


def _find(r: redis.Redis, ident: str, names: Sequence[str]) -> list[api.SortedEntry]:
    """Entries named by a jid or a `raw:` id (the JID column shows one for entries without a jid)."""
    found = [e for name in names for e in SETS[name](r).find(ident)]
    if not found:
        raise Failure(f"no job with jid {ident!r} in the {' or '.join(names)} set")
    return found


def _one_or_all(args: argparse.Namespace, what: str) -> None:
    given = getattr(args, what)
    if bool(given) == bool(args.all):
        raise Failure(f"sidepunch {args.command}: give {what.upper()} or --all (one of them)", Status.USAGE)


def cmd_retry(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    _one_or_all(args, "jid")
    if args.all:
        _retry_all(r, out)
        return
    entry = _find(r, args.jid, ["retry", "dead"])[0]
    if not entry.retry():
        raise Failure(f"job {args.jid} left the {entry.jobset.name} set before it could be retried")
    out.emit({"retried": 1, "jid": args.jid, "from": entry.jobset.name, "queue": entry.queue},
             lambda: f"enqueued {args.jid} on queue {entry.queue} (from the {entry.jobset.name} set)")


def _retry_all(r: redis.Redis, out: Output) -> None:
    result = api.RetrySet(r).retry_each()
    left = [{"id": e.id, "why": why} for e, why in result.left]
    out.emit({"retried": result.done, "left": left}, lambda: "\n".join(
        [f"enqueued {result.done} job(s) from the retry set"] +
        [f"left {item['id']} in the retry set: {item['why']}" for item in left]))
    if left:
        raise Failure(f"sidepunch retry: {len(left)} job(s) cannot be enqueued and stay in the retry set; "
                      "`sidepunch kill ID` or `sidepunch delete ID` them")


def cmd_delete(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    entries = _find(r, args.jid, ["retry", "scheduled", "dead"])
    gone = [e.jobset.name for e in entries if e.delete()]
    if not gone:
        raise Failure(f"job {args.jid} was removed by someone else before it could be deleted")
    out.emit({"deleted": len(gone), "jid": args.jid, "from": gone},
             lambda: f"deleted {args.jid} from the {', '.join(gone)} set")


def cmd_kill(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    entries = _find(r, args.jid, ["retry", "scheduled"])
    moved = [e.jobset.name for e in entries if e.kill()]
    if not moved:
        raise Failure(f"job {args.jid} left the {entries[0].jobset.name} set before it could be killed")
    sets = ", ".join(dict.fromkeys(moved))
    out.emit({"killed": len(moved), "jid": args.jid, "from": sets if len(moved) == 1 else moved},
             lambda: f"moved {args.jid} from the {sets} set to the dead set"
             + (f" ({len(moved)} copies)" if len(moved) > 1 else ""))


def cmd_clear(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    target = args.target
    if target in SETS:
        jobset = SETS[target](r)
        count, what = jobset.clear(), f"the {jobset.name} set"
    else:
        queue = api.Queue(target.removeprefix("queue:"), r)
        if queue.size == 0 and not queue.known:
            raise Failure(f"no queue named {queue.name!r}; to clear a set, say retry, scheduled or dead")
        count, what = queue.clear(), f"queue {queue.name}"
    out.emit({"cleared": what, "removed": count}, lambda: f"removed {count} job(s) from {what}")


def cmd_enqueue(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    try:
        job_args = loads(args.args_json.encode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise Failure(f"sidepunch enqueue: ARGS_JSON is not valid JSON ({exc})", Status.USAGE) from None
    if type(job_args) is not list:
        raise Failure("sidepunch enqueue: ARGS_JSON must be a JSON array, like '[1, \"two\"]'", Status.USAGE)
    item: dict[str, Any] = {"class": args.job_class, "args": job_args}
    if args.queue is not None:
        item["queue"] = args.queue
    try:
        jid = Client(redis=r).push(item)
    except (TypeError, ValueError) as exc:
        raise Failure(f"sidepunch enqueue: {exc}", Status.USAGE) from None
    queue = "default" if args.queue is None else args.queue
    out.emit({"jid": jid, "queue": queue, "class": args.job_class},
             lambda: f"enqueued {args.job_class} as {jid} on queue {queue}")


def cmd_processes(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    now = time.time()
    procs = list(api.ProcessSet(r))
    rows = [(p.identity, p.tag or "-", f"{p.busy}/{p.concurrency}", ",".join(p.queues), when(p.started_at),
             f"{now - p.beat:.0f}s ago" if p.beat else "-", f"{p.rss // 1024}MB",
             "quiet" if p.is_quiet else "running") for p in procs]
    out.emit([p.to_dict() for p in procs], lambda: table(
        ["IDENTITY", "TAG", "BUSY", "QUEUES", "STARTED", "BEAT", "RSS", "STATE"], rows) if rows
        else "no live processes")


def cmd_workers(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    works = list(api.Workers(r))
    rows = [(w.identity, w.tid, w.queue, when(w.run_at), *_job_row(w.job)) for w in works]
    out.emit([w.to_dict() for w in works], lambda: table(
        ["PROCESS", "TID", "QUEUE", "RUN AT", "JID", "CLASS", "ARGS"], rows) if rows else "no running jobs")


def _signal(r: redis.Redis, args: argparse.Namespace, out: Output, action: str) -> None:
    _one_or_all(args, "id")
    processes = api.ProcessSet(r)
    try:
        targets = list(processes) if args.all else [processes.find(args.id)]
    except LookupError as exc:
        raise Failure(f"sidepunch {action}: {exc.args[0]}") from None
    if not targets:
        raise Failure(f"sidepunch {action}: no live processes")
    for p in targets:
        getattr(p, action)()
    names = [p.identity for p in targets]
    out.emit({"signal": action, "processes": names},
             lambda: "\n".join(f"asked {n} to {action} (at its next heartbeat)" for n in names))


COMMANDS: dict[str, Callable[[redis.Redis, argparse.Namespace, Output], None]] = {
    "stats": cmd_stats, "queues": cmd_queues, "jobs": cmd_jobs,
    "retries": lambda r, a, o: _list_set(api.RetrySet(r), a, o),
    "scheduled": lambda r, a, o: _list_set(api.ScheduledSet(r), a, o),
    "dead": lambda r, a, o: _list_set(api.DeadSet(r), a, o),
    "retry": cmd_retry, "delete": cmd_delete, "kill": cmd_kill, "clear": cmd_clear, "enqueue": cmd_enqueue,
    "processes": cmd_processes, "workers": cmd_workers,
    "quiet": lambda r, a, o: _signal(r, a, o, "quiet"), "stop": lambda r, a, o: _signal(r, a, o, "stop"),
}


# ---------------------------------------------------------------------------------------------- parser

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


def build_parser() -> argparse.ArgumentParser:
    # The shared options work before or after the command; SUPPRESS keeps a subparser from resetting them.
    common = _Parser(add_help=False)
    common.add_argument("--redis-url", default=argparse.SUPPRESS, metavar="URL",
                        help="Redis to inspect (default: $REDIS_PROVIDER / $REDIS_URL, else localhost)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts instead of tables")
    parser = _Parser(prog="sidepunch", parents=[common],
                     description="Inspect and manage Sidepunch/Sidekiq queues, sets and processes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    def paged(p: argparse.ArgumentParser) -> None:
        p.add_argument("--limit", type=_positive, default=25, help="jobs per page (default 25)")
        p.add_argument("--page", type=_positive, default=1, help="page number, from 1")

    add("stats", "counters, set sizes and latency").add_argument(
        "--days", type=_days, default=0,
        help=f"also show per-day counts for the last N days (UTC), at most {api.MAX_HISTORY_DAYS}")
    add("queues", "queues with size and latency")
    p = add("jobs", "jobs waiting in a queue (newest first)")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--oldest-first", action="store_true", help="list in the order the jobs will run")
    paged(p)
    for name, text in (("retries", "the retry set, soonest first"), ("scheduled", "scheduled jobs, soonest first"),
                       ("dead", "the dead set, most recent first")):
        paged(add(name, text))
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
    add("processes", "live processes")
    add("workers", "jobs running right now")
    for name, text in (("quiet", "ask a process to stop fetching jobs"), ("stop", "ask a process to shut down")):
        p = add(name, text)
        p.add_argument("id", nargs="?", metavar="ID", help="identity, a unique prefix of it, or a pid")
        p.add_argument("--all", action="store_true", help="every live process")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    if isinstance(sys.stdout, io.TextIOWrapper):  # a non-UTF-8 locale must not turn "é" into a crash
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    except Failure as exc:
        print(escape(" ".join(str(exc).split())), file=sys.stderr)
        return exc.status
    except BrokenPipeError:  # `sidepunch dead | head`: silence the flush at exit, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Status.NOT_FOUND
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the outermost frame: one line instead of a traceback
        message = hide_urls(f"{type(exc).__name__}: {exc}", sys.argv if argv is None else list(argv))
        print(escape(f"sidepunch: unexpected error ({' '.join(message.split())})"), file=sys.stderr)
        return Status.BUG


def _run(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    url = ""
    try:
        url = resolve_url(getattr(args, "redis_url", None), os.environ)
        check_url(url)
        client = make_client(url)
    except ValueError as exc:
        raise Failure(scrub(f"sidepunch: {exc}", url), Status.USAGE) from None
    try:
        COMMANDS[args.command](client, args, Output(getattr(args, "json", False)))
    except (Failure, BrokenPipeError):
        raise
    except OUTAGE_ERRORS as exc:
        # redis-py's sentinel errors repr every client they tried: keep the line short.
        detail = str(exc).split(" : <", 1)[0][:300]
        raise Failure(scrub(f"sidepunch: cannot reach Redis at {mask_url(url)} ({detail})", url),
                      Status.NO_REDIS) from None
    except PayloadError as exc:
        raise Failure(f"sidepunch {args.command}: {exc}") from None
    except redis.RedisError as exc:
        raise Failure(scrub(f"sidepunch {args.command}: Redis refused: {exc}", url)) from None
    except Exception as exc:  # one line, with any secret of the URL hidden
        raise Failure(scrub(f"sidepunch {args.command}: unexpected error ({type(exc).__name__}: {exc})", url),
                      Status.BUG) from None
    finally:
        client.close()
    return Status.OK


if __name__ == "__main__":
    sys.exit(main())
