"""Middleware: the `Middleware` base class, its context, the chains that run its hooks, and job outcomes.

A middleware is a class with up to three optional hooks, built once per process with a `MiddlewareContext`
(a Redis client, a clock, the daemon's config or None on the client side):

- `around_push(job, call_next)` runs around every push; it may change the job dict before `call_next(job)`,
  or return None without calling it to stop the push;
- `around_perform(instance, job, queue, call_next)` runs around every perform of a sync job (a plain `def
  perform`) in the daemon; it must call `call_next()` for the job to run, and may end the job another way by
  raising (or returning) `Reschedule(n)`;
- `around_perform_async(instance, job, queue, call_next)`, an `async def`, does the same around every async job
  (`async def perform`) on the worker's event loop: `return await call_next()`. A middleware wraps the kinds of
  job whose hook it defines: define both to wrap every job (a sync hook cannot wait for an async job without
  blocking a thread per job, so it is not applied to them);
- `on_death(job, exc)` runs when a job dies or is discarded.

Plain functions keep working and are adapted into the class: a client function `mw(job, call_next)`, a server
function `mw(instance, job, queue, call_next)`, a death handler `handler(job, exc)`. A chain holds each hook
itself (a bound method, or the function as given), so running it costs what running the functions did, and a
middleware that does not override a hook is not in that hook's chain at all.

Imports nothing of ours: the client and the server both build on it.
"""
from __future__ import annotations

import enum
import importlib
import inspect
import threading
import time
from typing import Any, Callable, Iterable, Sequence

ClientMiddleware = Callable[[dict, Callable[[dict], Any]], Any]
ServerMiddleware = Callable[[Any, dict, str, Callable[[], Any]], Any]
DeathHandler = Callable[[dict, BaseException], Any]
#: The longest delay a Reschedule takes (about 31 years): further means never, and the score must stay a float.
MAX_DELAY = 10 ** 9
HOOKS = ("around_push", "around_perform", "around_perform_async", "on_death")


class Outcome(str, enum.Enum):
    """How a fetched job ended. A str, so it logs and compares as its value ("done" == Outcome.DONE)."""

    DONE = "done"                # ran; acknowledged
    RETRY = "retry"              # failed; in the retry set
    DEAD = "dead"                # failed for good, or unreadable; in the dead set
    DISCARDED = "discarded"      # failed with retry off, or the job chose to discard; nowhere, by design
    ABANDONED = "abandoned"      # its worker took it away (timeout, shutdown); recorded by whoever took it
    RESCHEDULED = "rescheduled"  # a server middleware put it back in the schedule; not a failure
    CANCELLED = "cancelled"      # stopped by sidepunch.api.cancel; acknowledged, neither retried nor dead
    SUBMITTED = "submitted"      # an async job handed to the worker's event loop, which records its outcome
    EXPIRED = "expired"          # fetched after its expires_at: acknowledged without running, counted as expired
    RATE_LIMITED = "rate_limited"  # over a rate limit: back in the schedule without running; not a failure

    def __str__(self) -> str:
        return self.value


class Reschedule(BaseException):
    """Raise (or return) from a server middleware to end the job with "run it again in `seconds`", not a retry.

    The payload goes back to the `schedule` set as it was fetched (no retry_count, no error fields; the poller
    gives it a fresh enqueued_at when it is due), the job counts as processed, and no death hook runs. Raise it
    before `call_next()`: raised after, the job has run and runs again. A job's perform may raise it too. A
    BaseException, so that a middleware's `except Exception` lets it through.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = check_delay(seconds)
        super().__init__(f"reschedule in {self.seconds:g}s")


class RateLimited(Reschedule):
    """Raise from a server middleware, before `call_next()`, to put a job over a rate limit back in the schedule
    in `seconds`: it did not run, so it counts neither as processed nor as a retry, but in stat:rate_limited."""

    def __init__(self, seconds: float, limiter: str = "") -> None:
        super().__init__(seconds)
        self.limiter = limiter


class Expired(BaseException):
    """Raise from a server middleware, before `call_next()`, to drop a job whose deadline passed: acknowledged
    without running, logged and counted in stat:expired; neither failed nor dead."""


def check_delay(seconds: Any) -> float:
    """`seconds` as a float from 0 to MAX_DELAY; TypeError or ValueError saying what is wrong otherwise."""
    if type(seconds) not in (int, float):
        raise TypeError(f"Reschedule takes a number of seconds, got {type(seconds).__name__}")
    if not (0 <= seconds <= MAX_DELAY):  # NaN fails this too
        raise ValueError(f"Reschedule takes 0 to {MAX_DELAY} seconds, got {seconds!r}")
    return float(seconds)


class MiddlewareContext:
    """What a middleware is built with: `redis` (made on first use), `clock()` (epoch seconds), and `config`
    (the daemon's settings; None in a process that only pushes)."""

    def __init__(self, redis: Any, *, clock: Callable[[], float] = time.time, config: Any = None) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self.clock = clock
        self.config = config

    @property
    def redis(self) -> Any:
        """The Redis client; `redis` may be given as a function that makes it, called once, on first use."""
        if callable(self._redis):
            with self._lock:
                if callable(self._redis):
                    self._redis = self._redis()
        return self._redis


class Middleware:
    """Subclass and override any of the hooks; the defaults only pass the job on. Register the class (or its
    dotted path): each process builds one instance with its context, available as `self.context`."""

    def __init__(self, context: MiddlewareContext | None) -> None:
        self.context = context

    def around_push(self, job: dict, call_next: Callable[[dict], Any]) -> Any:
        return call_next(job)

    def around_perform(self, instance: Any, job: dict, queue: str, call_next: Callable[[], Any]) -> Any:
        return call_next()

    async def around_perform_async(self, instance: Any, job: dict, queue: str,
                                   call_next: Callable[[], Any]) -> Any:
        return await call_next()

    def on_death(self, job: dict, exc: BaseException) -> None:
        return None

    def close(self) -> None:
        """Called once when the worker process stops, after its last job and before it exits (a worker leaves
        with os._exit, so atexit hooks do not run there): flush what the middleware buffers, such as spans."""
        return None


def close_all(chains: Iterable[Sequence[Callable[..., Any]]], log: Any) -> None:
    """Close each Middleware instance behind the hooks of `chains` once; one that raises is logged, not fatal."""
    seen: set[int] = set()
    for chain in chains:
        for hook in chain:
            owner = getattr(hook, "__self__", None)
            if not isinstance(owner, Middleware) or id(owner) in seen:
                continue
            seen.add(id(owner))
            try:
                owner.close()
            except Exception:
                log.exception("closing middleware %r raised", owner)


class Feature(Middleware):
    """A built-in middleware (sidepunch/features) that wraps only the jobs it concerns, so a plain job pays
    nothing for it: a push whose job dict has one of `payload_keys` (or for which `applies_to_push` says so),
    and a run whose payload has one of them or whose job class has a true `class_attrs` attribute. Features run
    outside the user's middleware, in sidepunch.features.BUILTIN's order."""

    payload_keys: frozenset[str] = frozenset()
    class_attrs: tuple[str, ...] = ()

    def applies_to_push(self, job: dict) -> bool:
        return not self.payload_keys.isdisjoint(job)

    def after_push(self, written: Sequence[str], refused: Sequence[str]) -> None:
        """Called by the client after the write of a push this feature's around_push concerned (in the pushing
        thread or task): the jids the write wrote and those it refused (duplicates of unique jobs). Not called
        when the write raised (it may or may not have landed), nor for a push written later (a deferred one)."""

    def applies(self, instance: Any, job: dict) -> bool:
        if not self.payload_keys.isdisjoint(job):
            return True
        return any(getattr(instance, name, None) for name in self.class_attrs)


class FunctionMiddleware(Middleware):
    """A function registered as one hook: the function itself is the hook, with no wrapper around each call."""

    def __init__(self, hook: str, function: Callable[..., Any]) -> None:
        super().__init__(None)
        if hook not in HOOKS:
            raise ValueError(f"unknown middleware hook {hook!r}")
        if not callable(function):
            raise TypeError(f"a middleware function must be callable, got {type(function).__name__}")
        if hook == "around_perform" and inspect.iscoroutinefunction(function):
            hook = "around_perform_async"  # an `async def mw(instance, job, queue, call_next)` wraps async jobs
        self.hook = hook
        self.function = function
        setattr(self, hook, function)

    def __repr__(self) -> str:
        return f"FunctionMiddleware({self.hook}, {self.function!r})"


def build(spec: Any, context: MiddlewareContext | None, hook: str) -> Middleware:
    """One registered middleware as an instance: a Middleware subclass is built with `context`, an instance is
    kept, and a plain function becomes the `hook` it was registered for (its documented form)."""
    if isinstance(spec, type) and issubclass(spec, Middleware):
        return spec(context)
    if isinstance(spec, Middleware):
        return spec
    if isinstance(spec, type) or not callable(spec):
        raise TypeError(f"a middleware must be a sidepunch.Middleware subclass or a function, got {spec!r}")
    return FunctionMiddleware(hook, spec)


def hooks(middleware: Iterable[Middleware], hook: str) -> tuple[Callable[..., Any], ...]:
    """The chain of one hook: each middleware that defines it, in order (outermost first)."""
    default = getattr(Middleware, hook)
    chain = []
    for mw in middleware:
        if hook in vars(mw) or getattr(type(mw), hook) is not default:
            chain.append(getattr(mw, hook))
    return tuple(chain)


def load_dotted(path: str) -> Any:
    """`package.module.name` -> the function or class; ImportError or AttributeError names what is missing."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path like myapp.hooks.notify")
    target = getattr(importlib.import_module(module_name), attr, None)
    if not callable(target):
        raise AttributeError(f"{path} is not a function in module {module_name}")
    return target


def run_client_chain(chain: Sequence[ClientMiddleware], job: dict, final: Callable[[dict], Any]) -> Any:
    def step(index: int, current: dict) -> Any:
        if index == len(chain):
            return final(current)
        return chain[index](current, lambda nxt: step(index + 1, nxt))
    return step(0, job)


def run_server_chain(chain: Sequence[ServerMiddleware], instance: Any, job: dict, queue: str,
                     final: Callable[[], Any]) -> Any:
    def step(index: int) -> Any:
        if index == len(chain):
            return final()
        return chain[index](instance, job, queue, lambda: step(index + 1))
    return step(0)


async def run_async_chain(chain: Sequence[Callable[..., Any]], instance: Any, job: dict, queue: str,
                          final: Callable[[], Any]) -> Any:
    """The async twin of run_server_chain: each hook awaits `call_next()`; `final()` returns an awaitable."""
    async def step(index: int) -> Any:
        if index == len(chain):
            return await final()
        return await chain[index](instance, job, queue, lambda: step(index + 1))
    return await step(0)


__all__ = ["Middleware", "MiddlewareContext", "FunctionMiddleware", "Feature", "close_all", "Outcome", "Reschedule",
           "RateLimited", "Expired", "build", "hooks",
           "load_dotted", "run_client_chain", "run_server_chain", "run_async_chain", "check_delay", "MAX_DELAY"]
