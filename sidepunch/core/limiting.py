"""Running the rate-limit scripts for sidepunch.limits and the limits feature: `take` the slots of several
limiters at once (lua/limit_acquire.lua, all or none, on Redis's clock), `give_back` concurrent slots
(lua/limit_release.lua), and `Leases`: the concurrent slots one process holds, renewed by one thread every
third of their lease, so a running job keeps its slot as long as it runs and a process that vanished (SIGKILL,
a lost host) loses it within one lease.

Works on limiter objects as sidepunch.limits defines them (kind, name, args, definition, keys, lease) without
importing them. Imports only sidepunch.core.
"""
from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence


from . import keys, scripts

log = logging.getLogger("sidepunch.limits")


@dataclass(frozen=True)
class Refusal:
    """A limiter said no: its name, seconds until the caller should try again (with jitter), and how many wait."""
    limiter: str
    delay: float
    waiting: int


class Scripts:
    """The two scripts, one pair per owner (a feature, an acquisition); each runs on any client."""

    def __init__(self) -> None:
        self.acquire = scripts.unbound("limit_acquire")
        self.release = scripts.unbound("limit_release")


def take(client: Any, script: Any, limiters: Sequence[Any], token: str, who: str,
         rng: random.Random) -> tuple[Refusal | None, list[str]]:
    """Take a slot of every limiter, or of none: (None, conflicts) when granted, else (Refusal, conflicts).
    `conflicts` names the limiters whose registered definition differed from ours (ours is registered now)."""
    names = [keys.LIMITS, keys.LIMITS_SEEN]
    args: list[Any] = [token, who, repr(rng.random()), keys.LIMITS_IDLE]
    for limiter in limiters:
        names += [limiter.state_key, limiter.waiting_key, limiter.hold_key]
        args += [limiter.kind, limiter.name, *limiter.args, limiter.definition]
    status, name, delay, waiting, *conflicts = script(keys=names, args=args, client=client)
    found = [c.decode() if isinstance(c, bytes) else str(c) for c in conflicts]
    if status == 1:
        return None, found
    limiter = name.decode() if isinstance(name, bytes) else str(name)
    return Refusal(limiter, float(delay), int(waiting)), found


def give_back(client: Any, script: Any, concurrent: Sequence[Any], token: str, held: float) -> list[int]:
    """Release the token's concurrent slots; per limiter, 1 if it still held its slot, 0 if the lease ran out."""
    return [int(x) for x in _run_release(client, script, concurrent, token, "release", held)]


def _run_release(client: Any, script: Any, concurrent: Sequence[Any], token: str, mode: str, held: float) -> Any:
    """The release script for one token (on a pipeline: queued, and the pipeline returned)."""
    names: list[str] = []
    for limiter in concurrent:
        names += [limiter.state_key, limiter.hold_key]
    args = [token, mode, repr(max(0.0, held)), *(repr(float(limiter.lease)) for limiter in concurrent)]
    return script(keys=names, args=args, client=client)


class Leases:
    """The concurrent slots this process holds (token -> limiters), renewed by one daemon thread every third
    of the shortest lease held. The thread starts with the first slot held (again in a forked child, where the
    parent's is gone) and ends once nothing has been held for `linger` seconds."""

    def __init__(self, redis_of: Callable[[], Any], script: Any, linger: float = 60.0) -> None:
        self._redis_of = redis_of
        self._script = script
        self._linger = linger
        self._held: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._interval: float | None = None
        self._pid: int | None = None  # the process whose thread runs; None: no thread runs
        self._failing = False
        self._lost: set[str] = set()  # held tokens already reported as having lost a slot

    def hold(self, token: str, concurrent: Sequence[Any]) -> None:
        """Renew `token`'s slots of these limiters until it is dropped."""
        interval = min(limiter.lease for limiter in concurrent) / 3
        with self._lock:
            if self._pid != os.getpid():  # no thread, or a forked child: the parent's thread is not here
                self._held.clear()
                self._pid, self._interval = os.getpid(), None
                threading.Thread(target=self._run, name="limit-leases", daemon=True).start()
            self._held[token] = tuple(concurrent)
            if self._interval is None or interval < self._interval:
                self._wake.set()  # the thread sleeps longer than this lease allows: it recomputes

    def drop(self, token: str) -> bool:
        """Stop renewing `token`; True if it was held (only its first drop gives its slots back)."""
        with self._lock:
            found = self._held.pop(token, None) is not None
            self._lost.discard(token)
            if found and not self._held:
                self._wake.set()  # nothing left to renew: the thread starts lingering now, not at its next turn
            return found

    def held(self) -> int:
        """How many acquisitions hold slots now."""
        with self._lock:
            return len(self._held)

    def _run(self) -> None:
        due, idle = False, False  # due: woken by the time to renew, not by a hold shortening the wait
        while True:
            self._wake.clear()  # before reading: a hold from now on wakes the wait below
            with self._lock:
                if not self._held and idle:
                    self._pid = None  # the next hold starts a thread again
                    return
                held = dict(self._held)
                self._interval = min((min(l.lease for l in ls) / 3 for ls in held.values()), default=None)
                interval = self._linger if self._interval is None else self._interval
            if due and held:
                self._renew(held)
            due = not self._wake.wait(interval)
            idle = due and not held

    def _renew(self, held: dict[str, tuple[Any, ...]]) -> None:
        """One pipeline renews every held token; a slot found lost (its lease ran out first) is logged."""
        try:
            pipe = self._redis_of().pipeline(transaction=False)
            for token, concurrent in held.items():
                _run_release(pipe, self._script, concurrent, token, "renew", 0.0)
            replies = pipe.execute()
        except Exception as exc:  # an outage, or a refusal: the thread must live on, renewing at the next turn
            if not self._failing:
                log.warning("could not renew rate-limit leases (%s); retrying every renewal", exc)
            self._failing = True
            return
        self._failing = False
        for (token, concurrent), found in zip(held.items(), replies):
            lost = [limiter.name for limiter, ok in zip(concurrent, found) if not int(ok)]
            if lost and self._first_loss(token):
                log.warning("a running job lost its concurrency slot of %s (its lease ran out before renewal, or "
                            "the limiter was reset); the limit may be exceeded until it ends", ", ".join(lost))

    def _first_loss(self, token: str) -> bool:
        """True the first time a still-held token is found to have lost a slot (its other slots stay renewed)."""
        with self._lock:
            if token not in self._held or token in self._lost:
                return False
            self._lost.add(token)
            return True
