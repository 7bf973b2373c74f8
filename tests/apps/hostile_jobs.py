"""Jobs, hooks and middleware that misbehave on purpose, for the hardening tests.

Every job takes a token first and notes it in the list `runs` when it starts; a job that succeeds notes it in
`done` too, so a test can find each job in exactly one place (done, retry, dead) and count its runs.
"""
import asyncio
import os
import time

import sidepunch


def _redis():
    return sidepunch.default_client().redis


class CustomBase(BaseException):
    """Neither an Exception nor anything Python gives a meaning to."""


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("this message cannot be shown")


class ExitingStr(Exception):
    def __str__(self):
        raise SystemExit("even str() exits")


class AccéntéError(Exception):
    """A non-ASCII class name, to check error_class survives the trip."""


def _throw(exc):
    raise exc


def _recurse(n=0):
    return _recurse(n + 1)


def _raise_recursion():
    _recurse()


#: kind -> a callable that raises it
RAISERS = {
    "CancelledError": lambda: _throw(asyncio.CancelledError()),
    "GeneratorExit": lambda: _throw(GeneratorExit()),
    "KeyboardInterrupt": lambda: _throw(KeyboardInterrupt()),
    "SystemExit": lambda: _throw(SystemExit(0)),
    "CustomBase": lambda: _throw(CustomBase("custom")),
    "StopIteration": lambda: _throw(StopIteration()),
    "MemoryError": lambda: _throw(MemoryError()),
    "RecursionError": _raise_recursion,
    "unprintable": lambda: _throw(UnprintableError()),
    "str-exits": lambda: _throw(ExitingStr()),
    "surrogate-message": lambda: _throw(ValueError("bad \ud800 text")),
    "huge-message": lambda: _throw(ValueError("x" * 3_000_000)),
    "non-ascii-class": lambda: _throw(AccéntéError("é")),
}


def raise_kind(kind):
    RAISERS[kind]()


def _start(token):
    _redis().rpush("runs", token)


def _done(token):
    _redis().rpush("done", token)


class Noop(sidepunch.Job):
    def perform(self, token, *rest):
        _start(token)
        _done(token)


class Starts(sidepunch.Job):
    """Notes that it ran, and no more (so a middleware that fails it afterwards leaves it in one place)."""

    def perform(self, token, *rest):
        _start(token)


class Raises(sidepunch.Job):
    def perform(self, token, kind):
        _start(token)
        raise_kind(kind)


class Returns(sidepunch.Job):
    """Succeeds, returning something odd."""

    def perform(self, token, kind):
        _start(token)
        _done(token)
        return {"object": object(), "NotImplemented": NotImplemented, "exception": ValueError("returned"),
                "big": list(range(200_000)), "self": self, "false": False}[kind]


class AsyncPerform(sidepunch.Job):
    def perform(self, token):  # a plain def that returns a coroutine: never run, a clear failure
        return self.body(token)

    async def body(self, token):
        _start(token)


class GeneratorPerform(sidepunch.Job):
    def perform(self, token):  # never runs: a generator is returned instead
        _start(token)
        yield 1


class HookRaises(sidepunch.Job):
    """Fails; then its retry_in or retries_exhausted hook misbehaves as `hook`/`kind` say."""

    retry = 2

    def perform(self, token, hook, kind, retry_count=None):
        _start(token)
        self.plan = (hook, kind)
        raise ValueError("perform failed")

    def retry_in(self, count, exc):
        hook, kind = self.plan
        if hook == "retry_in":
            raise_kind(kind)
        if hook == "retry_in-returns":
            return {"huge": 10 ** 400, "negative": -5, "float": 2.5, "bool": True, "str": "later",
                    "list": [1]}[kind]
        return None

    def retries_exhausted(self, job, exc):
        hook, kind = self.plan
        if hook == "retries_exhausted":
            raise_kind(kind)
        if hook == "retries_exhausted-mutates":
            job["args"] = [object()]  # the dead entry can no longer be encoded


class Exhausted(HookRaises):
    retry = 0


class ConstructorRaises(sidepunch.Job):
    def __init__(self):
        raise CustomBase("cannot even be built")

    def perform(self, token):
        _start(token)


def raising_death_handler(job, exc):
    """A --death-handler that misbehaves."""
    _redis().rpush("deaths", str(job.get("jid")))
    raise KeyboardInterrupt("death handler interrupted")


def middleware(instance, job, queue, call_next):
    """A --middleware that raises the BaseException named by the job's `hostile_middleware` key, before or after
    the job runs."""
    kind = job.get("hostile_middleware")
    if kind and job.get("middleware_when") == "before":
        raise_kind(kind)
    result = call_next()
    if kind:
        raise_kind(kind)
    return result


class Forks(sidepunch.Job):
    """Forks; the child notes its pid and returns (or raises) into Sidepunch; the parent waits for it and notes
    how it ended: "exit 0", "exit 1", or "running" if it did not end within `wait` seconds."""

    def perform(self, token, how, wait=10):
        _start(token)
        pid = os.fork()
        if pid == 0:
            _redis().rpush("forked", os.getpid())
            if how == "raise":
                raise ValueError("the forked child raises")
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _redis().rpush("child-status", f"{token} exit {os.waitstatus_to_exitcode(status)}")
                break
            time.sleep(0.02)
        else:
            _redis().rpush("child-status", f"{token} running")
        _done(token)


class ClosesFds(sidepunch.Job):
    """Closes every file descriptor of its process above stderr, then finishes normally."""

    def perform(self, token):
        _start(token)
        os.closerange(3, 65536)
        _done(token)


class ForksThenClosesFds(sidepunch.Job):
    """Leaves a child that keeps every descriptor open (so the master sees no end of file on the status pipe),
    then closes its own process's descriptors."""

    def perform(self, token, child_seconds):
        _start(token)
        if os.fork() == 0:
            time.sleep(child_seconds)
            os._exit(0)
        os.closerange(3, 65536)
        _done(token)


class Record(sidepunch.Job):
    """Notes its token in `done`; when that fails (Redis refusing writes) it is retried a second later."""

    def perform(self, token):
        _start(token)
        _done(token)

    def retry_in(self, count, exc):
        return 1
