"""Redis URLs and clients.

Owns URL resolution (flag, then REDIS_PROVIDER / REDIS_URL as Sidekiq reads them, then the default), masking
passwords for logs, and building clients. Nothing here runs at import time; the daemon builds clients after
each fork because redis-py pools must not cross a fork.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import redis

DEFAULT_URL = "redis://localhost:6379/0"
#: Longer than any blocking command we send (2 s fetch timeout), so a dead server is noticed.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def resolve_url(explicit: str | None, environ: Mapping[str, str], fallback: str | None = None) -> str:
    """The flag wins; else the variable REDIS_PROVIDER names; else REDIS_URL; else `fallback` (a config file's
    value) or localhost."""
    if explicit:
        return explicit
    provider = environ.get("REDIS_PROVIDER")
    if provider:
        if "://" in provider:
            raise ValueError("REDIS_PROVIDER must name an environment variable that holds the URL, "
                             "not hold a URL itself")
        if environ.get(provider):
            return environ[provider]
    return environ.get("REDIS_URL") or fallback or DEFAULT_URL


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def make_client(url: str, max_connections: int | None = None) -> redis.Redis:
    """A client for `url` (redis://, rediss:// or unix://); bytes in, bytes out."""
    try:
        pool = redis.ConnectionPool.from_url(
            url, max_connections=max_connections, socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=30)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    return redis.Redis(connection_pool=pool)


class Outage:
    """Logs one line when Redis becomes unreachable and one when it is back, however many threads notice.

    Callers report each failure and each success; `backoff()` gives the next wait, growing to 5 s.
    """

    def __init__(self, url: str, logger: logging.Logger) -> None:
        self._url = mask_url(url)
        self._log = logger
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    def failed(self, exc: BaseException) -> float:
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since = time.monotonic()
                self._log.error("cannot reach Redis at %s (%s); retrying with backoff", self._url,
                                exc.__class__.__name__ + (f": {exc}" if str(exc) else ""))
            return min(0.1 * 2 ** min(self._failures, 6), 5.0)

    def ok(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                self._log.warning("Redis at %s is reachable again after %.1f s", self._url,
                                  time.monotonic() - self._since)
                self._since = None
                self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None


#: Errors that mean "Redis is unreachable or restarting", as opposed to a bug in a command.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                 redis.exceptions.ReadOnlyError)
