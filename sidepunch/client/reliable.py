"""Reliable push (Sidekiq Pro's reliable_push), opt-in: `Client(..., reliable_push=True, reliable_push_limit=1000)`
or the same two arguments to `sidepunch.configure`.

`ReliablePush` owns a client's buffer: a push that meets a Redis outage (a connection error, a timeout, or a
refusal such as LOADING or READONLY: core.connection.OUTAGE_ERRORS) is kept in memory, in order, and the push
returns its jid at once instead of retrying for RETRY_FOR seconds. While anything is buffered, later pushes of the
process join the end of the buffer, so the order of pushes is kept. A daemon thread, started when the buffer
gets its first push, sends the buffer in order, oldest first, once Redis answers again (retrying every
RETRY_EVERY seconds), and ends when it is empty.

Limits, all logged: the buffer holds at most `limit` jobs; a push that would go past it raises ReliablePushFull
(a redis.ConnectionError, so code that handled an outage before still does) and is not kept: refused, never
silently dropped. At process exit (atexit), the buffer is sent for up to EXIT_FLUSH seconds; jobs still in it then
are lost, and an error line says how many, with their jids. A buffer belongs to the process that filled it: a
forked child starts with an empty one (the parent sends its own jobs). A push whose reply was lost in the outage
(sent, but the connection died before the answer) is sent again: it may arrive twice, never zero times.

A command Redis refuses for another reason (a `queue:<name>` key of another type) is not an outage: it stays at the
head of the buffer (only the refused commands, so nothing that landed is sent twice) and is retried, logged once,
until an admin fixes the key; the pushes behind it wait and then meet the limit, so the problem shows.
Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and this package only).
"""
from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Sequence

import redis as redis_lib

from ..core.connection import OUTAGE_ERRORS

log = logging.getLogger("sidepunch.client")

#: The default and the largest `reliable_push_limit` (jobs held in memory).
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10 ** 7
#: Seconds between two attempts to send the buffer while Redis does not answer.
RETRY_EVERY = 0.5
#: Seconds the atexit hook keeps trying to send what is left.
EXIT_FLUSH = 5.0
#: Most jids the loss line at exit names.
SHOWN_JIDS = 100

__all__ = ["DEFAULT_LIMIT", "EXIT_FLUSH", "MAX_LIMIT", "ReliablePush", "ReliablePushFull", "check_limit"]


class ReliablePushFull(redis_lib.ConnectionError):
    """Redis is unreachable and the reliable-push buffer is full: this push was not kept."""


def check_limit(reliable: Any, limit: Any) -> int:
    """The arguments of Client / configure: TypeError or ValueError naming the one at fault."""
    if type(reliable) is not bool:
        raise TypeError(f"reliable_push must be True or False, got {type(reliable).__name__}")
    if type(limit) is not int:
        raise TypeError(f"reliable_push_limit must be an int (jobs), got {type(limit).__name__}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"reliable_push_limit must be 1 to {MAX_LIMIT:,} jobs, got {limit}")
    return limit


def _at_exit(ref: "weakref.ref[ReliablePush]") -> None:
    buffer = ref()
    if buffer is not None:
        buffer.at_exit()


def _jid(payload: bytes) -> str:
    """The jid of an encoded job, for the log lines (the payload was written by this client: it is JSON)."""
    try:
        return str(json.loads(payload).get("jid"))
    except (ValueError, AttributeError):
        return "?"


class _Held:
    """One buffered push: its commands (what is left to send of them), its job count and jids."""

    __slots__ = ("cmds", "jobs", "jids")

    def __init__(self, cmds: list[tuple], jobs: int, jids: list[str]) -> None:
        self.cmds, self.jobs, self.jids = cmds, jobs, jids


class ReliablePush:
    """The buffer of one client. `send(cmds)` is one round trip that returns each command's reply or error and
    raises only for an outage (the client's `_send_once`)."""

    def __init__(self, send: Callable[[Sequence[tuple]], list[Any]], limit: int = DEFAULT_LIMIT) -> None:
        self._send = send
        self.limit = limit
        self._lock = threading.Lock()  # the buffer's state
        self._sending = threading.Lock()  # one sender of the head at a time (the thread, or the exit hook)
        self._held: collections.deque[_Held] = collections.deque()
        self._jobs = 0  # jobs in the buffer
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._exit_hook = False
        self._full_logged = False
        self._refused_logged = False

    @property
    def buffered(self) -> int:
        """Jobs waiting in the buffer."""
        return self._jobs

    def write(self, cmds: list[tuple], entries: Sequence[Any]) -> list[Any] | None:
        """Send one push's commands (`entries`: its (queue, at, payload) jobs) and return the replies, or keep
        them and return None: behind others already kept, or because Redis is out. A reply Redis refused (not an
        outage) raises, as without."""
        if self._held and self._forked():
            self._drop_parents()
        if not self._held:
            try:
                replies = self._send(cmds)
            except OUTAGE_ERRORS as exc:
                self._keep(cmds, entries, exc)
                return None
            for reply in replies:
                if isinstance(reply, redis_lib.ResponseError):
                    raise reply
            return replies
        self._keep(cmds, entries, None)
        return None

    def _keep(self, cmds: list[tuple], entries: Sequence[Any], exc: BaseException | None) -> None:
        jids = [_jid(entry[2]) for entry in entries]
        with self._lock:
            if self._jobs + len(jids) > self.limit:
                if not self._full_logged:
                    log.error("reliable push: the buffer is full (%d jobs, reliable_push_limit=%d): refusing "
                              "pushes until Redis answers", self._jobs, self.limit)
                    self._full_logged = True
                raise ReliablePushFull(f"Redis is unreachable and the reliable-push buffer is full ({self._jobs} of "
                                       f"{self.limit} jobs): this push was not kept")
            if not self._held and exc is not None:
                log.warning("reliable push: Redis unreachable (%s: %s); keeping pushes in memory (at most %d jobs) "
                            "until it answers", type(exc).__name__, exc, self.limit)
            self._held.append(_Held(cmds, len(jids), jids))
            self._jobs += len(jids)
            self._start()

    def _start(self) -> None:
        """Under the lock: the sender thread and the exit hook, if not running / registered yet."""
        if not self._exit_hook:  # through a weak reference: a client dropped meanwhile is not kept alive by it
            atexit.register(_at_exit, weakref.ref(self))
            self._exit_hook = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sidepunch-reliable-push", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        sent = 0
        while True:
            outcome = self.flush_one()
            if outcome is None:
                break
            if outcome:
                sent += 1
            else:
                time.sleep(RETRY_EVERY)
        if sent:
            log.info("reliable push: Redis answers again; sent %d buffered push(es), in order", sent)

    def flush_one(self) -> bool | None:
        """Send the oldest buffered push: True if it went, False if it must wait, None when the buffer is empty
        (and the thread is then marked gone, under the lock, so the next push starts another)."""
        with self._sending:
            with self._lock:
                if not self._held:
                    self._thread = None
                    self._full_logged = self._refused_logged = False
                    return None
                head = self._held[0]
            try:
                replies = self._send(head.cmds)
            except OUTAGE_ERRORS:
                return False
            except Exception as exc:  # a bug-like failure must not kill the sender and strand the buffer
                log.error("reliable push: sending a buffered push failed (%s: %s); retrying", type(exc).__name__,
                          exc)
                return False
            return self._landed(head, replies)

    def _landed(self, head: _Held, replies: list[Any]) -> bool:
        """The head was answered: drop it, or keep only the commands Redis refused (what landed is not resent)."""
        left = [cmd for cmd, reply in zip(head.cmds, replies) if isinstance(reply, redis_lib.ResponseError)]
        with self._lock:
            if left:
                head.cmds = left
                self._refused(head, replies)
                return False
            if self._held and self._held[0] is head:  # not cleared meanwhile (a fork, see _drop_parents)
                self._held.popleft()
                self._jobs -= head.jobs
        return True

    def _refused(self, head: _Held, replies: list[Any]) -> None:
        if not self._refused_logged:
            error = next(r for r in replies if isinstance(r, redis_lib.ResponseError))
            log.error("reliable push: Redis refuses a buffered push (%s); it and the %d job(s) behind it wait "
                      "until that is fixed (jids %s)", error, self._jobs - head.jobs, ", ".join(head.jids[:10]))
            self._refused_logged = True

    def at_exit(self, seconds: float = EXIT_FLUSH) -> int:
        """At process exit: send what is left for up to `seconds`; log what is lost. Returns the jobs lost."""
        if self._forked() or not self._held:
            return 0
        deadline = time.monotonic() + seconds
        while self._held and time.monotonic() < deadline:
            if self.flush_one() is False:
                time.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))
        lost = [jid for held in list(self._held) for jid in held.jids]
        if lost:
            log.error("reliable push: %d job(s) lost at exit, Redis unreachable for %gs: jids %s%s", len(lost),
                      seconds, ", ".join(lost[:SHOWN_JIDS]), " ..." if len(lost) > SHOWN_JIDS else "")
        return len(lost)

    def _forked(self) -> bool:
        return os.getpid() != self._pid

    def _drop_parents(self) -> None:
        """In a forked child: the buffer it inherited is its parent's to send."""
        with self._lock:
            self._held.clear()
            self._jobs = 0
            self._thread = None
            self._pid = os.getpid()
