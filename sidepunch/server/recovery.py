"""Putting back jobs whose process died while running them (reliable fetch's other half).

The master calls `recover_identity` when it reaps a child; `OrphanSweeper` lets any live master recover the
working lists of processes whose liveness key expired (a whole host died), under a lock so that two
masters never both requeue the same list. Each interruption increments the payload's `interrupted_count`
(the field gitlab-sidekiq-fetcher uses); a job interrupted `max_interruptions` times is a poison pill and
goes to the dead set instead of crashing the next worker.

What is read here is hostile input, and none of it may stop recovery or the master:
- A payload is never re-encoded. The count (and a poison pill's error fields) are written into its bytes by
  `with_members`; a payload that is not a readable job goes to the dead set byte for byte, with its reason in
  keys.DEAD_REASONS. Each job's fate is decided alone, and a failure deciding it costs only that job's count.
- Key names (working lists found by SCAN, their queue and identity parts) are handled as bytes, never decoded.
- A list that cannot be recovered (a key of another type, a queue key that is not a list) is reported in
  `Recovered.failed` and left as it is; the other lists go on.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import AbstractSet as Set, Any, Iterable, Sequence

import redis

from ..core import keys, scripts
from ..core.connection import OUTAGE_ERRORS
from ..core.payload import PayloadError, decode

log = logging.getLogger("sidepunch.recovery")
BATCH = 100
#: Most distinct bad keys the sweeper remembers having reported (each is logged once, not every sweep).
REPORTED_MAX = 10_000


@dataclass(frozen=True)
class RecoveryPolicy:
    max_interruptions: int
    dead_max_jobs: int
    dead_timeout: float


@dataclass
class Recovered:
    requeued: int = 0
    killed: int = 0
    failed: list[tuple[bytes, str]] = field(default_factory=list)  # (working list, why it was left as it is)

    def __iadd__(self, other: "Recovered") -> "Recovered":
        self.requeued += other.requeued
        self.killed += other.killed
        self.failed += other.failed
        return self


@dataclass(frozen=True)
class Move:
    mode: str          # "queue" or "dead"
    payload: bytes     # what to write
    reason: str = ""   # for keys.DEAD_REASONS when the payload carries no error fields of its own


# -- writing members into a payload's bytes ---------------------------------------------------------------------
_SPACE = re.compile(r"[ \t\n\r]*")
#: Only its scanner is used: it tells where a JSON value ends.
_SCANNER = json.JSONDecoder()


def _member_spans(text: str) -> tuple[dict[str, tuple[int, int]], int]:
    """Where each top-level member of the JSON object `text` starts and ends (for a name given twice, the last,
    which is the one Python's and Ruby's readers keep), and where its closing brace is."""
    spans: dict[str, tuple[int, int]] = {}
    at = _SPACE.match(text).end() + 1  # past "{"
    while True:
        at = _SPACE.match(text, at).end()
        if text[at] == "}":
            return spans, at
        name, end = scanstring(text, at + 1)
        value_at = _SPACE.match(text, _SPACE.match(text, end).end() + 1).end()  # past the ":"
        _, end = _SCANNER.scan_once(text, value_at)
        spans[name] = (at, end)
        at = _SPACE.match(text, end).end()
        at += text[at] == ","


def with_members(raw: bytes, members: dict[str, Any]) -> bytes:
    """`raw`, a payload that payload.decode accepts, with the given top-level members set, and no other byte
    changed: an existing member is rewritten where it stands (so the payload never holds the name twice, which
    Ruby's JSON would warn about), a new one is added last.

    Why not decode, set and encode: a re-encode changes bytes we have no reason to touch (key order, number and
    string spelling) that Sidekiq's tools and the ack's exact-bytes LREM rely on. The members are written as
    ASCII JSON, and the result is read back and checked, so a defect here raises instead of writing a payload
    that says something else.
    """
    text = raw.decode("utf-8")
    spans, close = _member_spans(text)
    edits = [(close, close, "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in members.items()
                                    if k not in spans))]
    edits += [(*spans[k], f"{json.dumps(k)}:{json.dumps(v)}") for k, v in members.items() if k in spans]
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    new = text.encode("utf-8")
    readback = decode(new)
    if any(type(readback.get(k)) is not type(v) or readback.get(k) != v for k, v in members.items()):
        raise ValueError("the edited payload does not read back as written")
    return new


# -- the fate of one job ----------------------------------------------------------------------------------------
def count_interruption(raw: bytes, policy: RecoveryPolicy, why: str, now: float) -> Move:
    """Count one interruption of a job whose worker died (`why`): back to its queue, or, the last time, dead."""
    try:
        job = decode(raw)
    except PayloadError as problem:
        return Move("dead", raw, f"its worker died ({why}) while it was in its working list, and it is not "
                                 f"a readable job: {problem}")
    prior = job.get("interrupted_count")
    # A count that is not a small natural number is corrupt; clamping it keeps the poison-pill limit working.
    count = min(prior if type(prior) is int and prior >= 0 else 0, policy.max_interruptions) + 1
    members: dict[str, Any] = {"interrupted_count": count}
    if count < policy.max_interruptions:
        mode = "queue"
    else:
        mode = "dead"
        members["error_message"] = (f"its worker process died {count} times while running it (last: {why}); "
                                    "moved to the dead set so it cannot crash-loop the workers")
        members["error_class"] = "sidepunch.WorkerDied"
        if "failed_at" not in job:
            members["failed_at"] = now
    try:
        return Move(mode, with_members(raw, members))
    except Exception as exc:  # a defect must cost this one job its count, never the master its loop
        log.error("could not count the interruption of a job (%s: %s); moved to the dead set: %.120r",
                  type(exc).__name__, exc, raw)
        return Move("dead", raw, f"its worker died ({why}) while running it, and the interruption could not "
                                 f"be counted in its payload ({type(exc).__name__})")


def _queue_refusal(client: redis.Redis, queue_key: bytes) -> str:
    """Why jobs cannot go back to `queue_key` ("" if they can): only a list (or nothing) holds jobs."""
    kind = client.type(queue_key).decode("ascii", "replace")
    if kind in ("list", "none"):
        return ""
    return f"its queue key {keys.printable(queue_key)} holds a {kind}, not a list of jobs"


# -- lists -------------------------------------------------------------------------------------------------------
def recover_lists(client: redis.Redis, lists: Iterable[tuple[bytes, bytes]], policy: RecoveryPolicy,
                  interrupted: bool, reason: str) -> Recovered:
    """Move every job of the given (queue key, working list) pairs back to the head of its queue.

    With `interrupted`, count the interruption (`reason`: how the worker died) and kill poison pills; after a
    clean exit jobs go back byte for byte. A list that fails is reported in `failed`; the others go on.
    Redis outages are raised: the caller's outage handling owns them.
    """
    move = scripts.load(client, "move", uses=("dead",))
    total = Recovered()
    for queue_key, working in lists:
        try:
            total += _recover_list(client, move, queue_key, working, policy, reason if interrupted else None)
        except OUTAGE_ERRORS:
            raise
        except Exception as exc:  # WRONGTYPE and the like: this list's data, not the others'
            total.failed.append((working, f"{type(exc).__name__}: {exc}"))
    return total


def _recover_list(client: redis.Redis, move: Any, queue_key: bytes, working: bytes, policy: RecoveryPolicy,
                  interrupted_by: str | None) -> Recovered:
    found = Recovered()
    refusal = _queue_refusal(client, queue_key)
    if refusal and client.exists(working):
        log.error("the jobs of %s go to the dead set: %s", keys.printable(working), refusal)
    stalled: list[bytes] = []
    while True:
        jobs = client.lrange(working, 0, BATCH - 1)  # newest first: the oldest batch is pushed last
        if not jobs or jobs == stalled:  # reading an unchanged batch again would spin
            return found
        now = time.time()
        script_keys: list[bytes | str] = [keys.QUEUES, keys.DEAD, keys.DEAD_REASONS]
        deaths: list[bytes] = []
        args: list[object] = [now, now - policy.dead_timeout, policy.dead_max_jobs]
        # Newest first: each RPUSH lands at the head, so the oldest (right-most) job ends up next in line.
        for raw in jobs:
            if refusal:
                fate = Move("dead", raw, refusal)
            elif interrupted_by is not None:
                fate = count_interruption(raw, policy, interrupted_by, now)
            else:
                fate = Move("queue", raw)
            script_keys += [working, queue_key]
            args += [fate.mode, raw, fate.payload, fate.reason]
            if fate.mode == "dead":
                deaths.append(raw)
            if fate.mode == "dead" and not refusal:
                log.error("job moved to the dead set: %s: %.120r", fate.reason or "its worker died "
                          f"{policy.max_interruptions} times running it", raw)
        requeued, killed, stuck = move(keys=script_keys, args=args)
        found.requeued += requeued
        found.killed += killed
        if deaths and killed == len(deaths):  # each of them is in the dead set now (a partial move: unknown which)
            _report_deaths(client, deaths)
        if stuck and not requeued + killed:
            found.failed.append((working, f"{stuck} job(s) stay: {_queue_refusal(client, queue_key)}"))
            return found
        stalled = [] if requeued + killed else jobs  # none moved: another recovery took them, go on if it did


def _report_deaths(client: redis.Redis, payloads: list[bytes]) -> None:
    """Jobs that recovery killed: their batches hear of the death and their unique locks are released (each
    imported only then, so the master does not load the feature code for nothing)."""
    if any(b'"bid"' in raw for raw in payloads):
        from ..features.batch import report_deaths
        report_deaths(client, payloads)
    if any(b'"unique_for"' in raw for raw in payloads):  # their unique locks go, as a death in a worker's do
        from ..features.unique import release_dead
        release_dead(client, payloads)


def _key(name: str) -> bytes:
    """A key name we built as text, as bytes; a name from a non-UTF-8 environment keeps its bytes."""
    return name.encode("utf-8", "surrogateescape")


def working_lists(identity: str, queues: Sequence[str], threads: int) -> list[tuple[bytes, bytes]]:
    return [(_key(keys.queue(q)), _key(keys.working(q, identity, t))) for q in queues for t in range(threads)]


def recover_identity(client: redis.Redis, identity: str, queues: Sequence[str], threads: int,
                     policy: RecoveryPolicy, interrupted: bool, reason: str) -> Recovered:
    """Requeue a dead process's jobs and remove it from the process registry."""
    found = recover_lists(client, working_lists(identity, queues, threads), policy, interrupted, reason)
    name = _key(identity)
    pipe = client.pipeline(transaction=False)
    pipe.srem(keys.PROCESSES, name)
    pipe.unlink(keys.workers(name), keys.alive(name))
    pipe.execute()
    return found


class OrphanSweeper:
    """Recovers working lists whose owner's liveness key has expired; one master at a time.

    It reports each key it has to leave alone (a name not of the working-list shape, a key of another type)
    once, not on every sweep.
    """

    LOCK_TTL = 30

    def __init__(self, client: redis.Redis, policy: RecoveryPolicy) -> None:
        self._redis = client
        self._policy = policy
        self._reported: set[bytes] = set()
        self._release = client.register_script(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")

    def sweep(self, exclude: Set[str] = frozenset()) -> Recovered:
        """Recover abandoned working lists; `exclude` names live processes (this master's own workers,
        whose liveness key may be missing just after a Redis restart)."""
        token = secrets.token_hex(8)
        if not self._redis.set(keys.RECOVERY_LOCK, token, nx=True, ex=self.LOCK_TTL):
            return Recovered()
        try:
            return self._sweep({_key(i) for i in exclude})
        finally:
            self._release(keys=[keys.RECOVERY_LOCK], args=[token])

    def _sweep(self, exclude: Set[bytes]) -> Recovered:
        by_identity: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for key in self._redis.scan_iter(match=keys.WORKING_PATTERN, count=1000):
            parsed = keys.parse_working(key)
            if parsed is None:
                self._report(key, "not a working-list name (working:queue:<queue>:<host>:<pid>:<nonce>.<thread>)")
                continue
            queue, identity = parsed
            by_identity.setdefault(identity, []).append((keys.queue(queue), key))
        total = Recovered()
        for identity, lists in by_identity.items():
            if identity in exclude or self._redis.exists(keys.alive(identity)):
                continue
            found = recover_lists(self._redis, lists, self._policy, True, "its host stopped heartbeating")
            for key, why in found.failed:
                self._report(key, why)
            if found.requeued or found.killed:
                log.warning("recovered %d job(s) of %s, whose heartbeat expired (%d moved to the dead set)",
                            found.requeued + found.killed, keys.printable(identity), found.killed)
            total += found
        return total

    def _report(self, key: bytes, why: str) -> None:
        if key in self._reported or len(self._reported) >= REPORTED_MAX:
            return
        self._reported.add(key)
        log.warning("orphan sweep: left %s as it is: %s", keys.printable(key), why)
