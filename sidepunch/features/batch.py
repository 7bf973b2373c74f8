"""Batches, the worker and push side: which pushes join a batch, and what a batch job's ending does to its batch.

`BatchFeature` (payload key "bid") does two things. On a push made inside `with batch:` (a context variable, so
each thread and each asyncio task sees its own block) it stamps the job with the batch id and notes its jid in
the block, which registers the jids in the batch when the block ends (and every FLUSH_EVERY jids before). Around
a run it gives the job its batch as `self.batch` and reports how the job ended, through one Lua script per
state change (core/lua/batch_*.lua), which also pushes the callback jobs the change calls for in the same
script: a crash between the two cannot lose or double a callback, and a job that runs twice reports twice to no
effect (the state is kept per jid). A job that expired unrun counts as a success; a Reschedule or RateLimited is
not an ending. A job that died reports from `on_death`.

`BatchRef` is a handle on an existing batch (what a running job sees); sidepunch.client.batch.Batch creates one.
Imports only sidepunch.core.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import secrets
import time
from typing import Any, Callable

import redis

from ..core import keys, scripts
from ..core.middleware import Expired, Feature, Reschedule
from ..core.payload import encode

log = logging.getLogger("sidepunch.batch")
#: A block registers its jids in the batch every this many pushes, so a huge block's status stays current and
#: its memory bounded (a registration ahead of its push only holds the batch open longer, never closes it early).
FLUSH_EVERY = 1000
#: What a batch id may be: generated ones are 24 hex digits; anything else read from a payload is ignored.
_BID = re.compile(r"[0-9A-Za-z_-]{8,64}")


def valid_bid(bid: Any) -> bool:
    """True for a bid this module will build Redis keys from (a payload's `bid` is hostile input)."""
    return type(bid) is str and _BID.fullmatch(bid) is not None


class Store:
    """The batch scripts bound to one Redis client (or a function that makes it, called on first use)."""

    def __init__(self, redis: Any, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self.clock = clock
        self._scripts: dict[str, Any] = {}  # loaded on first use: a Client builds a Store it may never use

    @property
    def redis(self) -> Any:
        if callable(self._redis) and not hasattr(self._redis, "connection_pool"):
            self._redis = self._redis()
        return self._redis

    def _script(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = scripts.unbound(name, uses=("batch_lib",))
        return script

    def _args(self, bid: str) -> list[Any]:
        return [keys.BATCH_PREFIX, repr(float(self.clock())), keys.BATCH_TTL, bid]

    def open(self, bid: str, counted: bool, settings: dict[str, str]) -> bool:
        """Count a block open (`counted`), creating the batch with `settings` if new; True if it was created."""
        args = [*self._args(bid), "1" if counted else "0", json.dumps(settings), secrets.randbelow(2 ** 31)]
        return bool(self._script("batch_open")(keys=[keys.BATCHES], args=args, client=self.redis))

    def close(self, bid: str, how: str, jids: list[str]) -> bool:
        """Register `jids`; `how`: "close" a counted block, "release" a running job's, "flush" (stays open)."""
        return bool(self._script("batch_close")(keys=[], args=[*self._args(bid), how, *jids], client=self.redis))

    def mark(self, bid: str, jid: str, event: str) -> bool:
        """Report a job's ending ("success", "failure", "death"); False if the batch is gone."""
        return bool(self._script("batch_mark")(keys=[], args=[*self._args(bid), jid, event], client=self.redis))


class _Block:
    """One `with batch:` block in one context: the jids pushed in it not yet registered."""

    __slots__ = ("ref", "jids", "token")

    def __init__(self, ref: BatchRef) -> None:
        self.ref = ref
        self.jids: list[str] = []
        self.token: contextvars.Token | None = None

    def add(self, jid: str) -> None:
        self.jids.append(jid)
        if len(self.jids) >= FLUSH_EVERY:
            self.flush("flush")

    def flush(self, how: str) -> None:
        jids, self.jids = self.jids, []
        self.ref.store.close(self.ref.bid, how, jids)


#: The innermost `with batch:` block of this context (thread or asyncio task), or None.
_CURRENT: contextvars.ContextVar[_Block | None] = contextvars.ContextVar("sidepunch_batch", default=None)


def current_bid() -> str | None:
    """The id of the batch whose `with` block this code runs in, or None."""
    block = _CURRENT.get()
    return None if block is None else block.ref.bid


class BatchRef:
    """A handle on an existing batch: `bid`, and `with ref:` to add the pushes made in the block to it.

    A running job of the batch gets one as `self.batch` (`held`): the job itself keeps the batch from completing,
    so its block is not counted as open, and a worker killed inside it cannot leave the batch open for good."""

    held = True

    def __init__(self, bid: str, store: Store) -> None:
        self.bid = bid
        self.store = store

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.bid}>"

    def _opened(self) -> None:
        """Called as a block opens (a new batch is created here, see client.batch.Batch)."""

    def __enter__(self) -> BatchRef:
        self._opened()
        block = _Block(self)
        block.token = _CURRENT.set(block)
        return self

    def __exit__(self, *exc: Any) -> None:
        block = _CURRENT.get()
        if block is None or block.ref is not self:
            raise RuntimeError(f"batch {self.bid}: `with` blocks must end in the order they began")
        _CURRENT.reset(block.token)  # type: ignore[arg-type]
        # Registered even when the block raised: a push that raised may still have landed, and a batch that
        # waits on a job that never came is visible (BatchStatus), where one that completed early is not.
        block.flush("release" if self.held else "close")

    async def __aenter__(self) -> BatchRef:
        await asyncio.to_thread(self._opened)
        block = _Block(self)
        block.token = _CURRENT.set(block)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        block = _CURRENT.get()
        if block is None or block.ref is not self:
            raise RuntimeError(f"batch {self.bid}: `async with` blocks must end in the order they began")
        _CURRENT.reset(block.token)  # type: ignore[arg-type]
        await asyncio.to_thread(block.flush, "release" if self.held else "close")


class BatchFeature(Feature):
    """Joins pushes made inside `with batch:` to the batch, and reports each batch job's ending to it."""

    payload_keys = frozenset({"bid"})

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.store = Store(lambda: self.context.redis)

    def applies_to_push(self, job: dict) -> bool:
        return _CURRENT.get() is not None  # a job that brings its own bid is left as it is

    def around_push(self, job: dict, call_next: Callable[[dict], Any]) -> Any:
        block = _CURRENT.get()
        if block is None:
            return call_next(job)
        job["bid"] = block.ref.bid
        result = call_next(job)
        if type(result) is dict and result.get("bid") == block.ref.bid and type(result.get("jid")) is str:
            try:
                encode(result)
            except Exception:  # the push refuses it and raises: it never lands, so it is not counted
                return result
            block.add(result["jid"])
        return result

    def _ref(self, instance: Any, job: dict) -> tuple[str, str] | None:
        """(bid, jid) of a batch job, with `self.batch` set on the instance; None for a bid not ours."""
        bid, jid = job.get("bid"), job.get("jid")
        if not valid_bid(bid) or type(jid) is not str or not jid:
            return None
        try:
            instance.batch = BatchRef(bid, self.store)
        except Exception:  # a class with __slots__ or a read-only property: it just does not see its batch
            pass
        return bid, jid

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        ids = self._ref(instance, job)
        if ids is None:
            return call_next()
        try:
            result = call_next()
        except Reschedule:
            raise  # back to the schedule: not an ending
        except Expired:
            self._report_success(*ids)
            raise
        except BaseException:
            self._report_failure(*ids)
            raise
        if not isinstance(result, Reschedule):
            self._report_success(*ids)
        return result

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        ids = self._ref(instance, job)
        if ids is None:
            return await call_next()
        try:
            result = await call_next()
        except Reschedule:
            raise
        except Expired:
            await asyncio.to_thread(self._report_success, *ids)
            raise
        except BaseException:
            await asyncio.to_thread(self._report_failure, *ids)
            raise
        if not isinstance(result, Reschedule):
            await asyncio.to_thread(self._report_success, *ids)
        return result

    def _report_success(self, bid: str, jid: str) -> None:
        """Reported before the acknowledgement: a crash between reruns the job, whose second report is a no-op.
        An outage propagates, so the job is retried and reports again then; a refusal (batch keys of the wrong
        type or with broken counters, which no retry can mend) is logged and the job stays a success."""
        try:
            self.store.mark(bid, jid, "success")
        except redis.ResponseError as exc:
            log.error("batch %s: the success of jid=%.100s was not recorded (%s)", bid, jid, exc)

    def _report_failure(self, bid: str, jid: str) -> None:
        """A failure that cannot be reported is logged, not raised: the job's own error must reach the retry
        logic, and its next ending (retry or death) reports again."""
        try:
            self.store.mark(bid, jid, "failure")
        except Exception as exc:
            log.warning("batch %s: the failure of jid=%.100s was not recorded (%s)", bid, jid, exc)

    def on_death(self, job: dict, exc: BaseException) -> None:
        bid, jid = job.get("bid"), job.get("jid")
        if valid_bid(bid) and type(jid) is str and jid:
            try:
                self.store.mark(bid, jid, "death")
            except redis.RedisError as problem:  # one line, not a traceback: the job itself is recorded already
                log.error("batch %s: the death of jid=%.100s was not recorded (%s)", bid, jid, problem)


def report_deaths(client: Any, payloads: list[bytes]) -> None:
    """Tell their batches that these jobs died outside a worker (crash recovery moved them to the dead set):
    no on_death hook runs there, and a batch would otherwise wait for them for ever. Unreadable payloads and
    payloads of no batch are skipped; a report Redis refuses is logged."""
    store = Store(client)
    for raw in payloads:
        try:
            job = json.loads(raw)
        except ValueError:
            continue
        bid = job.get("bid") if type(job) is dict else None
        jid = job.get("jid") if type(job) is dict else None
        if valid_bid(bid) and type(jid) is str and jid:
            try:
                store.mark(bid, jid, "death")
            except redis.RedisError as exc:
                log.error("batch %s: the death of jid=%.100s was not recorded (%s)", bid, jid, exc)


__all__ = ["report_deaths", "BatchFeature", "BatchRef", "Store", "current_bid", "valid_bid", "FLUSH_EVERY"]
