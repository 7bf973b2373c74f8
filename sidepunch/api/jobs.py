"""One job by its jid: where it is (`status`), stopping it (`cancel`) and its kept return value (`result`).

Owns finding a jid across Sidekiq's places (the `schedule` and `retry` sets, the queues named in `queues`, the
live processes' `<identity>:workers` hashes, the reliable-fetch working lists, the `dead` set) and the keys
keys.cancel_request and keys.result. `status` and `cancel` share one search; nothing here writes a job.

Where a job can be is read, never assumed: set members, list entries, hash values and key names are hostile
input (bytes that are not UTF-8, not JSON, JSON that is not an object, huge). An entry that cannot be read has
no jid and matches nothing; a key of the wrong type is skipped. A jid matches only the same string in a
payload's `jid` field: the bytes are searched for it first (server-side with ZSCAN MATCH for sets, as
Sidekiq's find_job does), but only when it is made of characters no JSON writer escapes; any other jid, with
quotes, glob characters or non-ASCII text, is compared on every entry parsed.

The search follows a job's way through the system: `schedule`, `retry`, the queues, then the running places,
then `retry` again (a job that fails during the search), `dead` and the result key. A job moving forward
while the search runs is therefore found in its next place. Moving backwards is not always seen: a job that
a crashed process's recovery puts back on its queue during the search can be missed (`unknown`,
`not_found`); asking again finds it.

Must not import: sidepunch.server or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Iterator

import redis as redis_lib

from ..client.push import default_client
from ..core import keys
from ..core.errors import ResultError, ResultTimeout
from ..core.payload import PayloadError, parse
from .records import jsonable, name_key
from .unlock import release_locks

#: What `status` answers.
STATES = ("queued", "scheduled", "retry", "running", "dead", "done", "unknown")
#: What `cancel` answers.
OUTCOMES = ("removed", "signalled", "not_found")
BATCH = 500
#: `result` polls the key: first after FIRST_PAUSE seconds, then 1.5 times longer each time, up to MAX_PAUSE.
FIRST_PAUSE = 0.02
MAX_PAUSE = 0.5
#: Characters that every JSON writer puts in a string as they are (no escapes; not glob characters either),
#: so a jid made only of them can be looked for in the raw bytes.
_PLAIN = re.compile(r"[A-Za-z0-9_.:@+=~-]+")


def _connection(client: redis_lib.Redis | None) -> redis_lib.Redis:
    """The client given, else the connection of the configured client (sidepunch.configure, or $REDIS_URL)."""
    return client if client is not None else default_client().redis


def _checked(jid: Any) -> str:
    if not isinstance(jid, str):
        raise TypeError(f"a jid is a string, not {type(jid).__name__}")
    return jid


class _Needle:
    """One jid to look for: `pattern` for ZSCAN MATCH (None: every member), `matches(raw)` the exact test."""

    def __init__(self, jid: str) -> None:
        self.jid = _checked(jid)
        self.plain = name_key(jid) if _PLAIN.fullmatch(jid) else None
        self.pattern = None if self.plain is None else b"*" + self.plain + b"*"

    def matches(self, raw: bytes | str) -> bool:
        """Whether `raw` (a job's bytes) is a job with this jid; the substring test spares parsing the rest."""
        raw = _bytes(raw)
        if self.plain is not None and self.plain not in raw:
            return False
        return _jid_of(_loads(raw)) == self.jid

    def in_work(self, raw: bytes | str) -> bool:
        """Whether `raw` (a workers-hash value, {queue, payload, run_at}) is this jid at work."""
        raw = _bytes(raw)
        if self.plain is not None and self.plain not in raw:
            return False
        entry = _loads(raw)
        job = entry.get("payload") if isinstance(entry, dict) else None
        if isinstance(job, str):  # the heartbeat stores the job as a JSON string; older writers the object
            job = _loads(job.encode("utf-8", "surrogatepass"))
        return _jid_of(job) == self.jid


def _bytes(raw: bytes | str) -> bytes:
    """What Redis holds; a client built with decode_responses=True hands it over as text."""
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw


def _loads(raw: bytes) -> Any:
    """Python's JSON reading of `raw`, lenient about NaN and the like (a job that cannot run is still found,
    so it can be removed); None for bytes that are not UTF-8 JSON at all or nest past the recursion limit."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _jid_of(job: Any) -> str | None:
    jid = job.get("jid") if isinstance(job, dict) else None
    return jid if isinstance(jid, str) else None


# ------------------------------------------------------------------------------------------- places

def _zset_members(r: redis_lib.Redis, name: str, needle: _Needle) -> list[bytes]:
    try:
        return [m for m, _ in r.zscan_iter(name, match=needle.pattern, count=BATCH) if needle.matches(m)]
    except redis_lib.ResponseError:  # not a sorted set
        return []


def _list_members(r: redis_lib.Redis, key: bytes, needle: _Needle) -> list[bytes]:
    """Matching entries, read from the left in pages. Pushes (left) shift entries right, so nothing is skipped
    for them; pops (right) shift nothing."""
    found: list[bytes] = []
    start = 0
    try:
        while True:
            rows = r.lrange(key, start, start + BATCH - 1)
            found.extend(raw for raw in rows if needle.matches(raw))
            if len(rows) < BATCH:
                return found
            start += len(rows)
    except redis_lib.ResponseError:  # not a list
        return found


def _waiting(r: redis_lib.Redis) -> Iterator[tuple[str, str, Any]]:
    """(state, kind, key) of every place a job waits, in the order a job moves through them: the poller moves
    `schedule` and `retry` entries to queues. Queues are those in `queues`, as Sidekiq's API finds them (every
    writer, Sidekiq's included, adds the name there with the job)."""
    yield "scheduled", "zset", keys.SCHEDULE
    yield "retry", "zset", keys.RETRY
    try:
        names = sorted(r.smembers(keys.QUEUES))
    except redis_lib.ResponseError:  # `queues` is not a set
        names = []
    for name in names:
        yield "queued", "list", keys.queue(name)


def _members(r: redis_lib.Redis, kind: str, key: Any, needle: _Needle) -> list[bytes]:
    return _zset_members(r, key, needle) if kind == "zset" else _list_members(r, key, needle)


def _take(r: redis_lib.Redis, kind: str, key: Any, needle: _Needle) -> bool:
    """Remove every entry of `key` with the jid; True if this call removed one. ZREM and LREM of the exact
    bytes read are atomic, and a fetch or the poller that took an entry first leaves them nothing to remove,
    so a job is never both removed here and run."""
    members = _members(r, kind, key, needle)
    if not members:
        return False
    try:
        if kind == "zset":
            taken = bool(r.zrem(key, *members))
        else:
            taken = sum(int(r.lrem(key, 0, raw)) for raw in set(members)) > 0
    except redis_lib.ResponseError:  # the key changed type meanwhile
        return False
    if taken:
        release_locks(r, members)  # a cancelled unique job frees its lock (compare-and-delete: only its own)
    return taken


def _in_workers(r: redis_lib.Redis, needle: _Needle) -> bool:
    """In the workers hash of a live process (one whose `<identity>` record has not expired). A Sidepunch process
    with reliable fetch (its record's `sidepunch_fetch` field) is skipped: its hash is rewritten only every beat
    (a job that just ended would still read as running), and its working lists, searched next, say exactly what
    it holds."""
    try:
        identities = sorted(r.smembers(keys.PROCESSES))
    except redis_lib.ResponseError:
        return False
    pipe = r.pipeline(transaction=False)
    for identity in identities:
        pipe.hmget(keys.process(identity), ["beat", keys.PROCESS_FETCH])
        pipe.hvals(keys.workers(identity))
    replies = pipe.execute(raise_on_error=False)
    for record, values in zip(replies[::2], replies[1::2]):
        # an error reply: not a hash; no beat: the record expired
        if isinstance(record, list) and record[0] is not None and record[1] not in (b"reliable", "reliable"):
            if isinstance(values, list) and any(needle.in_work(v) for v in values):
                return True
    return False


def _in_working_lists(r: redis_lib.Redis, needle: _Needle) -> bool:
    """In a reliable-fetch working list: fetched and not yet acknowledged, running or prefetched. A list of a
    process that died counts too: recovery puts it back on its queue, and it runs again."""
    for key in r.scan_iter(match=keys.WORKING_PATTERN, count=1000, _type="list"):
        if _list_members(r, key, needle):
            return True
    return False


def _running(r: redis_lib.Redis, needle: _Needle) -> bool:
    return _in_workers(r, needle) or _in_working_lists(r, needle)


def _result_key(jid: str) -> bytes:
    return name_key(keys.result(jid))


# ------------------------------------------------------------------------------------------- status

def status(jid: str, redis: redis_lib.Redis | None = None) -> str:
    """Where job `jid` is now: "scheduled", "retry", "queued", "running" (running, or fetched by a process and
    not yet started), "dead", "done" (its class keeps results and the result is there) or "unknown" (never
    existed, finished without keeping a result, or its result expired).

    Like Sidekiq's find_job, this reads the waiting places through: its cost grows with the size of the queues
    and sets. To wait for a job that keeps its result, `result(jid, timeout)` reads one key.

    `redis`: a client, else the configured client's connection. A job fetched with `--fetch basic` shows as
    running only from its process's next heartbeat (5 s at most); until then it is "unknown".
    """
    r = _connection(redis)
    needle = _Needle(jid)
    if r.exists(_result_key(jid)):
        return "done"
    for state, kind, key in _waiting(r):
        if _members(r, kind, key, needle):
            return state
    if _running(r, needle):
        return "running"
    if _zset_members(r, keys.RETRY, needle):  # it failed while the search went on
        return "retry"
    if _zset_members(r, keys.DEAD, needle):
        return "dead"
    return "done" if r.exists(_result_key(jid)) else "unknown"


# ------------------------------------------------------------------------------------------- cancel

def cancel(jid: str, redis: redis_lib.Redis | None = None) -> str:
    """Stop job `jid`: "removed" if it was waiting (in a queue, `schedule` or `retry`: every copy is taken out,
    atomically, so it cannot also run), "signalled" if it is running or fetched (a cancel request,
    keys.cancel_request, tells the process that runs it, on any host, to stop it within a second; it is then
    counted as cancelled, neither retried nor dead), else "not_found": it finished, it is in the dead set (a
    dead job is not cancelled: delete it with `sidepunch delete`), or it never existed.

    The request is written before the search and withdrawn when nothing running is found, so a job fetched
    while the search goes on meets it. What remains: a job a process fetched with `--fetch basic` is visible
    only from that process's next heartbeat (5 s at most), and a job that recovery puts back on its queue
    during the search can be missed; both answer "not_found", and asking again finds them. A request from an
    earlier call is left in place; one whose process never acts on it expires after keys.CANCEL_TTL. If Redis
    fails mid-call (the error is raised), the request stays: the job is still stopped if it runs within a day.
    """
    r = _connection(redis)
    needle = _Needle(jid)
    key = name_key(keys.cancel_request(jid))
    request = json.dumps({"at": time.time()}).encode()
    created = bool(r.set(key, request, ex=keys.CANCEL_TTL, nx=True))
    if any([_take(r, kind, place, needle) for _, kind, place in _waiting(r)]):
        outcome = "removed"
    elif _running(r, needle):
        # Rewritten, not only created: a concurrent call that found nothing withdraws only its own request.
        r.set(key, request, ex=keys.CANCEL_TTL)
        return "signalled"
    elif _take(r, "zset", keys.RETRY, needle):  # it failed while the search went on
        outcome = "removed"
    else:
        outcome = "not_found"
    if created:
        _withdraw(r, key, request)
    return outcome


def _withdraw(r: redis_lib.Redis, key: bytes, request: bytes) -> None:
    """DEL the cancel request if it is still the one this call wrote (WATCH, so never another call's)."""
    def delete_if_ours(pipe: Any) -> None:
        if _bytes(pipe.get(key) or b"") == request:
            pipe.multi()
            pipe.delete(key)
    try:
        r.transaction(delete_if_ours, key)
    except redis_lib.ResponseError:  # the key is not a string any more: not ours
        pass


# ------------------------------------------------------------------------------------------- result

def result(jid: str, timeout: float | None = None, redis: redis_lib.Redis | None = None) -> Any:
    """The return value of job `jid` (a JSON value), kept because its class sets `keep_result`.

    Waits up to `timeout` seconds for it (None: as long as it takes, as concurrent.futures does; 0: not at
    all), polling with a growing pause (FIRST_PAUSE to MAX_PAUSE). Raises ResultTimeout when it is not there
    in time (a job whose class keeps no result never has one), ResultError when the job finished but its
    return value could not be kept (not JSON) or the record is unreadable.
    """
    r = _connection(redis)
    key = _result_key(_checked(jid))
    deadline = _deadline(timeout)
    pause = FIRST_PAUSE
    while True:
        try:
            raw = r.get(key)
        except redis_lib.ResponseError as exc:  # WRONGTYPE: something else wrote the key
            raise ResultError(f"the result of job {jid} is unreadable: {exc}") from None
        if raw is not None:
            return _value(jid, _bytes(raw))
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ResultTimeout(f"job {jid} has no result (waited {timeout:g}s)")
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 1.5, MAX_PAUSE)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
    return None if math.isinf(timeout) and timeout > 0 else time.monotonic() + max(float(timeout), 0.0)


def _value(jid: str, raw: bytes) -> Any:
    """The `result` of a record; ResultError for an `error` record or anything that is not a record."""
    try:
        record = parse(raw, "the result record")
    except PayloadError as exc:
        raise ResultError(f"the result of job {jid} is unreadable: {exc}") from None
    if not isinstance(record, dict):
        raise ResultError(f"the result of job {jid} is unreadable: not a JSON object")
    if "error" in record:
        raise ResultError(f"job {jid} finished but its return value was not kept: {_text(record['error'])}")
    if "result" not in record:
        raise ResultError(f"the result of job {jid} is unreadable: it has neither `result` nor `error`")
    return record["result"]


def _text(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"
