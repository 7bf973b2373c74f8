"""A push's round trip on a connection of redis-py's pool, without redis-py's per-command layers.

redis-py 8 spends more client CPU around a pooled command than on the command: a checkout and a release each
record observability counters and dispatch an event, `connect()` runs through a Retry even when connected, a
`poll` checks the socket, and every reply passes two wrappers. One push is one round trip, so that is most of
its cost (docs/performance.md, section 3). `Wire` does the same work with less:

- Checkout and release take the pool's own lock and lists, as ConnectionPool.get_connection / release do: the
  connection a push wrote on goes back on top of the pool, so the next command of that thread on
  `client.redis` gets it (an app's `WAIT` after a push waits for the push's write), and a forked child gets a
  fresh pool (`_checkpid`, redis-py's own fork check).
- The commands are packed once into one bytes and written with one `sendall`; each reply is read from the
  connection's parser. Socket errors become redis-py's ConnectionError / TimeoutError and drop the
  connection, as Connection.read_response does; the caller's Retry (a push's retry through an outage) runs
  around the whole exchange as before.
- What is left out does not apply to the pools it serves: client-side caching, maintenance notifications and
  push messages (RESP3 only), re-authentication by a streaming credential provider, redis-py's OpenTelemetry
  metrics, and the `poll` for unread data at checkout (in RESP2 only a closed socket can have any, and a write
  to one fails and is retried on a fresh connection like any dropped connection; an idle connection is still
  PINGed first after `health_check_interval`, as redis-py does).

Any other pool (a BlockingConnectionPool, Sentinel's, a subclass, RESP3, caching, metrics on when the pool
was first used) goes through redis-py's public get_connection / release, with the same packing and reading.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and this package only).
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Sequence, TypeVar

import redis as redis_lib

from ..core import keys

_pack_command: Any = None  # hiredis.pack_command, if redis-py packs with it
_HiredisPacker: Any = None  # the class of redis-py's packer that uses it
try:  # redis-py packs with hiredis when it is installed; the same function gives the same bytes with less work
    import hiredis
    from redis import connection as _connection
    _pack_command, _HiredisPacker = hiredis.pack_command, _connection.HiredisRespSerializer
except (ImportError, AttributeError):  # no hiredis, or a redis-py that packs another way
    pass

T = TypeVar("T")

__all__ = ["Wire", "pack", "pack_one", "quick_pool"]

#: The connection classes whose reading Wire does itself (a subclass may read differently: Sentinel's turns a
#: READONLY reply into a reconnect).
_PLAIN_CONNECTIONS = (redis_lib.Connection, redis_lib.SSLConnection, redis_lib.UnixDomainSocketConnection)


def quick_pool(pool: Any) -> bool:
    """Whether `pool` is one whose checkout and reading Wire may do itself (see the module docstring)."""
    kwargs = getattr(pool, "connection_kwargs", None)
    return (type(pool) is redis_lib.ConnectionPool and isinstance(kwargs, dict)
            and getattr(pool, "connection_class", None) in _PLAIN_CONNECTIONS
            and all(hasattr(pool, name) for name in ("_lock", "_available_connections", "_in_use_connections",
                                                        "_checkpid", "pid", "make_connection"))
            and getattr(pool, "cache", None) is None and kwargs.get("protocol") in (None, 2, "2")
            and kwargs.get("credential_provider") is None and not kwargs.get("cache")
            and not _metrics_on())


def _metrics_on() -> bool:
    """Whether redis-py 8's OpenTelemetry metrics are configured (a pool then keeps redis-py's checkout, which
    counts connections in use)."""
    try:
        from redis.observability.providers import get_observability_instance
        manager = get_observability_instance().get_provider_manager()
        return manager is not None and bool(manager.config.enabled_telemetry)
    except Exception:  # an older redis-py (no such module) or one whose API changed: no metrics to keep
        return False


class Wire:
    """The round trips of a client's pushes, on whichever pool its redis client has. Thread-safe: the shared
    state is the pool's, under the pool's lock; the memo of which pool was judged is replaced whole."""

    def __init__(self) -> None:
        self._judged: tuple[Any, bool] = (None, False)  # (the pool last seen, whether quick_pool said yes)

    def send(self, pool: Any, cmds: Sequence[tuple], finish: Callable[[list[Any]], T]) -> T:
        """Send `cmds` pipelined on one connection of `pool` and return `finish(replies)`, where an error reply
        is a ResponseError in its place. Both run inside the connection's Retry (a push's retry through an
        outage: what `finish` raises is retried as if Redis had raised it), each attempt on a fresh connection.
        The connection goes back to the pool afterwards, whatever happened."""
        return self._send(pool, lambda conn: pack(conn, cmds), len(cmds), finish)

    def send_one(self, pool: Any, queue: str, payload: bytes, finish: Callable[[list[Any]], T]) -> T:
        """`send` of the commands that enqueue one job now (SADD queues + LPUSH, as prepare.commands gives them),
        packed in one step when the connection packs with hiredis (the same bytes, with a third of the work)."""
        def packed(conn: Any) -> bytes:
            if _HiredisPacker is not None and type(getattr(conn, "_command_packer", None)) is _HiredisPacker:
                return pack_one(queue, payload)
            return pack(conn, [("SADD", keys.QUEUES, queue), ("LPUSH", keys.queue(queue), payload)])
        return self._send(pool, packed, 2, finish)

    def _send(self, pool: Any, packer: Callable[[Any], bytes], count: int, finish: Callable[[list[Any]], T]) -> T:
        judged = self._judged
        if judged[0] is not pool:
            judged = self._judged = (pool, quick_pool(pool))
        quick = judged[1]
        conn = _take(pool) if quick else pool.get_connection()
        try:
            if quick and conn._sock is None:
                conn.connect()  # outside the Retry below, as get_connection connects (it retries by itself)
            packed, trade = packer(conn), _exchange if quick else _exchange_public
            return _retried(conn.retry, lambda: finish(trade(conn, packed, count)), lambda error: conn.disconnect())
        finally:
            if quick:
                _give(pool, conn)
            else:
                pool.release(conn)


def _retried(retry: Any, do: Callable[[], T], fail: Callable[[Exception], Any]) -> T:
    """`retry.call_with_retry(do, fail)`, but the first attempt is made before entering it: a Retry's set-up costs
    about as much as the write itself, and most pushes succeed at once. A first attempt that failed is replayed
    into the Retry as its first attempt (the same exception, raised again), so what follows is exactly what the
    Retry does: the failure handler, the count of attempts, the backoff, the errors it converts or lets through."""
    try:
        return do()
    except Exception as exc:
        failed = [exc]  # kept out of the except block, so later errors are not chained to this one
    def replay() -> T:
        if failed:
            raise failed.pop()
        return do()
    return retry.call_with_retry(replay, fail)


def _take(pool: Any) -> Any:
    """ConnectionPool.get_connection, without what quick_pool ruled out. Connecting is left to `_exchange`."""
    pool._checkpid()  # in a forked child: a fresh pool, never the parent's sockets
    with pool._lock:
        try:
            conn = pool._available_connections.pop()
        except IndexError:
            conn = pool.make_connection()
        pool._in_use_connections.add(conn)
    return conn


def _give(pool: Any, conn: Any) -> None:
    """ConnectionPool.release, on top of the pool's idle list (it is the next one handed out)."""
    if conn.pid != os.getpid() or pool.pid != conn.pid or getattr(conn, "_should_reconnect", False):
        pool.release(conn)  # a fork happened meanwhile, or the connection must be dropped: redis-py decides
        return
    with pool._lock:
        try:
            pool._in_use_connections.remove(conn)
        except KeyError:  # not the pool's (it was reset meanwhile): as release does, leave it
            return
        pool._available_connections.append(conn)


def pack(conn: Any, cmds: Sequence[tuple]) -> bytes:
    """`cmds` in the Redis protocol, as `conn` would pack them, in one bytes."""
    if _HiredisPacker is not None and type(getattr(conn, "_command_packer", None)) is _HiredisPacker:
        return b"".join([_pack_command(cmd) for cmd in cmds])
    return b"".join(conn.pack_commands(cmds))


#: SADD queues <queue>, LPUSH queue:<queue> <payload>, in the Redis protocol (see pack_one).
_ONE = (f"*3\r\n$4\r\nSADD\r\n${len(keys.QUEUES)}\r\n{keys.QUEUES}\r\n$%d\r\n%b\r\n"
        "*3\r\n$5\r\nLPUSH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n").encode()


def pack_one(queue: str, payload: bytes) -> bytes:
    """SADD queues <queue> + LPUSH queue:<queue> <payload> as hiredis.pack_command packs them (str as UTF-8)."""
    name = queue.encode()
    key = keys.queue(name)  # bytes in, bytes out
    return _ONE % (len(name), name, len(key), key, len(payload), payload)


def _exchange(conn: Any, packed: bytes, count: int) -> list[Any]:
    """Write `packed` (`count` commands) on `conn` and read `count` replies from its parser. A failed write or
    read drops the connection (a later reply must never be read as this one's) and raises redis-py's
    ConnectionError or TimeoutError, as Connection.send_packed_command and read_response do."""
    sock = conn._sock  # bound once: another thread's pool.disconnect() may clear the attribute meanwhile
    try:
        if sock is not None and not (conn.health_check_interval and time.monotonic() > conn.next_health_check):
            sock.sendall(packed)
        else:  # connect (after a dropped connection) or PING after a long idle first, as redis-py does
            conn.send_packed_command([packed])
        read = conn._parser.read_response
        replies = [read() for _ in range(count)]
    except socket.timeout:
        conn.disconnect()
        raise redis_lib.TimeoutError(f"Timeout talking to Redis at {_address(conn)}") from None
    except OSError as exc:
        conn.disconnect()
        raise redis_lib.ConnectionError(f"Error talking to Redis at {_address(conn)}: {exc}") from None
    except BaseException:
        conn.disconnect()
        raise
    if conn.health_check_interval:
        conn.next_health_check = time.monotonic() + conn.health_check_interval
    return replies


def _exchange_public(conn: Any, packed: bytes, count: int) -> list[Any]:
    """_exchange through the connection's own methods (for a connection class Wire does not know)."""
    conn.send_packed_command([packed])  # a list of chunks (a bytes would be sent byte by byte)
    replies: list[Any] = []
    for _ in range(count):  # read every reply even after an error, so the connection stays in step
        try:
            replies.append(conn.read_response())
        except redis_lib.ResponseError as exc:
            replies.append(exc)
    return replies


def _address(conn: Any) -> str:
    path = getattr(conn, "path", None)
    return path if path else f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"
