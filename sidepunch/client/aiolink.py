"""One event loop's way to Redis for the async client: round trips with retries, and concurrent pushes
coalesced into shared round trips.

`Link.send(commands)` writes one push's commands and returns their replies. A push that finds no other in
flight on its loop sends at once; pushes that arrive while one is in flight wait, and a flusher task sends all
of them in the next round trip (up to MAX_COALESCED pushes), their LPUSHes to one queue merged into one LPUSH
(likewise SADD queues and ZADD schedule), then hands each push the replies of the commands that carried it,
or their error. So N pushes awaited together (asyncio.gather, or N requests of a web app) cost about two
round trips on one connection, not N round trips on N connections. A push's commands were never atomic (the
sync client pipelines them without MULTI), and merging keeps their order per key, so no guarantee changes. A push whose caller is
cancelled while it waits is not sent; one cancelled mid-exchange may have landed (as a sync push interrupted
after its write), and its connection is closed, never reused out of step.

A round trip retries Redis being unreachable, restarting or failing over (connection.RETRIED_ERRORS) on a
fresh connection, on the schedule connection.retry_schedule gives the sync client, and never a refused
password. Error replies come back as RedisRefused when Redis refuses commands for now, as in the sync client.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core only).
"""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

import redis as redis_lib

from ..core.connection import RETRIED_ERRORS, SOCKET_TIMEOUT, refusal_or_error, retry_schedule

#: Pushes sent together in one round trip at most; the rest go in the next.
MAX_COALESCED = 1000
#: Commands whose arguments can be appended to one of the same name and key (see `_merge`).
_VARIADIC = frozenset({"SADD", "LPUSH", "ZADD"})


class Link:
    """The pushes of one event loop to one redis.asyncio client. Use it only on that loop."""

    def __init__(self, redis: Any, retry_for: float) -> None:
        self.redis = redis
        self._retry_for = retry_for
        self._pending: list[tuple[Sequence[tuple], asyncio.Future]] = []
        self._busy = False  # a round trip is in flight; new pushes wait for the flusher
        self._flusher: asyncio.Task | None = None
        self._conn: Any = None  # taken from the pool on first use and kept; the pool's disconnect closes it

    async def send(self, cmds: Sequence[tuple]) -> list[Any]:
        """Send one push's commands; returns their replies, or raises the first error reply or the outage."""
        if self._busy:
            future = asyncio.get_running_loop().create_future()
            self._pending.append((cmds, future))
            return await future
        self._busy = True
        try:
            replies = await self._round_trip(cmds)
        finally:
            self._hand_over()
        error = _first_error(replies)
        if error is not None:
            raise error
        return replies

    def _hand_over(self) -> None:
        if self._pending:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_COALESCED], self._pending[MAX_COALESCED:]
                await self._send_batch([(cmds, future) for cmds, future in batch if not future.done()])
        finally:
            for _, future in self._pending:  # only if the loop is shutting down and cancelled the flusher
                future.cancel()
            self._pending = []
            self._busy = False

    async def _send_batch(self, batch: list[tuple[Sequence[tuple], asyncio.Future]]) -> None:
        if not batch:
            return
        merged, uses = _merge([cmds for cmds, _ in batch])
        try:
            replies = await self._round_trip(merged)
        except Exception as exc:  # noqa: BLE001 - whatever it is, each waiting push raises it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # the flusher was cancelled (its loop is shutting down)
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), used in zip(batch, uses):
            mine = [replies[i] for i in used]
            if not future.done():
                error = _first_error(mine)
                future.set_result(mine) if error is None else future.set_exception(error)

    async def _round_trip(self, cmds: Sequence[tuple]) -> list[Any]:
        """Every reply (error replies as exceptions in the list), retrying an outage on a fresh connection."""
        backoff, retries = retry_schedule(self._retry_for)
        failures = 0
        while True:
            try:
                if self._conn is None:  # one is enough: a link has one round trip in flight at a time
                    self._conn = await self.redis.connection_pool.get_connection()
                return await _attempt(self._conn, cmds)
            except RETRIED_ERRORS as error:
                failures += 1
                if isinstance(error, redis_lib.AuthenticationError) or failures > retries:
                    raise  # retrying cannot fix a setting
                await asyncio.sleep(backoff.compute(failures))


async def _attempt(conn: Any, cmds: Sequence[tuple]) -> list[Any]:
    """One round trip on `conn` (connecting it if it is not), bounded by SOCKET_TIMEOUT as a whole."""
    try:
        async with asyncio.timeout(SOCKET_TIMEOUT):
            await conn.send_packed_command(conn.pack_commands(cmds), check_health=False)
            replies: list[Any] = []
            for _ in cmds:  # read every reply even after an error reply, so the connection stays in step
                try:
                    replies.append(await conn.read_response())
                except redis_lib.ResponseError as exc:
                    replies.append(exc)
    except BaseException as exc:  # an outage, or the task was cancelled mid-exchange: replies may be unread
        await conn.disconnect(nowait=True)
        if isinstance(exc, TimeoutError) and not isinstance(exc, redis_lib.RedisError):
            raise redis_lib.TimeoutError(f"no reply from Redis within {SOCKET_TIMEOUT:g} s") from None
        raise
    failover = next((reply for reply in replies if isinstance(reply, RETRIED_ERRORS)), None)
    if failover is not None:  # a replica refusing writes (READONLY): retried, as by the sync client
        raise failover
    return replies


def _merge(pushes: list[Sequence[tuple]]) -> tuple[list[tuple], list[list[int]]]:
    """The commands of several pushes as few commands: the SADDs, LPUSHes and ZADDs of one key become one
    command with all their arguments in order (the same effect as sending them one by one: LPUSH a, LPUSH b is
    LPUSH a b), others stay as they are. Returns the commands and, for each push, which ones carry its own."""
    merged: list[list[Any]] = []
    where: dict[tuple[str, Any], int] = {}
    uses: list[list[int]] = []
    for cmds in pushes:
        mine = []
        for name, key, *rest in cmds:
            index = where.get((name, key)) if name in _VARIADIC else None
            if index is None:
                index = len(merged)
                merged.append([name, key, *rest])
                if name in _VARIADIC:
                    where[name, key] = index
            elif name == "SADD":  # the same queue named by every push: once is enough
                merged[index].extend(m for m in rest if m not in merged[index][2:])
            else:
                merged[index].extend(rest)
            mine.append(index)
        uses.append(mine)
    return [tuple(command) for command in merged], uses


def _first_error(replies: list[Any]) -> Exception | None:
    for reply in replies:
        if isinstance(reply, redis_lib.ResponseError):
            return refusal_or_error(str(reply)) if type(reply) is redis_lib.ResponseError else reply
    return None
