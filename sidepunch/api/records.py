"""How the admin API reads what it finds in Redis: stored jobs (`JobRecord`), names and numbers.

Everything here treats Redis data as hostile: a payload may be bytes that are not UTF-8, not JSON, JSON that
Python reads but cannot write back strictly (NaN, Infinity, lone surrogate escapes), nested deeper than
payload.MAX_DEPTH, or carry times that are strings, NaN or 1e300. Every accessor still answers, and
never raises. Names (queues, process identities, thread ids) that are not UTF-8 are decoded with
`surrogateescape`, so `name_key` gives back the exact bytes to address them in Redis. sidepunch.api
re-exports `JobRecord`; server code never imports this.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from typing import Any

import redis

from ..core import keys
from ..core.payload import MAX_DEPTH, PayloadError, decode, parse
from ..core.jobsets import decode_backtrace
from .unlock import release_locks

_SURROGATE = re.compile("[\ud800-\udfff]")


def name_of(raw: bytes | str) -> str:
    """A name read from Redis as text; bytes that are not UTF-8 survive as surrogates (see `name_key`)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def name_key(name: str) -> bytes:
    """The exact bytes of a name from `name_of` (or from the command line, which Python decodes alike)."""
    return name.encode("utf-8", "surrogateescape")


def finite(value: Any) -> float | None:
    """A JSON number as a finite float; anything else (a string, a bool, NaN, 1e400 as an int) is None."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def loads(raw: bytes) -> Any:
    """Strict JSON read from Redis (payload.parse): PayloadError, a ValueError, for anything encode could not
    write back, including nesting deeper than payload.MAX_DEPTH."""
    return parse(raw)


def _surrogate_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds a lone surrogate (\\ud800-\\udfff), which UTF-8 cannot carry"
    return None


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` made fit for strict JSON: NaN and infinities become None (as JavaScript's JSON.stringify
    does), lone surrogates become visible escapes (\\xNN for a byte that was not UTF-8), anything nested
    deeper than MAX_DEPTH a marker string, and any other type its str()."""
    kind = type(value)
    if value is None or kind in (bool, int):
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str:
        return printable(value) if _surrogate_problem(value) else value
    if depth >= MAX_DEPTH and kind in (list, tuple, dict):
        return f"<nested more than {MAX_DEPTH} levels deep>"
    if kind in (list, tuple):
        return [jsonable(v, depth + 1) for v in value]
    if kind is dict:
        return {jsonable(str(k)): jsonable(v, depth + 1) for k, v in value.items()}
    return jsonable(str(value))


def printable(text: str) -> str:
    """Lone surrogates as visible escapes: \\xNN for a byte that was not UTF-8, else \\uXXXX."""
    return _SURROGATE.sub(_escape_surrogate, text)


def _escape_surrogate(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def raw_id(value: bytes) -> str:
    """An id for a stored job that needs no parsing: `raw:` and 16 hex digits of the SHA-256 of its bytes."""
    return "raw:" + hashlib.sha256(value).hexdigest()[:16]


class JobRecord:
    """One stored job: the raw bytes plus the parsed payload.

    An unparseable payload has `ok == False`, `item == {}` and `parse_error`; every accessor still answers.
    `problem` says why a payload cannot be written back as strict JSON (None for a sound one). `id` is the
    jid when it is plain text, else `raw_id`, so every job can be named on the command line.
    A record read from a queue can `delete()` itself (LREM of its exact bytes).
    """

    def __init__(self, value: bytes | str, queue: str | None = None, redis: redis.Redis | None = None) -> None:
        self.value = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        self._queue = queue
        self._redis = redis
        self.item: dict[str, Any] = {}
        self.parse_error: str | None = None
        try:
            self.item = decode(self.value)
        except PayloadError as exc:
            self.parse_error = str(exc)

    @property
    def ok(self) -> bool:
        return self.parse_error is None

    @property
    def problem(self) -> str | None:
        """Why this job cannot be enqueued again as it is: payload.decode refuses whatever encode could not
        write back, so that is only ever its parse error."""
        return self.parse_error

    @property
    def jid(self) -> str | None:
        return self._str("jid")

    @property
    def raw_id(self) -> str:
        return raw_id(self.value)

    @property
    def id(self) -> str:
        jid = self.jid
        plain = jid is not None and 0 < len(jid) <= 100 and jid.isascii() and jid.isprintable() and " " not in jid
        return jid if plain and not jid.startswith("raw:") else self.raw_id

    @property
    def klass(self) -> str | None:
        return self._str("class")

    @property
    def error_class(self) -> str | None:
        return self._str("error_class")

    @property
    def error_message(self) -> str | None:
        return self._str("error_message")

    @property
    def enqueued_at(self) -> float | None:
        return finite(self.item.get("enqueued_at"))

    @property
    def created_at(self) -> float | None:
        return finite(self.item.get("created_at"))

    @property
    def failed_at(self) -> float | None:
        return finite(self.item.get("failed_at"))

    @property
    def retried_at(self) -> float | None:
        return finite(self.item.get("retried_at"))

    def _str(self, key: str) -> str | None:
        value = self.item.get(key)
        return value if isinstance(value, str) else None

    @property
    def queue(self) -> str | None:
        return self._str("queue") or self._queue

    @property
    def args(self) -> list:
        args = self.item.get("args")
        return args if isinstance(args, list) else []

    @property
    def retry_count(self) -> int | None:
        count = self.item.get("retry_count")
        return count if type(count) is int else None

    @property
    def tags(self) -> list:
        tags = self.item.get("tags")
        return tags if isinstance(tags, list) else []

    @property
    def display_class(self) -> str:
        """The name to show: ActiveJob's wrapped class or `display_class` win over the wire class."""
        if not self.ok:
            return "<unparseable>"
        return self._str("wrapped") or self._str("display_class") or self.klass or "?"

    @property
    def display_args(self) -> list:
        """The arguments to show: ActiveJob's `arguments`, and the last one hidden when `encrypt` is set."""
        args = self.args
        if self._str("wrapped") and args and isinstance(args[0], dict) and "arguments" in args[0]:
            inner = args[0]["arguments"]
            args = inner if isinstance(inner, list) else [inner]
        if self.item.get("encrypt") and args:
            args = args[:-1] + ["[encrypted data]"]
        return args

    @property
    def error_backtrace(self) -> list[str] | None:
        """The stored backtrace lines (compressed or the old plain-array form); None if absent or corrupt."""
        value = self.item.get("error_backtrace")
        if value is None:
            return None
        try:
            lines = decode_backtrace(value)
        except Exception:  # a corrupt field must not break a listing
            return None
        return [str(line) for line in lines] if isinstance(lines, list) else None

    def text(self) -> str:
        """The stored bytes as text; bytes that are not UTF-8 show as \\xNN."""
        return self.value.decode("utf-8", "backslashreplace")

    def latency(self, now: float | None = None) -> float:
        enqueued = self.enqueued_at
        return 0.0 if enqueued is None else (time.time() if now is None else now) - enqueued

    def delete(self) -> bool:
        """Remove this job from its queue (LREM of the bytes read); False if it was no longer there."""
        if self._redis is None or self._queue is None:
            raise TypeError("only a record read from a queue can delete itself")
        deleted = bool(self._redis.lrem(name_key(keys.queue(self._queue)), 1, self.value))
        if deleted:
            release_locks(self._redis, [self.value])  # a deleted unique job frees its lock
        return deleted

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; `payload` is the whole job, or `raw` the text of one that cannot be written
        back as strict JSON (with `parse_error` saying why)."""
        out: dict[str, Any] = {"id": self.id, "jid": self.jid, "class": self.display_class, "queue": self.queue,
                               "args": self.display_args, "created_at": self.created_at,
                               "enqueued_at": self.enqueued_at}
        if self.error_class is not None or self.retry_count is not None:
            out.update(error_class=self.error_class, error_message=self.error_message,
                       failed_at=self.failed_at, retried_at=self.retried_at, retry_count=self.retry_count)
        problem = self.problem
        if problem is None:
            out["payload"] = self.item
        else:
            out.update(raw=self.text(), parse_error=problem)
        return jsonable(out)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} jid={self.jid} class={self.display_class} queue={self.queue}>"
