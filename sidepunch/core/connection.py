"""Redis clients, and telling an outage from a bug.

Owns building clients for a URL (and checking a URL can make one), and telling an outage (Redis unreachable,
or refusing commands for now) from a bug in a command; `Outage` logs one line per outage. The URL as text
(resolving, parsing a sentinel URL, masking credentials) is urls.py's; its names are re-exported here. Imports
nothing of sidepunch's but core.urls. Nothing here runs at import time; the daemon builds clients after each
fork because redis-py pools must not cross a fork.

Must not import: anything of sidepunch's above core (client, server, api, admin).
"""
from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import threading
import time
from functools import partial
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .urls import DEFAULT_URL, hide_urls, mask_url, parse_sentinel_url, resolve_url, scrub, url_secrets

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_URL", "OUTAGE_ERRORS", "REFUSALS", "RETRIED_ERRORS", "SETTLE", "SOCKET_TIMEOUT",
           "FailoverError", "Outage", "RedisRefused", "check_url", "describe_outage", "hide_urls", "is_refusal", "make_client",
           "mask_url", "outage_kind", "parse_sentinel_url", "refusal_or_error", "resolve_url", "retry_schedule",
           "scrub", "url_secrets"]

T = TypeVar("T")

#: Longer than any blocking command we send (2 s fetch timeout), so a dead server is noticed.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


#: What a push retries through (see `retry_schedule`): Redis unreachable or restarting, or a replica refusing
#: writes during a failover. A refused password is a ConnectionError too, but is never retried.
RETRIED_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


def retry_schedule(retry_for: float) -> tuple[ExponentialBackoff, int]:
    """(backoff, retries) with which a push retries RETRIED_ERRORS for about `retry_for` seconds."""
    return ExponentialBackoff(cap=0.5, base=0.05), max(1, int(retry_for / 0.5))


def make_client(url: str, max_connections: int | None = None, retry_for: float = 0.0, *,
                aio: bool = False) -> Any:
    """A client for `url` (redis://, rediss://, unix:// or redis+sentinel://); bytes in, bytes out.

    With `retry_for`, commands are retried through an outage or failover for about that many seconds (the
    enqueueing client uses this; the daemon has its own outage handling). With `aio`, a redis.asyncio client
    (usable on one event loop) that retries nothing and times no read: its caller retries as `retry_schedule`
    says and bounds each round trip by SOCKET_TIMEOUT (one timer a round trip, not one a reply).
    """
    lib = _library(aio)
    options: dict = {"socket_timeout": None if aio else SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
                     "retry": lib.retry.Retry(NoBackoff(), 0) if aio else _Retry(NoBackoff(), 0)}
    if retry_for > 0 and not aio:
        options["retry"] = _Retry(*retry_schedule(retry_for))
        options["retry_on_error"] = list(RETRIED_ERRORS)
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url, max_connections, options, lib)
    try:
        pool = lib.ConnectionPool.from_url(url, max_connections=max_connections, health_check_interval=30,
                                           **options)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    return lib.Redis(connection_pool=pool)


def _library(aio: bool) -> Any:
    """redis-py, or its asyncio half (imported only when asked for)."""
    if aio:
        importlib.import_module("redis.asyncio.retry")
    return importlib.import_module("redis.asyncio") if aio else redis


class RedisRefused(redis.ResponseError):
    """Redis is up but refuses commands for now: memory full (OOM), snapshots failing (MISCONF), too few
    replicas (NOREPLICAS), a script running (BUSY)... Retrying later can succeed, so it is an outage."""


#: Error codes with which a running Redis refuses a command for a while, whatever the command; also found inside
#: the error of a Lua script whose redis.call / redis.pcall was refused ("...: @user_script: 1: -OOM ...").
#: An error not listed (WRONGTYPE, a bad argument, a script bug) is the command's fault: retrying cannot help.
_REFUSED = re.compile(r"(?:(?:ERR )?Error running script \(call to \w+\): @user_script:\d+: )?(?:@user_script: \d+: -)?"
                      r"(?:OOM|MISCONF|NOREPLICAS|MASTERDOWN|BUSY|LOADING|READONLY|TRYAGAIN|CLUSTERDOWN) ")
#: How redis-py prefixes the error of one command of a pipeline; what follows its last occurrence is Redis's.
_PIPELINE_ERROR = " of pipeline caused error: "


def is_refusal(text: str) -> bool:
    return _REFUSED.match(text.rpartition(_PIPELINE_ERROR)[2]) is not None


def refusal_or_error(text: str) -> redis.ResponseError:
    """The exception for an error reply's text: RedisRefused if it is a refusal, else a plain ResponseError."""
    text = text.strip()
    return RedisRefused(text) if is_refusal(text) else redis.ResponseError(text)


class _Retry(Retry):
    """The Retry object redis-py runs each command of a connection through. Besides retrying (the enqueueing
    client's, through an outage), it raises a refusal that redis-py has no class for as RedisRefused, and a
    refused password at once: retrying cannot fix a setting."""

    def __init__(self, backoff: Any, retries: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(backoff, retries, *args, **kwargs)
        self._retrying = retries != 0

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any) -> T:
        try:
            return super().call_with_retry(partial(_auth_not_retried, do) if self._retrying else do, fail,
                                           *args, **kwargs)
        except _NotRetried as wrapped:
            raise wrapped.error from None
        except redis.ResponseError as exc:
            if type(exc) is redis.ResponseError and is_refusal(str(exc)):
                raise RedisRefused(str(exc)) from None
            raise


class _NotRetried(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _auth_not_retried(do: Callable[[], T]) -> T:
    try:
        return do()
    except redis.AuthenticationError as exc:
        raise _NotRetried(exc) from None


class FailoverError(redis.ConnectionError):
    """The server changed role under a blocked command (-UNBLOCKED) or refused a write as a replica."""


_BAD_FD = os.strerror(errno.EBADF)

#: Errors with which a running Redis refuses commands for a while (see RedisRefused).
REFUSALS = (redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError,
            redis.exceptions.NoPermissionError, redis.exceptions.ClusterDownError, RedisRefused)

#: Errors that mean "Redis is unreachable, restarting, failing over or refusing commands for now", as opposed to
#: a bug in a command. A wrong password counts too (AuthenticationError is a ConnectionError): during a run it
#: is retried, since the server's password may be changed back; at start the master stops on it instead.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, *REFUSALS)


def outage_kind(exc: BaseException) -> str:
    """"auth", "unreachable" or "refused": what an outage error says about Redis."""
    if isinstance(exc, redis.AuthenticationError):
        return "auth"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not isinstance(exc, REFUSALS):
        return "unreachable"
    return "refused"


def describe_outage(exc: BaseException, url: str) -> str:
    """What a failed command means, in words, with the URL already masked: for one log line."""
    detail = exc.__class__.__name__ + (f": {exc}" if str(exc) else "")
    kind = outage_kind(exc)
    if kind == "auth":
        return f"authentication failed at {url} ({detail}); check the password in the Redis URL"
    if kind == "refused":
        return f"Redis at {url} refuses commands ({detail})"
    if _BAD_FD in detail:  # not Redis's doing: something in this process (a job?) closed the socket
        return f"lost the connection to Redis at {url}: its socket was closed inside this process ({detail})"
    return f"cannot reach Redis at {url} ({detail})"


#: Seconds without a failure after which an outage counts as over. Under memory pressure some commands succeed
#: between refusals (reads, deletions), and none of those successes may end the outage (and start a new one,
#: with a new log line, at the next refusal).
SETTLE = 5.0


class Outage:
    """Logs one line when Redis becomes unreachable (or refuses commands, or the password) and one when it is
    back, however many threads notice; one more if the cause changes (a dropped connection that comes back
    refusing the password), at most once per kind of cause.

    Callers report each failure and each success; `failed()` returns the next wait, growing to 2 s. A success
    ends the outage once no failure was reported for `settle` seconds.
    """

    def __init__(self, url: str, logger: logging.Logger, settle: float = SETTLE) -> None:
        self._url = mask_url(url)
        self._log = logger
        self._settle = settle
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_failure = 0.0
        self._failures = 0
        self._logged: set[str] = set()  # kinds of cause logged during this outage

    def describe(self, exc: BaseException) -> str:
        return describe_outage(exc, self._url)

    def failed(self, exc: BaseException) -> float:
        with self._lock:
            self._failures += 1
            self._last_failure = time.monotonic()
            if self._since is None:
                self._since = self._last_failure
            kind = outage_kind(exc)
            if kind not in self._logged:
                self._logged.add(kind)
                self._log.error("%s; retrying with backoff", self.describe(exc))
            return min(0.1 * 2 ** min(self._failures, 5), 2.0)

    def ok(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None and time.monotonic() - self._last_failure >= self._settle:
                self._log.warning("Redis at %s is reachable again after %.1f s", self._url,
                                  self._last_failure - self._since)
                self._since = None
                self._failures = 0
                self._logged.clear()


def _sentinel_client(url: str, max_connections: int | None, options: dict, lib: Any) -> Any:
    sentinel_module = importlib.import_module(f"{lib.__name__}.sentinel")
    sentinels, service, db, password = parse_sentinel_url(url)
    sentinel = sentinel_module.Sentinel(sentinels, socket_timeout=CONNECT_TIMEOUT,
                                        sentinel_kwargs={"password": password} if password else None)
    # The pool asks the sentinels for the current primary on every new connection, so after a failover the
    # next reconnect lands on the new primary.
    return sentinel.master_for(service, db=db, password=password, max_connections=max_connections, **options)


def check_url(url: str) -> None:
    """ValueError with a one-line message that shows no secret unless a client can be built for `url`;
    connects to nothing. Catches what redis-py would only raise at the first connection (an unknown option
    such as ?PASSWORD=, which it passes on as a keyword argument)."""
    try:
        if not url.startswith("redis+sentinel://"):
            parts = urlsplit(url)
            parts.port  # raises for a port that is not a number, and would echo it
        client = make_client(url)
        client.connection_pool.make_connection()
    # RedisError too: building a connection connects to nothing, so what it raises (a bad ssl_cert_reqs, a
    # protocol other than 2 or 3) is a bad setting, never an outage.
    except (ValueError, TypeError, redis.RedisError) as exc:
        detail = str(exc)
        if isinstance(exc, TypeError):
            detail = re.sub(r".*unexpected keyword argument ", "unknown option ", detail)
        elif "port" in detail.lower() and "Redis URL" not in detail:
            detail = "the port must be a number from 0 to 65535" + (
                " (in a password, write / ? # @ as %2F %3F %23 %40)" if "@" in url else "")
        if not detail.startswith("bad Redis URL"):
            detail = f"bad Redis URL {mask_url(url)}: {detail}"
        raise ValueError(scrub(" ".join(detail.split()), url)) from None
