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
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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


def make_client(url: str, max_connections: int | None = None, retry_for: float = 0.0) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix:// or redis+sentinel://); bytes in, bytes out.

    With `retry_for`, commands are retried through an outage or failover for about that many seconds (the
    enqueueing client uses this; the daemon has its own outage handling).
    """
    options: dict = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT}
    if retry_for > 0:
        options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=max(1, int(retry_for / 0.5)))
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError]
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url, max_connections, options)
    try:
        pool = redis.ConnectionPool.from_url(url, max_connections=max_connections, health_check_interval=30,
                                             **options)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    return redis.Redis(connection_pool=pool)


class Outage:
    """Logs one line when Redis becomes unreachable and one when it is back, however many threads notice.

    Callers report each failure and each success; `failed()` returns the next wait, growing to 2 s.
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
            return min(0.1 * 2 ** min(self._failures, 5), 2.0)

    def ok(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                self._log.warning("Redis at %s is reachable again after %.1f s", self._url,
                                  time.monotonic() - self._since)
                self._since = None
                self._failures = 0


class FailoverError(redis.ConnectionError):
    """The server changed role under a blocked command (-UNBLOCKED) or refused a write as a replica."""


#: Errors that mean "Redis is unreachable, restarting or failing over", as opposed to a bug in a command.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                 redis.exceptions.ReadOnlyError)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[:password@]host:port[,host:port...]/service[/db] -> (sentinels, service, db, password)."""
    rest = url[len("redis+sentinel://"):]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = auth.split(":", 1)[-1] or None
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise ValueError(f"bad Redis URL {mask_url(url)}: expected redis+sentinel://host:port[,host:port]/service[/db]")
    sentinels = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad Redis URL {mask_url(url)}: sentinel address {hostport!r} needs host:port")
        sentinels.append((host, int(port)))
    db = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return sentinels, parts[0], db, password


def _sentinel_client(url: str, max_connections: int | None, options: dict) -> redis.Redis:
    from redis.sentinel import Sentinel
    sentinels, service, db, password = parse_sentinel_url(url)
    sentinel = Sentinel(sentinels, socket_timeout=CONNECT_TIMEOUT, sentinel_kwargs={"password": password}
                        if password else None)
    # The pool asks the sentinels for the current primary on every new connection, so after a failover the
    # next reconnect lands on the new primary.
    return sentinel.master_for(service, db=db, password=password, max_connections=max_connections, **options)
