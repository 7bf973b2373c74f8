"""Running one pushed job in this process, as a worker would, for the testing modes (fake drain, inline).

A job runs from the exact payload bytes its push encoded: they are decoded (strictly, as a worker decodes them),
the class name is resolved, an instance gets its `jid`, and `perform(*args)` runs inside the server middleware's
perform hooks (`around_perform` for a plain `def perform`, `around_perform_async` for an `async def perform`,
which is awaited). What differs from a worker, on purpose: no retries, so what perform raises reaches the caller;
no death handlers (`on_death`), `retry_in` or `retries_exhausted`; no timeouts, no cancellation and no kept
results.

Class names are looked up among the Job classes already defined in this process, never by importing a module:
first a `wire_name`, then a dotted path through modules already imported (as the daemon resolves), then a class's
own name (`module.qualname`), so jobs defined inside a test function are found too; when several classes share
that name (a test that ran twice) the one defined last wins.

Async jobs pushed from sync code run on an event loop of their own (`Loops`): one loop for a whole drain, or,
when the calling thread already runs a loop (a sync call inside an async test), a fresh loop on a helper thread
per job, since a running loop cannot be re-entered. Awaited forms (`arun`) run them on the caller's loop.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from typing import Any, Callable, Coroutine, Iterator, Sequence

from ..client.job import Job, job_class_of
from ..client.push import default_client
from ..core.middleware import MiddlewareContext, Reschedule, build, hooks, run_async_chain, run_server_chain
from ..core.payload import decode


class UnknownJob(LookupError):
    """A payload names a class that no Job defined in this process has (by wire_name, path or name)."""


def job_class(name: Any) -> type[Job]:
    """The Job class a payload's `class` names; UnknownJob if none (nothing is imported to find one)."""
    if not isinstance(name, str):
        raise UnknownJob(f"a job's class must be a name, got {type(name).__name__}")
    every = list(_all_job_classes(Job))
    named = [cls for cls in every if cls.wire_name == name]
    found = named[-1] if named else _by_path(name)
    if found is None:
        own = [cls for cls in every if cls.job_name() == name]
        found = own[-1] if own else None
    if found is None:
        raise UnknownJob(f"unknown job class {name!r}: no Job defined in this process has that wire_name or "
                         "name (testing modes import nothing: import the module that defines it)")
    return found


def _all_job_classes(base: type[Job]) -> Iterator[type[Job]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _all_job_classes(sub)


def _by_path(name: str) -> type[Job] | None:
    """The Job class or @job function at dotted path `name` in a module already imported, else None."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        found = job_class_of(obj)
        if found is not None:
            return found
    return None


class Loops:
    """Where sync code runs async jobs: one event loop for every job until `close()`, made on first need; or a
    fresh loop on a helper thread per job when this thread already runs a loop. A context manager."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._runner is None:
                self._runner = asyncio.Runner()
            return self._runner.run(make())
        return _on_helper_thread(make)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> "Loops":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _on_helper_thread(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """asyncio.run(make()) on a new thread, waited for; its result, or what it raised, raised here."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="sidepunch-testing-loop", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


class Performer:
    """Runs payloads. `server_middleware`: None for the perform hooks of the middleware registered with
    `sidepunch.configure()` (those a worker runs from code, read at each job), or the middleware to run
    (classes, instances or functions `mw(instance, job, queue, call_next)`, as `--middleware` takes)."""

    def __init__(self, server_middleware: Sequence[Any] | None) -> None:
        self._built = None
        if server_middleware is not None:
            if isinstance(server_middleware, (str, bytes)) or not isinstance(server_middleware, Sequence):
                raise TypeError("server_middleware must be a list of middleware, or None for those configured")
            context = MiddlewareContext(lambda: default_client().redis)
            self._built = tuple(build(mw, context, "around_perform") for mw in server_middleware)

    def _middleware(self) -> Sequence[Any]:
        return default_client().middleware if self._built is None else self._built

    def run(self, raw: bytes, queue: str, loops: Loops) -> dict[str, Any]:
        """Run one job from sync code; returns its payload as decoded. What it raises propagates."""
        job, instance, args = _instance(raw)
        if inspect.iscoroutinefunction(type(instance).perform):
            chain = hooks(self._middleware(), "around_perform_async")
            loops.run(lambda: _perform_async(chain, instance, job, queue, args))
        else:
            _perform(hooks(self._middleware(), "around_perform"), instance, job, queue, args)
        return job

    async def arun(self, raw: bytes, queue: str) -> dict[str, Any]:
        """Run one job from a coroutine: an async job is awaited on the running loop, a sync one called here."""
        job, instance, args = _instance(raw)
        if inspect.iscoroutinefunction(type(instance).perform):
            await _perform_async(hooks(self._middleware(), "around_perform_async"), instance, job, queue, args)
        else:
            _perform(hooks(self._middleware(), "around_perform"), instance, job, queue, args)
        return job


def _instance(raw: bytes) -> tuple[dict[str, Any], Job, list[Any]]:
    """(the payload decoded, an instance of its class with its jid, its args), as a worker builds them."""
    job = decode(raw)
    instance = job_class(job["class"])()
    instance.jid = job.get("jid", "")
    args = job.get("args")
    if type(args) is not list:
        raise TypeError(f"job args must be a JSON array, got {type(args).__name__}")
    return job, instance, args


def _perform(chain: Sequence[Any], instance: Job, job: dict, queue: str, args: list) -> Any:
    result = run_server_chain(chain, instance, job, queue, lambda: _ran(instance.perform(*args)))
    if isinstance(result, Reschedule):  # a middleware may return it instead of raising it
        raise result
    return result


async def _perform_async(chain: Sequence[Any], instance: Job, job: dict, queue: str, args: list) -> Any:
    result = await run_async_chain(chain, instance, job, queue, lambda: instance.perform(*args))
    if isinstance(result, Reschedule):
        raise result
    return result


def _ran(result: Any) -> Any:
    """perform's return value; an awaitable or generator from a plain `def perform` means its body never ran,
    which a worker refuses as a failure, and so does this."""
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()
    elif not (inspect.isasyncgen(result) or inspect.isawaitable(result)):
        return result
    raise TypeError(f"perform returned a {type(result).__name__} instead of running: a plain def perform must do "
                    "its work itself (make it an async def to have it awaited)")
