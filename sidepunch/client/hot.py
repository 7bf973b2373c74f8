"""HotConnection: the one pooled connection a Client keeps between pushes.

A push takes a connection from redis-py's pool and gives it back: in redis-py 8 each checkout and release also
records observability data, together about a fifth of a single push's CPU. The client keeps the connection its
last push used and hands it to the next push instead; a push made while another thread holds it (or the first
one) goes through the pool as before. So at most one connection is held outside the pool, and it is still the
pool's: `pool.disconnect()` closes it, and the next push reconnects it. Only a Client that made its own redis
client keeps one (a client the app passed in may have a small pool it needs every connection of). A connection made in another process (a
fork) is never used: the child takes its own from the pool, which redis-py resets after a fork.
"""
from __future__ import annotations

import os
import threading
from typing import Any


class HotConnection:
    """At most one connection kept out of `pool` between two pushes; `take` and `give` replace the pool's
    get_connection and release around one round trip."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pool: Any = None

    def take(self, pool: Any) -> Any:
        """The kept connection if it is this process's and this pool's, else one from the pool."""
        if not self.enabled:
            return pool.get_connection()
        with self._lock:
            conn, kept_from, self._conn = self._conn, self._pool, None
        if conn is not None and kept_from is pool and getattr(conn, "pid", None) == os.getpid():
            return conn
        return pool.get_connection()

    def give(self, pool: Any, conn: Any) -> None:
        """Keep `conn` for the next push if none is kept, else give it back to the pool."""
        if self.enabled and getattr(conn, "pid", None) == os.getpid():
            with self._lock:
                if self._conn is None:
                    self._conn, self._pool = conn, pool
                    return
        pool.release(conn)
