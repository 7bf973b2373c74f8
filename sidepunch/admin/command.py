"""`sidepunch`: the admin command line, a thin layer over sidepunch.api.

Owns running each command and turning failures into one line on stderr with an exit status, never a
traceback; flags are parsed in parser.py and printed through output.py. It holds no Redis logic of its own:
every read is a sidepunch.api call and every change an api.ops call, so the CLI and a dashboard cannot
disagree. Imports core, client and api (never server); `sidepunch web` imports the web package when run.

Whatever is in Redis is hostile input: names that are not UTF-8, payloads that are not JSON or hold NaN,
times of 1e300. Every cell is escaped so job data cannot drive the terminal, and `--json` output is always
strict JSON (NaN and infinities become null, as in JavaScript).

Exit statuses: 0 done; 1 nothing matched (unknown jid, process or queue; `status` unknown, `cancel`
not_found, `result` not there in time or not kept), Redis refused the command, or `retry --all` left entries
it cannot enqueue; 2 bad usage (flags, JSON, Redis URL); 3 Redis unreachable;
4 an unexpected error (a bug: the one line says what).

Must not import: sidepunch.server (core, client, api and web only).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import redis

from .. import api
from ..api.ops import AdminOps, BadRequest, OpError
from ..api.records import jsonable, loads
from ..core.connection import OUTAGE_ERRORS, check_url, make_client
from ..core.urls import hide_urls, mask_url, resolve_url, scrub
from ..core.errors import ResultError, ResultTimeout
from ..core.payload import PayloadError
from .output import Output, escape, table, when
from .limits import cmd_limits
from .locks import cmd_locks
from .pausing import cmd_pause, cmd_unpause, paused_names
from .periodic import cmd_periodic
from .batches import cmd_batch, cmd_batches
from .parser import Failure, Status, build_parser

__all__ = ["COMMANDS", "Failure", "Status", "build_parser", "main"]


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
                ("Success rate", "-" if rate is None else f"{rate * 100:.2f}%"), ("Cancelled", data["cancelled"]),
                ("Expired", data["expired"]), ("Rate limited", data["rate_limited"]), ("Enqueued", data["enqueued"]),
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
    paused = paused_names(r)
    known = api.Queue.all(r, clock=lambda: now)
    extra = sorted(paused - {q.name for q in known})  # paused before any push: shown, so it can be unpaused
    queues = [(q.name, *_size_and_latency(q)) for q in [*known, *(api.Queue(n, r, clock=lambda: now) for n in extra)]]
    data = [{"name": n, "size": s, "latency": lat, "paused": n in paused} for n, s, lat in queues]
    out.emit(data, lambda: table(["QUEUE", "SIZE", "LATENCY", "PAUSED"], [
        (n, "-" if s is None else s, "-" if lat is None else f"{lat:.1f}s", "yes" if n in paused else "no")
        for n, s, lat in queues]) if queues else "no queues")


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


def _one_or_all(args: argparse.Namespace, what: str) -> None:
    given = getattr(args, what)
    if bool(given) == bool(args.all):
        raise Failure(f"sidepunch {args.command}: give {what.upper()} or --all (one of them)", Status.USAGE)


def cmd_retry(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    _one_or_all(args, "jid")
    if args.all:
        _retry_all(r, out)
        return
    done = AdminOps(r).retry(args.jid)
    out.emit({"retried": 1, "jid": done.jid, "from": done.source, "queue": done.queue},
             lambda: f"enqueued {done.jid} on queue {done.queue} (from the {done.source} set)")


def _retry_all(r: redis.Redis, out: Output) -> None:
    result = AdminOps(r).retry_all()
    left = [{"id": ident, "why": why} for ident, why in result.left]
    out.emit({"retried": result.done, "left": left}, lambda: "\n".join(
        [f"enqueued {result.done} job(s) from the retry set"] +
        [f"left {item['id']} in the retry set: {item['why']}" for item in left]))
    if left:
        raise Failure(f"sidepunch retry: {len(left)} job(s) cannot be enqueued and stay in the retry set; "
                      "`sidepunch kill ID` or `sidepunch delete ID` them")


def cmd_delete(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    done = AdminOps(r).delete(args.jid)
    out.emit({"deleted": len(done.sets), "jid": done.jid, "from": done.sets},
             lambda: f"deleted {done.jid} from the {', '.join(done.sets)} set")


def cmd_kill(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    done = AdminOps(r).kill(args.jid)
    moved, sets = done.sets, ", ".join(dict.fromkeys(done.sets))
    out.emit({"killed": len(moved), "jid": done.jid, "from": sets if len(moved) == 1 else moved},
             lambda: f"moved {done.jid} from the {sets} set to the dead set"
             + (f" ({len(moved)} copies)" if len(moved) > 1 else ""))


def cmd_clear(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    done = AdminOps(r).clear(args.target)
    what = f"the {done.name} set" if done.kind == "set" else f"queue {done.name}"
    out.emit({"cleared": what, "removed": done.removed}, lambda: f"removed {done.removed} job(s) from {what}")


def cmd_enqueue(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    try:
        job_args = loads(args.args_json.encode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise Failure(f"sidepunch enqueue: ARGS_JSON is not valid JSON ({exc})", Status.USAGE) from None
    if type(job_args) is not list:
        raise Failure("sidepunch enqueue: ARGS_JSON must be a JSON array, like '[1, \"two\"]'", Status.USAGE)
    done = AdminOps(r).enqueue(args.job_class, job_args, args.queue)
    out.emit({"jid": done.jid, "queue": done.queue, "class": done.job_class},
             lambda: f"enqueued {done.job_class} as {done.jid} on queue {done.queue}")


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
    try:
        names = AdminOps(r).signal(action, None if args.all else args.id)
    except OpError as exc:
        raise Failure(f"sidepunch {action}: {exc}") from None
    out.emit({"signal": action, "processes": names},
             lambda: "\n".join(f"asked {n} to {action} (at its next heartbeat)" for n in names))


def cmd_status(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    state = api.status(args.jid, r)
    out.emit({"jid": args.jid, "status": state}, lambda: state)
    return Status.NOT_FOUND if state == "unknown" else Status.OK


def cmd_cancel(r: redis.Redis, args: argparse.Namespace, out: Output) -> Status:
    outcome = api.cancel(args.jid, r)
    out.emit({"jid": args.jid, "outcome": outcome}, lambda: outcome)
    return Status.NOT_FOUND if outcome == "not_found" else Status.OK


def cmd_result(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    try:
        value = api.result(args.jid, timeout=args.timeout, redis=r)
    except ResultTimeout:
        waited = f" within {args.timeout:g}s" if args.timeout else ""
        raise Failure(f"sidepunch result: job {args.jid} has no result{waited} (finished without keep_result, "
                      "expired, or not finished yet)") from None
    except ResultError as exc:
        raise Failure(f"sidepunch result: {exc}") from None
    # Plain text is the value as ASCII JSON, so it is still JSON after escaping for the terminal.
    out.emit({"jid": args.jid, "result": value},
             lambda: json.dumps(jsonable(value), allow_nan=False).replace("\x7f", "\\u007f"))


def cmd_web(r: redis.Redis, args: argparse.Namespace, out: Output) -> None:
    """Serve the dashboard until interrupted; r is unused (the app makes its own client from the same URL)."""
    try:
        from ..web import serve
    except ImportError as exc:
        raise Failure(f"sidepunch web: needs the web extra: pip install 'sidepunch[web]' ({exc})",
                      Status.USAGE) from None
    try:
        app = serve.build(getattr(args, "redis_url", None), args.bind, args.read_only, os.environ)
    except ValueError as exc:
        raise Failure(f"sidepunch web: {exc}", Status.USAGE) from None
    print(f"sidepunch web: serving on http://{args.bind}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    try:
        serve.serve(app, args.bind, args.port)
    except OSError as exc:  # the port is taken, or the address is not ours
        raise Failure(f"sidepunch web: cannot listen on {args.bind}:{args.port} ({exc.strerror or exc})",
                      Status.USAGE) from None


COMMANDS: dict[str, Callable[[redis.Redis, argparse.Namespace, Output], Status | None]] = {
    "stats": cmd_stats, "queues": cmd_queues, "jobs": cmd_jobs,
    "retries": lambda r, a, o: _list_set(api.RetrySet(r), a, o),
    "scheduled": lambda r, a, o: _list_set(api.ScheduledSet(r), a, o),
    "dead": lambda r, a, o: _list_set(api.DeadSet(r), a, o),
    "retry": cmd_retry, "delete": cmd_delete, "kill": cmd_kill, "clear": cmd_clear, "enqueue": cmd_enqueue,
    "status": cmd_status, "cancel": cmd_cancel, "result": cmd_result,
    "processes": cmd_processes, "workers": cmd_workers,
    "quiet": lambda r, a, o: _signal(r, a, o, "quiet"), "stop": lambda r, a, o: _signal(r, a, o, "stop"),
    "periodic": cmd_periodic, "web": cmd_web,
    "batches": cmd_batches, "batch": cmd_batch,
    "limits": cmd_limits, "pause": cmd_pause, "unpause": cmd_unpause, "locks": cmd_locks,
}


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
        status = COMMANDS[args.command](client, args, Output(getattr(args, "json", False)))
    except (Failure, BrokenPipeError):
        raise
    except BadRequest as exc:
        raise Failure(f"sidepunch {args.command}: {exc}", Status.USAGE) from None
    except OpError as exc:  # nothing matched, or the entry left meanwhile
        raise Failure(str(exc)) from None
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
    return Status.OK if status is None else status


if __name__ == "__main__":
    sys.exit(main())
