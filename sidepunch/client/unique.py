"""The client's half of unique jobs: the digest of a push, and pushes that take their jobs' locks atomically.

A job dict with `unique_for` (a class option, a `set(...)` option or an item key) gets `unique_digest` when it is
normalised, while the client still has the job class (`unique_args(self, *args)`, if the class defines it,
says what identifies a duplicate; default: the args). Its entries are then a `Locked` list: a plain list of
entries to any writer, plus each entry's lock. `prepare.commands` turns a Locked push into one script
(core/lua/unique_push.lua, by EVAL, so the async client pipelines it with other pushes like any command): every
unique job is written only if it took its lock, in the same round trip, so concurrent pushes from any number of
threads and processes write exactly one job, and a push retried after an outage whose first attempt landed is
not written twice. The client's write seam records the entries the script refused in `refused`; `push` then
returns None, `push_bulk` None in each refused job's place, and each refusal is logged at debug.

A job pushed inside `with batch:` (a payload with `bid`) takes no lock: the batch registers its jid before the
write, and a refused one would keep the batch waiting forever.

A writer that does not send `commands(entries)` (inline mode, a replaced write seam) writes a Locked push as
the plain entries it also is: every job is written and nothing is refused; fake mode keeps its locks in memory
(testing/locks.py). A writer that sends them
later (a Django on_commit push) takes the locks then: a refused job is dropped and logged, and its push had
already returned the jid.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and this package only).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from ..core import keys, scripts
from ..core.unique import DIGEST, PUSH_SCRIPT, digest, job_digest, lock_ttl_ms, lock_value
from .options import check_feature_options

log = logging.getLogger("sidepunch.unique")
#: One entry's lock: (lock key, value, TTL in ms).
Lock = tuple[str, str, int]


def add_digest(job: dict[str, Any], job_class: Any) -> None:
    """Check a unique job's options and give it `unique_digest`; `job_class` is its Job class, or None for a
    push by class name (then the default digest). TypeError or ValueError says what is wrong."""
    check_feature_options(job, "job")
    identify = getattr(job_class, "unique_args", None) if job_class is not None else None
    identity = job_class().unique_args(*job["args"]) if callable(identify) else job["args"]
    job[DIGEST] = digest(job["class"], job["queue"], identity)


class Locked(list):
    """The entries of one push with unique jobs. `locks[i]` is entry i's Lock, or None; `refused` holds the
    indexes of the entries the write refused (set by the write that honoured the locks)."""

    def __init__(self, entries: Sequence[Any], locks: Sequence[Lock | None], jids: Sequence[str],
                 script: str) -> None:
        super().__init__(entries)
        self.script = script  # the text of unique_push.lua
        self.locks = list(locks)
        self.job_ids = list(jids)
        self.refused: frozenset[int] = frozenset()

    def commands(self) -> list[tuple]:
        """The push as one EVAL of unique_push.lua (see its header for KEYS and ARGV)."""
        names: list[Any] = [keys.QUEUES]
        argv: list[Any] = []
        for (queue, at, payload), lock in zip(self, self.locks):
            target = keys.SCHEDULE if at is not None else keys.queue(queue)
            names += (target, lock[0] if lock else target)
            argv += (queue, "" if at is None else repr(float(at)), payload, lock[1] if lock else "",
                     lock[2] if lock else 0)
        return [("EVAL", self.script, len(names), *names, *argv)]

    def settle(self, replies: Sequence[Any]) -> Sequence[Any]:
        """Record which jobs the script refused (its reply: 1 written, 0 refused, per entry); returns `replies`."""
        flags = replies[0] if replies else None
        if isinstance(flags, list) and len(flags) == len(self):
            self.refused = frozenset(i for i, flag in enumerate(flags) if flag == 0)
            for i in sorted(self.refused):
                lock = self.locks[i]
                log.debug("refused a duplicate push of a unique job: jid=%.100s, its lock %s is held",
                          self.job_ids[i], lock[0] if lock else "")
        return replies

    def jids(self, jids: Sequence[str | None]) -> list[str | None]:
        """`jids` (one per job of the push, None for those a middleware stopped, which have no entry) with None
        in place of each refused job."""
        if not self.refused:
            return list(jids)
        out, entry = list(jids), 0
        for position, jid in enumerate(jids):
            if jid is not None:
                if entry in self.refused:
                    out[position] = None
                entry += 1
        return out


def push_script() -> str:
    """The text of the script a Locked push sends (read by each Preparer once, as other scripts are)."""
    return scripts.source(PUSH_SCRIPT)


def with_locks(entries: list[Any], jobs: Sequence[dict[str, Any]], now: float, script: str) -> list[Any]:
    """`entries` (one per job of `jobs`, in order) as a Locked push if any job is unique, else unchanged;
    `script` is push_script()'s text."""
    locks: list[Lock | None] = []
    for (_, at, _), job in zip(entries, jobs):
        # A batch registers its jobs' jids before the write: one refused here would keep its batch waiting
        # forever, so a job pushed inside `with batch:` takes no lock.
        ttl = lock_ttl_ms(job, now, at) if "unique_for" in job and "bid" not in job else None
        locks.append(None if ttl is None else (keys.unique_lock(job_digest(job)), lock_value(job), ttl))
    if not any(locks):
        return entries
    return Locked(entries, locks, [job["jid"] for job in jobs], script)
