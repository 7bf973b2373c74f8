"""`LimitSet`: the rate limiters (sidepunch.limits) the fleet has used, with their live state, and their reset.

A limiter is listed once any process has taken (or been refused) a slot of it: its definition is registered in
keys.LIMITS by every take (the last definition used, if two differ). Each row: name, kind, definition, `in_use`
(concurrent: slots held by live leases; window: admissions in the last `per` seconds; bucket: tokens spent and
not refilled yet), `available` (slots or tokens free now), `waiting` (jobs and acquire() calls a limiter refused
that have not had a slot since, each counted until a little after its expected turn), all read on Redis's clock.
`reset(name)` forgets a limiter's state (held slots, its log, its tokens, its waiting set), and with
`forget=True` its registration too. Everything read from Redis is hostile input: an unreadable registration is
listed with `problem` set, never raised. Imports core only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import redis

from ..client.push import default_client
from ..core import keys

KINDS = ("concurrent", "window", "bucket")
#: The parameters each kind's definition must hold, as numbers.
PARAMS = {"concurrent": ("limit", "lease"), "window": ("limit", "per"), "bucket": ("rate", "burst")}


@dataclass(frozen=True)
class LimiterInfo:
    """One limiter and its state now; `kind` is "" and `problem` says why when its registration is unreadable."""
    name: str
    kind: str
    definition: dict[str, Any] = field(default_factory=dict)
    in_use: int = 0
    available: float = 0.0
    waiting: int = 0
    problem: str = ""

    @property
    def capacity(self) -> float:
        """The most slots or tokens it has: limit (concurrent, window) or burst (bucket)."""
        return self.definition.get("limit", self.definition.get("burst", 0))

    def describe(self) -> str:
        """The definition in words: "2 at once (lease 60s)", "10 per 1s", "5/s, burst 10"."""
        d = self.definition
        if self.kind == "concurrent":
            return f"{d['limit']} at once (lease {d['lease']:g}s)"
        if self.kind == "window":
            return f"{d['limit']} per {d['per']:g}s"
        if self.kind == "bucket":
            return f"{d['rate']:g}/s, burst {d['burst']}"
        return self.problem

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "definition": dict(self.definition), "in_use": self.in_use,
                "available": self.available, "waiting": self.waiting, "problem": self.problem}


def parse_definition(raw: bytes) -> tuple[str, dict[str, Any], str]:
    """(kind, definition, problem) from a registry value; problem is "" when it reads."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return "", {}, "its registration is not JSON"
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return "", {}, "its registration names no known kind"
    kind = data["kind"]
    values: dict[str, Any] = {name: data.get(name) for name in PARAMS[kind]}
    if not all(type(v) in (int, float) and math.isfinite(v) and v > 0 for v in values.values()):
        return "", {}, f"its registration lacks numbers for {', '.join(PARAMS[kind])}"
    return kind, values, ""


class LimitSet:
    """The registered limiters, read live."""

    def __init__(self, redis: redis.Redis | None = None) -> None:
        """`redis`: the client to read; None: the configured client's (sidepunch.configure, else $REDIS_URL)."""
        self.redis = redis if redis is not None else default_client().redis

    def names(self) -> list[str]:
        """Names of the registered limiters, sorted."""
        raw: list[bytes] = self.redis.hkeys(keys.LIMITS)  # type: ignore[assignment]
        return sorted(n.decode("utf-8", "replace") for n in raw)

    def waiting_on(self, jid: str) -> list[str]:
        """The limiters a job (by jid) waits on now: those that refused it and have not given it a slot since
        (for a job detail page: a rate-limited job sits in the schedule set). Two round trips."""
        names = self.names()
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for name in names:
            pipe.zscore(keys.limit_waiting(name), jid)
        (seconds, micros), *scores = pipe.execute(raise_on_error=False)
        now = seconds + micros / 1e6
        return [name for name, score in zip(names, scores) if isinstance(score, float) and score > now]

    def __iter__(self) -> Any:
        return iter(self.list())

    def list(self) -> list[LimiterInfo]:
        """Every registered limiter with its state, by name, on Redis's clock; two round trips in all."""
        first = self.redis.pipeline(transaction=False)
        first.hgetall(keys.LIMITS)
        first.time()
        registry, (seconds, micros) = first.execute()
        now = seconds + micros / 1e6
        rows = sorted((name.decode("utf-8", "replace"), *parse_definition(raw)) for name, raw in registry.items())
        pipe = self.redis.pipeline(transaction=False)
        for name, kind, definition, _ in rows:
            if kind:
                _queue_reads(pipe, name, kind, definition, now)
        replies = iter(pipe.execute(raise_on_error=False))
        return [self._row(name, kind, definition, problem, replies, now)
                for name, kind, definition, problem in rows]

    def get(self, name: str) -> LimiterInfo | None:
        """One limiter by name, or None if none is registered under it."""
        return next((info for info in self.list() if info.name == name), None)

    def reset(self, name: str, *, forget: bool = False) -> bool:
        """Forget a limiter's state (every kind's key under the name, its waiting set and hold time); with
        `forget`, its registration too. True if anything was there."""
        names = [keys.limit_state(kind, name) for kind in KINDS] + [keys.limit_waiting(name), keys.limit_hold(name)]
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*names)
        if forget:
            pipe.hdel(keys.LIMITS, name)
            pipe.zrem(keys.LIMITS_SEEN, name)
        return any(pipe.execute())

    @staticmethod
    def _row(name: str, kind: str, definition: dict[str, Any], problem: str, replies: Any,
             now: float) -> LimiterInfo:
        if not kind:
            return LimiterInfo(name, "", {}, problem=problem)
        state, waiting = next(replies), next(replies)
        if isinstance(state, Exception) or isinstance(waiting, Exception):  # a key of another type
            return LimiterInfo(name, kind, definition, problem="its state key holds another type")
        if kind == "bucket":
            available = _tokens(state, definition, now)
            in_use = math.ceil(definition["burst"] - available - 1e-9)
        else:
            in_use = int(state)
            available = max(0, definition["limit"] - in_use)
        return LimiterInfo(name, kind, definition, max(0, in_use), round(available, 3), int(waiting))


def _queue_reads(pipe: Any, name: str, kind: str, definition: dict[str, Any], now: float) -> None:
    """Two replies per limiter: its state (a count, or the bucket's fields) and its waiting count."""
    state = keys.limit_state(kind, name)
    if kind == "concurrent":
        pipe.zcount(state, f"({now!r}", "+inf")  # leases that have not run out
    elif kind == "window":
        pipe.zcount(state, f"({now - definition['per']!r}", "+inf")  # admissions in the last `per` seconds
    else:
        pipe.hmget(state, "tokens", "at")
    pipe.zcount(keys.limit_waiting(name), f"({now!r}", "+inf")


def _tokens(state: Any, definition: dict[str, Any], now: float) -> float:
    """A bucket's tokens now: refilled since its last take, full when it has no state."""
    try:
        tokens, at = float(state[0]), float(state[1])
    except (TypeError, ValueError, IndexError):
        return float(definition["burst"])
    if not (math.isfinite(tokens) and math.isfinite(at)):
        return float(definition["burst"])
    return max(0.0, min(definition["burst"], tokens + max(0.0, now - at) * definition["rate"]))
