"""The sync client: the one place jobs are written to Redis from ordinary code.

`Client.push` and `Client.push_bulk` take Sidekiq's item dict; the client's Preparer (prepare.py) normalises
and validates it, runs client middleware and encodes it; then the jobs are written in one round trip: SADD
queues + LPUSH queue:<q>, or ZADD schedule for jobs with `at`. Every job of a call is validated and encoded
before anything is sent, so bad input raises TypeError or ValueError naming the field or argument and writes
nothing. The async client (aio.py) shares all of that and differs only in how it writes.

The write seam: every push (single, bulk in both forms, push_batches, scheduled or not) reaches Redis through
`Client.write(entries)` and nothing else, with the encoded jobs of one atomic push. A client may replace that
one method (subclass and override it, or pass `writer=`), so validation and middleware still run as in
production; a client's async twin (aio.twin_of) writes through the replacement too. The testing modes
(sidepunch.testing) take over that same call for every client in the process: while one is active
(modes.active), the entries go to it instead of `write`, whatever the client. The only module-global state
in the package is the default client that `configure()` sets and that testing mode (modes.py says why).
Reliable push (reliable.py, opt-in with `reliable_push=True`) lives behind the default `write`: a push that meets an
outage is kept in memory and sent when Redis answers, instead of retrying for RETRY_FOR and raising.
After a write that returned, the built-in features that joined the push (a `with batch:` block) hear which
jids it wrote and which it refused (`FeatureSet.after_push`, see `written`); a plain push asks nothing.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and this package only).
"""
from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

import redis as redis_lib

from ..core.connection import OUTAGE_ERRORS, make_client, resolve_url
from ..core.middleware import Middleware, MiddlewareContext
from . import modes
from .prepare import Entry, Preparer, commands
from .reliable import DEFAULT_LIMIT, ReliablePush, check_limit
from .unique import Locked
from .wire import Wire

#: Seconds a push keeps retrying through a Redis restart or failover before it raises. A retried push whose
#: first attempt did land gives a duplicate job, never a lost one.
RETRY_FOR = 10.0

Writer = Callable[[Sequence[Entry]], Any]
__all__ = ["RETRY_FOR", "Client", "Entry", "Writer", "configure", "default_client", "written"]


class Client:
    """Pushes jobs. Thread-safe; one per process is plenty. Connects on first use, not when built."""

    def __init__(self, redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
                 middleware: Sequence[Any] = (), writer: Writer | None = None, reliable_push: bool = False,
                 reliable_push_limit: int = DEFAULT_LIMIT) -> None:
        """`middleware`: Middleware subclasses (built here, with this client's context), Middleware instances,
        or functions `mw(job, call_next)`. `writer`: a function that replaces the write seam (see `write`).
        `reliable_push`: keep pushes that meet a Redis outage in memory, at most `reliable_push_limit` jobs, and
        send them when Redis answers (reliable.py)."""
        limit = check_limit(reliable_push, reliable_push_limit)
        #: The outage buffer of reliable push (None: off; a push then retries for RETRY_FOR and raises).
        self.reliable = ReliablePush(self._send_once, limit) if reliable_push else None
        self._url = redis_url
        self._redis = redis
        self._own_redis = redis is None  # then made from the URL on first use
        self._lock = threading.Lock()
        self._wire = Wire()  # the round trips of this client's pushes
        #: The pure half of a push (validation, middleware, encoding), shared with this client's async twin.
        self.preparer = Preparer(middleware, MiddlewareContext(lambda: self.redis))
        self.twin: Any = None  # the AsyncClient that aio.twin_of makes for this client, on first use
        if writer is not None:
            if inspect.iscoroutinefunction(writer):  # its coroutines would never run: every push lost
                raise TypeError("Client calls its writer synchronously; an async writer belongs to an AsyncClient")
            self.write = writer  # type: ignore[method-assign]

    @property
    def redis_url(self) -> str | None:
        """The URL given (None: $REDIS_PROVIDER / $REDIS_URL / the default, resolved at the first push)."""
        return self._url

    @property
    def given_redis(self) -> redis_lib.Redis | None:
        """The redis client this client was built with, if it was."""
        return None if self._own_redis else self._redis

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        return self.preparer.middleware

    def install(self, middleware: Sequence[Middleware]) -> None:
        """Add built middleware outermost (a worker adds the daemon's, so pushes from jobs pass through them)."""
        self.preparer.install(middleware)

    @property
    def redis(self) -> redis_lib.Redis:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    # With reliable push, an outage is met at once and buffered instead of retried for RETRY_FOR.
                    retry_for = 0.0 if self.reliable is not None else RETRY_FOR
                    self._redis = make_client(resolve_url(self._url, os.environ), retry_for=retry_for)
        return self._redis

    def push(self, item: Mapping[str, Any]) -> str | None:
        """Enqueue one job; returns its jid, or None if a middleware stopped it or it is a unique job whose
        duplicate holds the lock (logged at debug).

        Bad input raises TypeError or ValueError naming the field or argument, and nothing is written.
        """
        # a buffered push's refusals are not known when it returns: its batched unique jobs take no lock
        prepared = self.preparer.prepare(item, self.reliable is None)
        if prepared is None:
            return None
        entries, jid, report = prepared
        mode = modes.active  # a testing mode takes every push in the process (modes.py)
        (self.write if mode is None else mode.write)(entries)
        refused = type(entries) is Locked and bool(entries.refused)
        if report:  # a feature wants the outcome (a batch counts only the jobs written)
            self.preparer.features.after_push(() if refused else (jid,), (jid,) if refused else ())
        return None if refused else jid

    def push_bulk(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str | None]:
        """Enqueue many jobs in one round trip; if any job is bad, none is written.

        Sidekiq's form: one item whose `args` is a list of argument lists (and `at` a number or a list of
        numbers); every job gets a fresh jid and shares `created_at`. Also accepted: a list of item dicts.
        Returns one jid per job, in order, with None in the place of a job a middleware stopped or a refused
        duplicate of a unique job.
        """
        return self.push_batches([items])

    def push_batches(self, batches: Iterable[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> list[str | None]:
        """Several push_bulk calls that stand or fall together on bad input.

        Every batch is validated and encoded before the first is sent; then each goes in its own round trip.
        Errors number the jobs across all batches.
        """
        jids: list[str | None] = []
        for entries, batch_jids, report in self.preparer.prepare_batches(batches, self.reliable is None):
            if entries:
                mode = modes.active
                (self.write if mode is None else mode.write)(entries)
                batch_jids = written(self.preparer, entries, batch_jids, report)
            jids.extend(batch_jids)
        return jids

    def write(self, entries: Sequence[Entry]) -> Any:
        """THE WRITE SEAM: the one method through which every push reaches Redis, in one round trip.

        `entries` are the encoded jobs of one atomic push (one push, or one batch of a bulk push), each a tuple
        (queue, at, payload): `at` is its due time, or None to enqueue it now; `payload` the JSON bytes as
        Redis would store them. A testing mode (sidepunch.testing) takes this call while it is active. With
        reliable push, a write that meets an outage is kept in memory and sent later (reliable.py). A push of
        unique jobs (a unique.Locked list) goes as one script that writes each unique job only if it takes its
        lock, and records the refused ones on `entries` (not known for a push kept by reliable push: it returns
        its jid, and a duplicate refused when it is sent later is not written).
        """
        if self.reliable is None and type(entries) is list and len(entries) == 1 and entries[0][1] is None:
            queue, _, payload = entries[0]  # one job due now, the commonest push: packed in one step
            return self._wire.send_one(self.redis.connection_pool, queue, payload, _first_error)
        cmds = commands(entries)
        replies = self._send(cmds) if self.reliable is None else self.reliable.write(cmds, entries)
        if type(entries) is Locked and replies is not None:
            entries.settle(replies)
        return replies

    def _send(self, cmds: Sequence[tuple]) -> list[Any]:
        """Send commands pipelined on one pooled connection and read every reply (wire.py: what redis-py's
        Pipeline does, without its per-call layers, most of a single push's cost). Connection errors are
        retried as the client's Retry says, on a fresh connection; an error reply raises the first one."""
        return self._wire.send(self.redis.connection_pool, cmds, _first_error)

    def _send_once(self, cmds: Sequence[tuple]) -> list[Any]:
        """Reliable push's round trip: each command's reply, or the ResponseError Redis answered it with; raises
        only for an outage (OUTAGE_ERRORS, a refusal such as READONLY included), and tries once: the buffer
        retries."""
        return self._wire.send(self.redis.connection_pool, cmds, _outage)


def _first_error(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, redis_lib.ResponseError):
            raise reply
    return replies


def _outage(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, OUTAGE_ERRORS):
            raise reply
    return replies


def written(preparer: Preparer, entries: Sequence[Entry], jids: list[str | None],
            report: bool) -> list[str | None]:
    """After the write of one batch of a bulk push: `jids` with None in place of each refused duplicate, and
    the outcome told to the features that want it (`report`)."""
    refused: list[str] = []
    if type(entries) is Locked:
        jids, refused = entries.jids(jids), entries.refused_jids()
    if report:
        preparer.features.after_push([jid for jid in jids if jid is not None], refused)
    return jids


_default: Client | None = None
_default_lock = threading.Lock()


def configure(redis_url: str | None = None, *, redis: redis_lib.Redis | None = None,
              middleware: Sequence[Any] = (), writer: Writer | None = None, reliable_push: bool = False,
              reliable_push_limit: int = DEFAULT_LIMIT) -> Client:
    """Set the client that `Job.perform_async` and friends use in this process, and with it the one that
    `await Job.aperform_async(...)` and friends use (its async twin: same URL, middleware and `writer`).
    Middleware registered here is built once; in a worker, its around_perform and on_death hooks run too.
    `reliable_push` / `reliable_push_limit`: see Client (sync pushes only; the async twin does not buffer)."""
    global _default
    with _default_lock:
        _default = Client(redis_url, redis=redis, middleware=middleware, writer=writer, reliable_push=reliable_push,
                          reliable_push_limit=reliable_push_limit)
    return _default


def default_client() -> Client:
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default
