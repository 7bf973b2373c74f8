"""Rate limits shared by every process on every host: `Concurrent`, `Window` and `Bucket` limiters.

A limiter is a named, immutable definition; its state lives in Redis under its name (core/keys.py), so every
limiter object with the same name, in any process, is the same limit. Two uses:

- a job class lists limiters in `limits = [...]`: each run takes a slot of every one before it starts (all or
  none), or goes back to the schedule, not run and not a failure, with a delay the limiter estimates (see
  sidepunch/features/limits.py);
- `with limiter.acquire(wait=10): call()` (or `async with`) around one call, anywhere: waits up to `wait`
  seconds for a slot, then raises `OverLimit`.

Kinds: `Concurrent(name, limit, lease=60)`: at most `limit` holders at once; each slot is a lease renewed while
held, so a holder that vanished (SIGKILL) gives its slot back within `lease` seconds. `Window(name, limit,
per=1)`: at most `limit` admissions in any `per`-second span (a sliding log, on Redis's clock). `Bucket(name,
rate, burst)`: a token bucket holding up to `burst` tokens, refilled at `rate` per second.

Conflicting definitions under one name (a Window(10/s) here, a Window(20/s) in a newer deploy) are not refused:
each take enforces the definition it carries against the one shared state, the registry (`sidepunch:limits`)
shows the definition used last, and a process logs one warning per name when it meets another definition.
Define each limiter once, in a module both sides import. Imports only sidepunch.core at import time.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from typing import Any, ClassVar, Sequence

from .core import keys, limiting
from .core.middleware import RateLimited

#: A limiter name: a letter or digit, then up to 99 of letters, digits and `_ . : @ -` (ASCII).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}")
#: The largest limit, burst or rate; and the longest lease or window, in seconds (about 11.6 days).
MAX_COUNT = 1_000_000
MAX_SECONDS = 1_000_000
#: The shortest lease: it is renewed every third of it.
MIN_LEASE = 1.0
#: The most limiters one job class may list.
MAX_LIMITERS = 16
KINDS = ("concurrent", "window", "bucket")


class OverLimit(Exception):
    """`limiter.acquire(wait=...)` found no slot within `wait` seconds. `retry_in`: the limiter's estimate of
    when to try again. In a job, `raise exc.reschedule()` puts the job back in the schedule (not a failure)."""

    def __init__(self, limiter: str, retry_in: float) -> None:
        super().__init__(f"over the rate limit {limiter!r}; a slot is expected in about {retry_in:.3g}s")
        self.limiter = limiter
        self.retry_in = retry_in

    def reschedule(self) -> RateLimited:
        """A RateLimited to raise from a job: it runs again in `retry_in` seconds, counted as rate limited."""
        return RateLimited(min(max(self.retry_in, 0.0), MAX_SECONDS), self.limiter)


def _describe(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:60]}{'...' if len(shown) > 60 else ''}"


def check_name(name: Any) -> str:
    """A limiter's name as given, or TypeError / ValueError saying what is wrong with it."""
    if type(name) is not str:
        raise TypeError(f"a limiter name must be a str, got {_describe(name)}")
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"a limiter name must be 1 to 100 ASCII letters, digits and _ . : @ - (starting with a "
                         f"letter or digit), got {_describe(name)}")
    return name


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_COUNT:
        raise TypeError(f"{what} must be an int from 1 to {MAX_COUNT}, got {_describe(value)}")
    return value


def _seconds(value: Any, what: str, low: float = 0.0) -> float:
    """A number of seconds in (low, MAX_SECONDS] (or [low, ...] when low > 0)."""
    if type(value) not in (int, float) or not math.isfinite(value) or not (
            (value >= low if low else value > 0) and value <= MAX_SECONDS):
        bound = f"at least {low:g}" if low else "over 0"
        raise TypeError(f"{what} must be a number of seconds, {bound} and at most {MAX_SECONDS}, "
                        f"got {_describe(value)}")
    return float(value)


class Limiter:
    """A named limit. Immutable and hashable; equal when kind, name and parameters are equal."""

    kind: ClassVar[str] = ""
    lease: float = 0.0

    def __init__(self, name: str, params: dict[str, float | int]) -> None:
        object.__setattr__(self, "name", check_name(name))
        object.__setattr__(self, "params", params)
        definition = json.dumps({"kind": self.kind, **params}, sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "definition", definition)
        object.__setattr__(self, "state_key", keys.limit_state(self.kind, name))
        object.__setattr__(self, "waiting_key", keys.limit_waiting(name))
        object.__setattr__(self, "hold_key", keys.limit_hold(name))

    name: str
    params: dict[str, float | int]
    definition: str
    state_key: str
    waiting_key: str
    hold_key: str

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; define another limiter instead")

    @property
    def args(self) -> tuple[str, str]:
        """The two numbers the scripts take (concurrent: limit, lease; window: limit, per; bucket: rate, burst)."""
        a, b = self.params.values()
        return repr(a), repr(b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limiter) and (self.name, self.definition) == (other.name, other.definition)

    def __hash__(self) -> int:
        return hash((self.name, self.definition))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}, {params})"

    def acquire(self, wait: float = 10.0, *, redis: Any = None) -> "Acquisition":
        """A context manager (`with` or `async with`) holding one slot of this limiter for its block: it waits
        up to `wait` seconds (0: do not wait) for a slot, then raises OverLimit. `redis`: the client to use
        (default: sidepunch's default client's)."""
        return Acquisition((self,), _seconds(wait, "wait") if wait else 0.0, redis)


class Concurrent(Limiter):
    """At most `limit` holders at once; a slot is a lease of `lease` seconds, renewed while held."""

    kind = "concurrent"

    def __init__(self, name: str, limit: int, lease: float = 60.0) -> None:
        super().__init__(name, {"limit": _count(limit, "Concurrent limit"),
                                "lease": _seconds(lease, "Concurrent lease", MIN_LEASE)})
        object.__setattr__(self, "lease", self.params["lease"])


class Window(Limiter):
    """At most `limit` admissions in any `per`-second span (sliding, on Redis's clock)."""

    kind = "window"

    def __init__(self, name: str, limit: int, per: float = 1.0) -> None:
        super().__init__(name, {"limit": _count(limit, "Window limit"), "per": _seconds(per, "Window per")})


class Bucket(Limiter):
    """A token bucket: up to `burst` tokens, refilled at `rate` tokens per second; each admission takes one."""

    kind = "bucket"

    def __init__(self, name: str, rate: float, burst: int) -> None:
        if type(rate) not in (int, float) or not math.isfinite(rate) or not 1 / MAX_SECONDS <= rate <= MAX_COUNT:
            raise TypeError(f"Bucket rate must be a number per second from {1 / MAX_SECONDS:g} to {MAX_COUNT}, "
                            f"got {_describe(rate)}")
        super().__init__(name, {"rate": float(rate), "burst": _count(burst, "Bucket burst")})


def check_limits(limits: Any, where: str) -> tuple[Limiter, ...]:
    """A job class's `limits` as a tuple of limiters: a list or tuple of at most MAX_LIMITERS, each a Limiter,
    no name twice; TypeError or ValueError naming `where` otherwise."""
    if not isinstance(limits, (list, tuple)):
        raise TypeError(f"{where}.limits must be a list of sidepunch.limits limiters, got {_describe(limits)}")
    if len(limits) > MAX_LIMITERS:
        raise ValueError(f"{where}.limits lists {len(limits)} limiters; at most {MAX_LIMITERS}")
    seen: set[str] = set()
    for item in limits:
        if not isinstance(item, Limiter) or type(item).kind not in KINDS:
            raise TypeError(f"{where}.limits must hold sidepunch.limits limiters (Concurrent, Window, Bucket), "
                            f"got {_describe(item)}")
        if item.name in seen:
            raise ValueError(f"{where}.limits names the limiter {item.name!r} twice")
        seen.add(item.name)
    return tuple(limits)


def _default_redis() -> Any:
    import sidepunch
    return sidepunch.default_client().redis


class Acquisition:
    """One hold of slots of some limiters, for a `with` or `async with` block (see Limiter.acquire)."""

    def __init__(self, limiters: Sequence[Limiter], wait: float, redis: Any = None) -> None:
        self.limiters = tuple(limiters)
        self.wait = wait
        self._redis = redis
        self._scripts = limiting.Scripts()
        self._rng = random.Random()
        self._concurrent = tuple(lim for lim in self.limiters if lim.kind == "concurrent")
        self._leases = limiting.Leases(self._client, self._scripts.release, linger=0.0) if self._concurrent else None
        self.token = ""
        self._since = 0.0

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = _default_redis()
        return self._redis

    def _try(self) -> limiting.Refusal | None:
        refusal, _ = limiting.take(self._client(), self._scripts.acquire, self.limiters, self.token, self.token,
                                   self._rng)
        return refusal

    def _start(self) -> float:
        if self.token:
            raise RuntimeError("this acquisition is already in use; call limiter.acquire() for each block")
        self.token = uuid.uuid4().hex
        return time.monotonic() + self.wait

    def _granted(self) -> None:
        self._since = time.monotonic()
        if self._leases is not None:
            self._leases.hold(self.token, self._concurrent)

    def _give_up(self, refusal: limiting.Refusal) -> OverLimit:
        """No longer waiting: leave the waiting set, and the exception to raise."""
        for limiter in self.limiters:
            self._client().zrem(limiter.waiting_key, self.token)
        return OverLimit(refusal.limiter, refusal.delay)

    def _release(self) -> None:
        if self._leases is not None:
            self._leases.drop(self.token)
            limiting.give_back(self._client(), self._scripts.release, self._concurrent, self.token,
                               time.monotonic() - self._since)

    def __enter__(self) -> "Acquisition":
        deadline = self._start()
        while True:
            refusal = self._try()
            if refusal is None:
                self._granted()
                return self
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._give_up(refusal)
            time.sleep(min(refusal.delay, left))

    def __exit__(self, *exc: Any) -> None:
        self._release()

    async def __aenter__(self) -> "Acquisition":
        deadline = self._start()
        while True:
            refusal = await asyncio.to_thread(self._try)
            if refusal is None:
                self._granted()
                return self
            left = deadline - time.monotonic()
            if left <= 0:
                raise await asyncio.to_thread(self._give_up, refusal)
            await asyncio.sleep(min(refusal.delay, left))

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.shield(asyncio.to_thread(self._release))


__all__ = ["Limiter", "Concurrent", "Window", "Bucket", "OverLimit", "Acquisition", "check_limits", "check_name",
           "NAME_PATTERN", "MAX_COUNT", "MAX_SECONDS", "MIN_LEASE", "MAX_LIMITERS"]
