"""The async client: pushing jobs from asyncio code (FastAPI, Starlette, aiohttp) on redis.asyncio.

`AsyncClient.push`, `push_bulk` and `push_batches` are the sync client's, awaited: the same Preparer
(prepare.py) validates, runs the client middleware (plain functions, run in the event loop's thread before
the write) and encodes, so the payloads are byte-identical and bad input raises the same errors, writing
nothing. Only the write differs: every async push reaches Redis through `AsyncClient.write(entries)` (an
async def) and nothing else, replaceable like the sync seam (subclass, or `writer=`, a plain or async
function). Below the seam, aiolink.Link pipelines the pushes of one loop that are in flight together into
shared round trips, and retries through a Redis restart or failover for push.RETRY_FOR seconds as the sync
client does, never for a refused password.

redis.asyncio connections belong to the event loop that opened them, so an AsyncClient built with a URL keeps
one Link (one connection) per running loop, made on first use there and closed when that loop shuts down (or
by `aclose()`); one built with a redis.asyncio client uses it on the first loop it pushes from and refuses,
with an error saying so, any other. `twin_of(client)` is a sync Client's async twin (same URL, Preparer and
write seam); the default async client is the default Client's twin, so `sidepunch.configure()` sets both.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and this package only).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

from ..core.connection import make_client, resolve_url
from ..core.middleware import MiddlewareContext
from . import modes
from .aiolink import Link
from .prepare import Entry, Preparer, commands
from .push import RETRY_FOR, Client, default_client
from .unique import Locked

AsyncWriter = Callable[[Sequence[Entry]], "Awaitable[Any] | Any"]
__all__ = ["AsyncClient", "AsyncWriter", "default_async_client", "twin_of"]


class AsyncClient:
    """Pushes jobs from coroutines: `await client.push(item)`. Connects on first use, not when built.

    `redis_url`: as for Client (None: $REDIS_PROVIDER / $REDIS_URL / the default); `redis`: a redis.asyncio
    client to use instead (on one event loop only; the client keeps one connection of its pool); `middleware`:
    as for Client, run synchronously before the write; `writer`: a function (plain or async) that replaces the
    write seam (see `write`).
    """

    def __init__(self, redis_url: str | None = None, *, redis: Any = None, middleware: Sequence[Any] = (),
                 writer: AsyncWriter | None = None) -> None:
        if redis is not None and not inspect.iscoroutinefunction(getattr(redis, "execute_command", None)):
            raise TypeError(f"AsyncClient(redis=...) takes a redis.asyncio client, got {type(redis).__name__}; "
                            "a sync redis client belongs to sidepunch.Client")
        self._url = redis_url
        self._given = redis
        self._given_loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[asyncio.AbstractEventLoop, tuple[Link, AsyncIterator[None]]] = {}  # link, its closer
        self._given_link: Link | None = None
        self._lock = threading.Lock()
        self._no_url = ""  # why this client cannot connect by itself, if it cannot (see twin_of)
        #: The pure half of a push (validation, middleware, encoding); middleware gets a sync client.
        self.preparer = Preparer(middleware, MiddlewareContext(self._sync_redis))
        if writer is not None:
            self.write = _awaitable(writer)  # type: ignore[method-assign]

    @property
    def middleware(self) -> tuple[Any, ...]:
        return self.preparer.middleware

    def install(self, middleware: Sequence[Any]) -> None:
        """Add built middleware outermost (a twin shares this with its Client)."""
        self.preparer.install(middleware)

    async def push(self, item: Mapping[str, Any]) -> str | None:
        """Enqueue one job; returns its jid, or None if a middleware stopped it.

        Bad input raises TypeError or ValueError naming the field or argument, and nothing is written.
        """
        prepared = self.preparer.one(item)
        if prepared is None:
            return None
        entries = prepared[0]
        mode = modes.active  # a testing mode takes every push in the process (modes.py)
        await (self.write if mode is None else mode.awrite)(entries)
        if type(entries) is Locked and entries.refused:
            return None  # a duplicate of a unique job (Client.push)
        return prepared[1]

    async def push_bulk(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str | None]:
        """Enqueue many jobs in one round trip; if any job is bad, none is written (see Client.push_bulk)."""
        return await self.push_batches([items])

    async def push_batches(self, batches: Iterable[Mapping[str, Any] | Sequence[Mapping[str, Any]]]
                           ) -> list[str | None]:
        """Several push_bulk calls that stand or fall together on bad input: every batch is validated and
        encoded before the first is sent; then each goes in its own round trip."""
        jids: list[str | None] = []
        for entries, batch_jids in self.preparer.batches(batches):
            if entries:
                mode = modes.active
                await (self.write if mode is None else mode.awrite)(entries)
                if type(entries) is Locked:
                    batch_jids = entries.jids(batch_jids)
            jids.extend(batch_jids)
        return jids

    async def write(self, entries: Sequence[Entry]) -> Any:
        """THE WRITE SEAM's async half: the one method through which every async push reaches Redis, in one
        round trip. `entries` are as for Client.write (a unique push too: its script goes in the same pipelined
        round trip, so no push blocks the loop). A testing mode (sidepunch.testing) takes this call while it
        is active."""
        replies = await self._send(commands(entries))
        if type(entries) is Locked:
            entries.settle(replies)
        return replies

    async def aclose(self) -> None:
        """Close the connections this client opened on the running loop (e.g. at an app's shutdown). Not needed
        under asyncio.run or another runner that shuts down async generators: they are closed then."""
        with self._lock:
            found = self._links.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].redis.connection_pool.disconnect()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _link_here(self) -> Link:
        """This client's Link for the running event loop, made on first use there."""
        loop = asyncio.get_running_loop()
        if self._given is not None:
            return self._given_for(loop)
        if self._no_url:
            raise RuntimeError(self._no_url)
        fresh = False
        with self._lock:
            for closed in [other for other in self._links if other.is_closed()]:
                del self._links[closed]  # a loop closed without shutting down: its sockets close as collected
            found = self._links.get(loop)
            if found is None:
                link = Link(make_client(resolve_url(self._url, os.environ), aio=True), RETRY_FOR)
                found = self._links[loop] = (link, _closer(link.redis))
                fresh = True
        if fresh:
            await anext(found[1])  # from now on the loop finalises it when it shuts down
        return found[0]

    def _given_for(self, loop: asyncio.AbstractEventLoop) -> Link:
        with self._lock:
            if self._given_loop is not None and self._given_loop is not loop:
                raise RuntimeError("this AsyncClient was given a redis.asyncio client that was first used on "
                                   "another event loop, and redis.asyncio connections belong to one loop; "
                                   "build the AsyncClient with a URL instead (it keeps a connection per loop)")
            if self._given_link is None:
                self._given_loop, self._given_link = loop, Link(self._given, RETRY_FOR)
        return self._given_link

    def _sync_redis(self) -> Any:
        """What the middleware context's `redis` gives: a sync client for this client's URL (middleware is
        sync), or the redis.asyncio client this client was given if it has no URL."""
        if self._given is not None and self._url is None:
            return self._given
        return make_client(resolve_url(self._url, os.environ), retry_for=RETRY_FOR)

    async def _send(self, cmds: Sequence[tuple]) -> list[Any]:
        """Send one push's commands through this loop's Link (which pipelines concurrent pushes together and
        retries an outage as the sync client does); returns their replies."""
        found = self._links.get(asyncio.get_running_loop())
        link = found[0] if found is not None else await self._link_here()
        return await link.send(cmds)


async def _closer(client: Any) -> AsyncIterator[None]:
    """Closes `client`'s connections when its loop shuts down: started once on that loop, this generator
    stays suspended until the loop's shutdown_asyncgens (asyncio.run, asyncio.Runner and most runners call
    it before closing a loop) finalises it there, while the loop can still close sockets cleanly."""
    try:
        yield
    finally:
        await client.connection_pool.disconnect()


def _awaitable(writer: AsyncWriter) -> Callable[[Sequence[Entry]], Awaitable[Any]]:
    """A writer as the async seam: an async function is awaited; a plain one (a sync testing mode's) is called."""
    async def write(entries: Sequence[Entry]) -> Any:
        result = writer(entries)
        return await result if inspect.isawaitable(result) else result
    return write


def twin_of(client: Client) -> AsyncClient:
    """`client`'s async twin, made once: the same URL, the same Preparer (so middleware, installed ones too),
    and, if the client's write seam was replaced (writer= or a subclass), that replacement."""
    twin = client.twin
    if twin is None:
        with client._lock:
            if client.twin is None:
                client.twin = _make_twin(client)
            twin = client.twin
    return twin


def _make_twin(client: Client) -> AsyncClient:
    replaced = "write" in vars(client) or type(client).write is not Client.write
    twin = AsyncClient(client.redis_url, writer=client.write if replaced else None)
    twin.preparer = client.preparer
    if client.redis_url is None and client.given_redis is not None:
        twin._no_url = ("this Client was built with a redis client, which async pushes cannot use: build it (or "
                        "sidepunch.configure) with a Redis URL, or push through a sidepunch.AsyncClient")
    return twin


def default_async_client() -> AsyncClient:
    """The client `await Job.aperform_async(...)` uses: the twin of the default Client (`sidepunch.configure`)."""
    return twin_of(default_client())
