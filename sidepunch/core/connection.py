"""Redis URLs and clients.

Owns URL resolution (flag, then REDIS_PROVIDER / REDIS_URL as Sidekiq reads them, then the default), masking
passwords for logs, building clients, and telling an outage (Redis unreachable, or refusing commands for now)
from a bug in a command. Nothing here runs at import time; the daemon builds clients after each fork because
redis-py pools must not cross a fork.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from functools import partial
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

T = TypeVar("T")

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
    """The URL with every credential replaced by ***, for logs and error messages; never raises.

    Masks the password of the userinfo (the whole userinfo of a redis+sentinel URL, which reads a lone
    word there as the password), the value of any query or fragment option whose name says it is a secret
    (password=, in any case or percent-encoding, however often repeated) and a port that is not a number (a
    password with a '/', '?' or '#' in it, unencoded, ends up there). It works on the raw text rather than
    trusting urlsplit, which gives up on some malformed URLs and splits others where a person would not.
    Control characters are escaped so the result is always one line.
    """
    out, last = [], 0
    for begin, end in _secret_spans(url):
        out.append(url[last:begin] + "***")
        last = end
    return _escape_controls("".join(out) + url[last:])


def make_client(url: str, max_connections: int | None = None, retry_for: float = 0.0) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix:// or redis+sentinel://); bytes in, bytes out.

    With `retry_for`, commands are retried through an outage or failover for about that many seconds (the
    enqueueing client uses this; the daemon has its own outage handling).
    """
    options: dict = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
                     "retry": _Retry(NoBackoff(), 0)}
    if retry_for > 0:
        options["retry"] = _Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=max(1, int(retry_for / 0.5)))
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError]
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url, max_connections, options)
    try:
        pool = redis.ConnectionPool.from_url(url, max_connections=max_connections, health_check_interval=30,
                                             **options)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    return redis.Redis(connection_pool=pool)


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


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?password=...]
    -> (sentinels, service, db, password).

    The password is percent-decoded, as redis-py decodes it in a redis:// URL. ValueError (its message
    masked) for anything else: no service, a host without a port, a db that is not a number.
    """
    def bad(problem: str) -> ValueError:
        return ValueError(f"bad Redis URL {mask_url(url)}: {problem}")

    rest, _, _ = url[len("redis+sentinel://"):].partition("#")
    password = None
    start = _query_start(rest)
    rest, query = (rest[:start], rest[start + 1:]) if start >= 0 else (rest, "")
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[-1]) or None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "password":
            raise bad(f"unknown option {_show_name(name)} (a redis+sentinel URL takes only password=)")
        password = value or password
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise bad("expected redis+sentinel://host:port[,host:port]/service[/db]")
    sentinels = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]:port
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad(f"sentinel address {_show_name(mask_url(hostport))} needs host:port (port 1 to 65535)")
        sentinels.append((host, int(port)))
    if len(parts) > 1 and not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) < 6):
        raise bad(f"the database {_show_name(parts[1])} is not a number")
    return sentinels, unquote(parts[0]), int(parts[1]) if len(parts) > 1 else 0, password


def _sentinel_client(url: str, max_connections: int | None, options: dict) -> redis.Redis:
    from redis.sentinel import Sentinel
    sentinels, service, db, password = parse_sentinel_url(url)
    sentinel = Sentinel(sentinels, socket_timeout=CONNECT_TIMEOUT, sentinel_kwargs={"password": password}
                        if password else None)
    # The pool asks the sentinels for the current primary on every new connection, so after a failover the
    # next reconnect lands on the new primary.
    return sentinel.master_for(service, db=db, password=password, max_connections=max_connections, **options)


# ------------------------------------------------------------------------------ masking credentials

#: Option names that carry a secret (password=, ssl_password=, sentinel_password=, token=, ...).
_SECRET_OPTION = re.compile(r"pass|secret|token|auth|cred", re.IGNORECASE)
#: The '?' that starts the query: the first one followed by "name=", so one inside a password is skipped.
_QUERY_START = re.compile(r"\?(?=[\w.%+~-]*=)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _query_start(rest: str) -> int:
    match = _QUERY_START.search(rest)
    return match.start() if match else -1


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """(start, end) of every credential in `url`, sorted and merged."""
    sep = url.find("://")
    base = sep + 3 if sep >= 0 else 0
    rest = url[base:]
    query = _query_start(rest)
    authority_end = query if query >= 0 else len(rest)
    spans: list[tuple[int, int]] = []
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        colon = rest.find(":", 0, at)
        if colon >= 0:
            spans.append((base + colon + 1, base + at))
        elif url.startswith("redis+sentinel://"):
            spans.append((base, base + at))
    host_start = at + 1 if at >= 0 else 0
    spans += [(base + b, base + e) for b, e in _odd_ports(rest, host_start)]
    spans += [(base + b, base + e) for b, e in _secret_options(rest, host_start)]
    return _merge(spans)


def _odd_ports(rest: str, host_start: int) -> list[tuple[int, int]]:
    """Ports that are not numbers: what is left of a password holding '/', '?' or '#' unencoded."""
    ends = [i for i in (rest.find(c, host_start) for c in "/?#") if i >= 0]
    hosts_end = min(ends, default=len(rest))
    spans, offset = [], host_start
    for hostport in rest[host_start:hosts_end].split(","):
        colon = hostport.rfind(":")
        port = hostport[colon + 1:] if colon >= 0 and not hostport.endswith("]") else ""
        if port and not (port.isascii() and port.isdigit()):
            spans.append((offset + colon + 1, offset + len(hostport)))
        offset += len(hostport) + 1
    return spans


def _secret_options(rest: str, start: int) -> list[tuple[int, int]]:
    """Values of secret-named options anywhere after the authority, up to the next '&' or '#' (where
    parse_qs ends a value). Options are looked for after every '?', '&', ';' and '#', even inside another
    option's value, so `db=0;password=x` hides x too."""
    spans = []
    for match in re.finditer(r"[?&;#]([^=&;#?]*)=", rest[start:]):
        if _SECRET_OPTION.search(unquote_plus(match.group(1))):
            value_start = start + match.end()
            ends = [i for i in (rest.find("&", value_start), rest.find("#", value_start)) if i >= 0]
            spans.append((value_start, min(ends, default=len(rest))))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return merged


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _show_name(text: str) -> str:
    shown = repr(_escape_controls(text))
    return shown if len(shown) <= 60 else shown[:57] + "..."


def url_secrets(url: str) -> list[str]:
    """The credentials in `url` as written and percent-decoded, longest first (for `scrub`)."""
    found = set()
    for begin, end in _secret_spans(url):
        raw = url[begin:end]
        found.update({raw, unquote(raw), unquote_plus(raw)})
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (say an exception's message about `url`) with the URL masked and its credentials replaced by
    ***, so it can be shown. Secrets of one or two characters are left: replacing those would garble
    every word, and they are not worth much."""
    text = text.replace(url, mask_url(url)) if url else text
    for secret in url_secrets(url):
        if len(secret) > 2:
            text = text.replace(secret, "***")
    return text


def hide_urls(text: str, candidates: Sequence[str] = ()) -> str:
    """`text` with every URL in it masked: first the `candidates` (say the command line, whose URL may hold
    spaces), then anything that looks like scheme://..."""
    for candidate in sorted((c for c in candidates if "://" in c), key=len, reverse=True):
        text = scrub(text, candidate)
    return re.sub(r"\S*://\S*", lambda m: mask_url(m.group()), text)


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
    except (ValueError, TypeError) as exc:
        detail = str(exc)
        if isinstance(exc, TypeError):
            detail = re.sub(r".*unexpected keyword argument ", "unknown option ", detail)
        elif "port" in detail.lower() and "Redis URL" not in detail:
            detail = "the port must be a number from 0 to 65535" + (
                " (in a password, write / ? # @ as %2F %3F %23 %40)" if "@" in url else "")
        if not detail.startswith("bad Redis URL"):
            detail = f"bad Redis URL {mask_url(url)}: {detail}"
        raise ValueError(scrub(" ".join(detail.split()), url)) from None
