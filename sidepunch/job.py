"""Job classes, the @job decorator and per-call options (`Job.set(...)`).

Owns the user-facing enqueue API and the mapping between a Python job and its name on the wire. It pushes
through `client.Client` and never imports server modules.
"""
from __future__ import annotations

import datetime as _dt
import functools
import time
from typing import Any, Callable, Iterable, Mapping

#: Sidekiq treats a perform_in interval below this as relative to now, above it as an epoch time.
_EPOCH_THRESHOLD = 1_000_000_000


class Job:
    """Subclass and define `perform(self, *args)`. Options are class attributes.

    A running job sees `self.jid`. Optional hooks: `retry_in(self, count, exc)` returning seconds, "discard" or
    "kill"; `retries_exhausted(self, job, exc)`, called when a job runs out of retries.
    """

    queue: str = "default"
    retry: bool | int = True
    dead: bool | None = None
    backtrace: bool | int | None = None
    retry_queue: str | None = None
    tags: list[str] | None = None
    timeout: float | None = None
    #: The class name on the wire; default is the dotted path. Set it to run jobs a Ruby app pushes as "HardWorker".
    wire_name: str | None = None

    jid: str = ""

    def perform(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define perform()")

    @classmethod
    def job_name(cls) -> str:
        return cls.wire_name or f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def job_options(cls) -> dict[str, Any]:
        """Defaults for a payload, in Sidekiq's key order: retry, queue, then the options that are set."""
        options: dict[str, Any] = {"retry": cls.retry, "queue": cls.queue}
        for key in ("dead", "backtrace", "retry_queue", "tags", "timeout"):
            value = getattr(cls, key)
            if value is not None:
                options[key] = list(value) if key == "tags" else value
        return options

    @classmethod
    def set(cls, **options: Any) -> "JobSetter":
        return JobSetter(cls, options)

    @classmethod
    def perform_async(cls, *args: Any) -> str | None:
        return JobSetter(cls, {}).perform_async(*args)

    @classmethod
    def perform_in(cls, interval: float | _dt.timedelta, *args: Any) -> str | None:
        return JobSetter(cls, {}).perform_in(interval, *args)

    @classmethod
    def perform_at(cls, when: float | _dt.datetime, *args: Any) -> str | None:
        return JobSetter(cls, {}).perform_at(when, *args)

    @classmethod
    def perform_bulk(cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str]:
        return JobSetter(cls, {}).perform_bulk(args_list, batch_size)


class JobSetter:
    """Options for one push: `MyJob.set(queue="low", retry=3).perform_async(...)`.

    `client=` picks a `sidepunch.Client`; otherwise the default that `sidepunch.configure()` set is used.
    """

    def __init__(self, job_class: type[Job], options: Mapping[str, Any]) -> None:
        self._job_class = job_class
        self._options = dict(options)
        self._client = self._options.pop("client", None)

    def set(self, **options: Any) -> "JobSetter":
        merged = dict(self._options, **options)
        if self._client is not None:
            merged.setdefault("client", self._client)
        return JobSetter(self._job_class, merged)

    def _push(self, item: dict[str, Any]) -> str | None:
        from .client import default_client
        client = self._client or default_client()
        return client.push({"class": self._job_class, **self._options, **item})

    def perform_async(self, *args: Any) -> str | None:
        return self._push({"args": list(args)})

    def perform_in(self, interval: float | _dt.timedelta, *args: Any) -> str | None:
        seconds = interval.total_seconds() if isinstance(interval, _dt.timedelta) else float(interval)
        now = time.time()
        at = seconds if seconds >= _EPOCH_THRESHOLD else now + seconds
        if at <= now:
            return self.perform_async(*args)
        return self._push({"args": list(args), "at": at})

    def perform_at(self, when: float | _dt.datetime, *args: Any) -> str | None:
        if isinstance(when, _dt.datetime):
            if when.tzinfo is None:
                raise ValueError("perform_at needs an aware datetime (naive times are ambiguous); "
                                 "pass tzinfo or an epoch number")
            when = when.timestamp()
        return self.perform_in(float(when), *args)

    def perform_bulk(self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str]:
        from .client import default_client
        client = self._client or default_client()
        rows = [list(args) for args in args_list]
        jids: list[str] = []
        for start in range(0, len(rows), batch_size):
            item = {"class": self._job_class, **self._options, "args": rows[start:start + batch_size]}
            jids.extend(client.push_bulk(item))
        return jids


class JobFunction:
    """What `@sidepunch.job` returns: call it to run the function now, or enqueue it like a Job class."""

    def __init__(self, func: Callable[..., Any], job_class: type[Job]) -> None:
        functools.update_wrapper(self, func)
        self.job_class = job_class

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # perform_async, perform_in, perform_at, perform_bulk, set, job_name, job_options
        return getattr(self.job_class, name)


def job(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Turn a function into a job: `@job` or `@job(queue="low", retry=3)`; enqueue with `.perform_async()`."""
    unknown = set(options) - {"queue", "retry", "dead", "backtrace", "retry_queue", "tags", "timeout",
                              "wire_name"}
    if unknown:
        raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")

    def wrap(fn: Callable[..., Any]) -> JobFunction:
        def perform(self: Job, *args: Any) -> Any:
            return fn(*args)
        namespace = {"perform": perform, "__module__": fn.__module__, "__qualname__": fn.__qualname__,
                     "__doc__": fn.__doc__, **options}
        return JobFunction(fn, type(fn.__name__, (Job,), namespace))

    return wrap(func) if func is not None else wrap


def job_class_of(obj: Any) -> type[Job] | None:
    """The Job class behind a class or a @job function, else None."""
    if isinstance(obj, JobFunction):
        return obj.job_class
    if isinstance(obj, type) and issubclass(obj, Job):
        return obj
    return None
