"""Job classes, the @job decorator and per-call options (`Job.set(...)`).

Owns the user-facing enqueue API (`perform_async` and friends, and their awaited forms `aperform_async`...)
and the mapping between a Python job and its name on the wire. It pushes through `push.Client` or
`aio.AsyncClient` and never imports server modules.

Typed: `perform_async`, `perform_in`, `perform_at`, their `a...` twins and `set(...)` carry the parameters of
`perform` (of the function, for `@job`) through a ParamSpec, so a type checker flags a wrong call; at run time
`arguments.positional_args` binds keywords to positions and checks the count. perform_bulk's rows are untyped.
"""
from __future__ import annotations

import datetime as _dt
import functools
import inspect
import sys
import time
from typing import (TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Mapping, ParamSpec, Protocol,
                    TypedDict, TypeVar, Unpack, overload)

from .arguments import ARGS_OF, bulk_rows, positional_args
from .options import PAYLOAD_OPTIONS
from .options import check_class_options as _check_class_options
from .options import check_queues as _check_queues
from .options import seconds as _seconds
from .validate import describe

P = ParamSpec("P")
R = TypeVar("R")


class _Performs(Protocol[P]):
    """What the enqueue methods read a job's parameters from: its perform (self dropped), typed by P."""

    def perform(self, /, *args: P.args, **kwargs: P.kwargs) -> Any: ...


#: Sidekiq treats a perform_in interval below this as relative to now, above it as an epoch time.
_EPOCH_THRESHOLD = 1_000_000_000


class Job:
    """Subclass and define `perform(self, *args)`. Options are class attributes. Enqueue with
    `MyJob.perform_async(*args)` (`perform_in`, `perform_at`, `perform_bulk`), or from asyncio code with
    `await MyJob.aperform_async(*args)` (`aperform_in`, `aperform_at`, `aperform_bulk`). These take perform's
    parameters (type checkers see them); keyword arguments are bound to perform's positions at enqueue, since
    the wire carries positional args, and a call perform would refuse raises TypeError before anything is written.

    `perform` may be a plain `def` (run on a processor thread) or an `async def` (run on the worker's event
    loop, many at once). A running job sees `self.jid` and `self.cancelled` (True once `sidepunch.api.cancel`
    asked for it to stop). Optional hooks: `retry_in(self, count, exc)` returning seconds, "discard" or "kill";
    `retries_exhausted(self, job, exc)`, called when a job runs out of retries; `on_cancel(self)` (a plain or an
    async def), called after a cancelled job stopped.

    `keep_result = N` (seconds) keeps perform's return value (JSON only) for N seconds under the jid, for
    `sidepunch.api.result(jid)`; off by default, so recording a finished job costs nothing extra.
    """

    queue: str = "default"
    retry: bool | int = True
    dead: bool | None = None
    #: While a job of a batch runs: its batch (`with self.batch:` adds jobs to it); else None (client/batch.py).
    batch: Any = None
    backtrace: bool | int | None = None
    retry_queue: str | None = None
    tags: list[str] | None = None
    timeout: float | None = None
    #: Seconds to keep perform's return value for `sidepunch.api.result(jid)`; None or 0: not kept. Read by the
    #: daemon from the class, never sent in the payload.
    keep_result: int | None = None
    #: The class name on the wire; default is the dotted path. Set it to run jobs a Ruby app pushes as "HardWorker".
    wire_name: str | None = None
    #: Unique jobs (sidepunch/features/unique.py): refuse a duplicate push for this many seconds, until the job
    #: succeeds ("success") or starts ("start"); `unique_args(self, *args)` may say what makes a duplicate.
    unique_for: float | None = None
    unique_until: str | None = None
    #: Seconds after its push (or its scheduled time) past which a fetched job is dropped, not run.
    expires_in: float | None = None
    #: Rate limits (sidepunch.limits) every run of this class must get a slot of; read by the daemon.
    limits: list[Any] | tuple[Any, ...] | None = None

    jid: str = ""
    __sidepunch_job__: ClassVar[type[Job]]
    _sidepunch_cancelled: bool = False  # set on the running instance by the daemon when a cancel arrives

    @property
    def cancelled(self) -> bool:
        """True once this running job was asked to stop (`sidepunch.api.cancel`); for cooperative loops."""
        return self._sidepunch_cancelled

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_class_options(cls)
        cls.__sidepunch_job__ = cls  # how client.push knows a job class without importing this module

    # (*args: Any, **kwargs: Any) reads as "any parameters" to type checkers, so a subclass's perform may take
    # whatever it likes; the enqueue methods below then take exactly that.
    def perform(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define perform()")

    @classmethod
    def job_name(cls) -> str:
        return cls.wire_name or f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def job_options(cls) -> dict[str, Any]:
        """Defaults for a payload, in Sidekiq's key order: retry, queue, then the options that are set."""
        options: dict[str, Any] = {"retry": cls.retry, "queue": cls.queue}
        for key in PAYLOAD_OPTIONS:
            value = getattr(cls, key)
            if value is not None:
                options[key] = list(value) if key == "tags" else value
        return options

    # `cls: type[_Performs[P]]` binds P to the parameters of the subclass's perform. Every leading parameter is
    # positional-only, so perform may have parameters named cls, interval or when.
    @classmethod
    def set(cls: type[_Performs[P]], /, **options: Any) -> JobSetter[P]:
        return JobSetter(cls, options)

    @classmethod
    def perform_async(cls: type[_Performs[P]], /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        # JobSetter(cls, {}).perform_async(...) without building the setter: the most common push, made often
        return _default_client().push({"class": cls, "args": positional_args(cls, args, kwargs)})

    @classmethod
    def perform_in(cls: type[_Performs[P]], interval: float | _dt.timedelta, /,
                   *args: P.args, **kwargs: P.kwargs) -> str | None:
        return JobSetter(cls, {}).perform_in(interval, *args, **kwargs)

    @classmethod
    def perform_at(cls: type[_Performs[P]], when: float | _dt.datetime, /,
                   *args: P.args, **kwargs: P.kwargs) -> str | None:
        return JobSetter(cls, {}).perform_at(when, *args, **kwargs)

    @classmethod
    def perform_bulk(cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        return JobSetter(cls, {}).perform_bulk(args_list, batch_size)

    # The same from asyncio code, through the async client (the default one unless `set(client=...)`).
    @classmethod
    async def aperform_async(cls: type[_Performs[P]], /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await JobSetter(cls, {}).aperform_async(*args, **kwargs)

    @classmethod
    async def aperform_in(cls: type[_Performs[P]], interval: float | _dt.timedelta, /,
                          *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await JobSetter(cls, {}).aperform_in(interval, *args, **kwargs)

    @classmethod
    async def aperform_at(cls: type[_Performs[P]], when: float | _dt.datetime, /,
                          *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await JobSetter(cls, {}).aperform_at(when, *args, **kwargs)

    @classmethod
    async def aperform_bulk(cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        return await JobSetter(cls, {}).aperform_bulk(args_list, batch_size)


#: The module of the default client, imported on first use (importing job classes must not load redis-py).
_PUSH_MODULE = f"{__package__}.push"


def _default_client() -> Any:
    """push.default_client(). The module is looked up in sys.modules: an import statement in a function costs
    a push more than the look-up of the client itself."""
    push: Any = sys.modules.get(_PUSH_MODULE)
    if push is None:
        from . import push
    return push.default_client()


class JobSetter(Generic[P]):
    """Options for one push: `MyJob.set(queue="low", retry=3).perform_async(...)`; P is perform's parameters.

    `client=` picks a `sidepunch.Client` or a `sidepunch.AsyncClient`; otherwise the default that
    `sidepunch.configure()` set is used. The `a...` methods (awaited) push through an AsyncClient, or through a
    Client's async twin; the plain ones need a Client.
    """

    def __init__(self, job_class: type[_Performs[P]], options: Mapping[str, Any]) -> None:
        self._job_class: Any = job_class  # a Job subclass; typed by its perform only, for P
        self._options = dict(options)
        self._client = self._options.pop("client", None)
        # An AsyncClient (or any client whose push is a coroutine function) serves only the awaited methods.
        self._async = self._client is not None and inspect.iscoroutinefunction(self._client.push)
        if self._options:
            _check_queues(self._options, "set")

    def set(self, /, **options: Any) -> JobSetter[P]:
        merged = dict(self._options, **options)
        if self._client is not None:
            merged.setdefault("client", self._client)
        return JobSetter(self._job_class, merged)

    def _sync_client(self) -> Any:
        if self._client is None:
            return _default_client()
        if self._async:
            raise TypeError(f"{type(self._client).__name__} pushes from coroutines: await aperform_async, "
                            "aperform_in, aperform_at or aperform_bulk, or give set(client=...) a sidepunch.Client")
        return self._client

    def _async_client(self) -> Any:
        from .aio import default_async_client, twin_of
        if self._client is None:
            return default_async_client()
        return self._client if self._async else twin_of(self._client)

    def perform_async(self, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self._sync_client().push(self._item(args, kwargs))

    def perform_in(self, interval: float | _dt.timedelta, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self._sync_client().push(self._item_in(interval, args, kwargs))

    def perform_at(self, when: float | _dt.datetime, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self._sync_client().push(self._item_at(when, args, kwargs))

    def perform_bulk(self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        """One push_bulk per `batch_size` jobs; every batch is checked before the first is written."""
        client = self._sync_client()
        return client.push_batches(self._batches(args_list, batch_size))

    async def aperform_async(self, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self._async_client().push(self._item(args, kwargs))

    async def aperform_in(self, interval: float | _dt.timedelta, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self._async_client().push(self._item_in(interval, args, kwargs))

    async def aperform_at(self, when: float | _dt.datetime, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self._async_client().push(self._item_at(when, args, kwargs))

    async def aperform_bulk(self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        """perform_bulk, awaited."""
        client = self._async_client()
        return await client.push_batches(self._batches(args_list, batch_size))

    def _item(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The item of one push; a call perform would not take raises TypeError here, before any write."""
        return {"class": self._job_class, **self._options, "args": positional_args(self._job_class, args, kwargs)}

    def _item_in(self, interval: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The item of a push `interval` from now (or at that epoch time, as in Sidekiq); due now if not later."""
        seconds = _seconds(interval, "perform_in interval")
        now = time.time()
        at = seconds if seconds >= _EPOCH_THRESHOLD else now + seconds
        item = self._item(args, kwargs)
        if at > now:
            item["at"] = at
        return item

    def _item_at(self, when: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(when, _dt.datetime):
            if when.tzinfo is None:
                raise ValueError("perform_at needs an aware datetime (naive times are ambiguous); "
                                 "pass tzinfo or an epoch number")
            when = when.timestamp()
        return self._item_in(_seconds(when, "perform_at time"), args, kwargs)

    def _batches(self, args_list: Any, batch_size: Any) -> Iterable[dict[str, Any]]:
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"perform_bulk batch_size must be a positive int, got {describe(batch_size)}")
        rows = bulk_rows(args_list)
        return ({"class": self._job_class, **self._options, "args": rows[i:i + batch_size]}
                for i in range(0, len(rows), batch_size))


class JobFunction(Generic[P, R]):
    """What `@sidepunch.job` returns: call it to run the function now, or enqueue it like a Job class. P and R
    are the function's parameters and return type; the enqueue methods take P, as a Job class's take perform's.
    Other attributes of the job class (queue, job_options, ...) are read through at run time; type checkers see
    the ones declared here, and `job_class` for the rest."""

    __wrapped__: Callable[P, R]

    def __init__(self, func: Callable[P, R], job_class: type[Job]) -> None:
        functools.update_wrapper(self, func)
        self.job_class = job_class
        self.__sidepunch_job__ = job_class

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def set(self, /, **options: Any) -> JobSetter[P]:
        return JobSetter(self.job_class, options)  # typed by the function (P), not by its generated perform

    def job_name(self) -> str:
        return self.job_class.job_name()

    def perform_async(self, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self.set().perform_async(*args, **kwargs)

    def perform_in(self, interval: float | _dt.timedelta, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self.set().perform_in(interval, *args, **kwargs)

    def perform_at(self, when: float | _dt.datetime, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return self.set().perform_at(when, *args, **kwargs)

    def perform_bulk(self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        return self.set().perform_bulk(args_list, batch_size)

    async def aperform_async(self, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self.set().aperform_async(*args, **kwargs)

    async def aperform_in(self, interval: float | _dt.timedelta, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self.set().aperform_in(interval, *args, **kwargs)

    async def aperform_at(self, when: float | _dt.datetime, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        return await self.set().aperform_at(when, *args, **kwargs)

    async def aperform_bulk(self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000) -> list[str | None]:
        return await self.set().aperform_bulk(args_list, batch_size)

    if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt method is an error there, not Any
        def __getattr__(self, name: str) -> Any:
            return getattr(self.job_class, name)  # queue, retry, job_options, ... of the job class


class JobOptions(TypedDict, total=False):
    """The options `@job(...)` takes, as a Job class's attributes of the same names."""

    queue: str
    retry: bool | int
    dead: bool | None
    backtrace: bool | int | None
    retry_queue: str | None
    tags: list[str] | None
    timeout: float | None
    wire_name: str | None
    keep_result: int | None
    unique_for: float | None
    unique_until: str | None
    expires_in: float | None
    limits: list[Any] | tuple[Any, ...] | None


class _JobDecorator(Protocol):
    """What `@job(...)` with options returns: a decorator keeping the function's parameters."""

    def __call__(self, func: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(func: Callable[P, R], /, **options: Unpack[JobOptions]) -> JobFunction[P, R]: ...


@overload
def job(func: None = None, /, **options: Unpack[JobOptions]) -> _JobDecorator: ...


def job(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Turn a function into a job: `@job` or `@job(queue="low", retry=3)`; enqueue with `.perform_async()`.
    A plain function runs on a processor thread, an `async def` on the worker's event loop."""
    unknown = set(options) - set(JobOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")

    def wrap(fn: Callable[..., Any]) -> JobFunction[..., Any]:
        namespace = {"perform": _perform_calling(fn), "__module__": fn.__module__, "__qualname__": fn.__qualname__,
                     "__doc__": fn.__doc__, **options}
        return JobFunction(fn, type(fn.__name__, (Job,), namespace))

    return wrap(func) if func is not None else wrap


def _perform_calling(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The perform of a `@job` class: calls `fn` with the job's args (awaits it, for an async def). Marked with
    `fn`, whose parameters a push binds keywords by, since this perform takes any."""
    perform: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):
        async def perform_awaiting(self: Job, *args: Any) -> Any:  # the daemon awaits it on its loop
            return await fn(*args)
        perform = perform_awaiting
    else:
        def perform_calling(self: Job, *args: Any) -> Any:
            return fn(*args)
        perform = perform_calling
    perform.__name__, perform.__qualname__ = "perform", f"{fn.__qualname__}.perform"
    setattr(perform, ARGS_OF, fn)
    return perform


def job_class_of(obj: Any) -> type[Job] | None:
    """The Job class behind a class or a @job function, else None."""
    if isinstance(obj, JobFunction):
        return obj.job_class
    if isinstance(obj, type) and issubclass(obj, Job):
        return obj
    return None
