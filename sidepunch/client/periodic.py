"""`@sidepunch.periodic(...)`: declare that a job class (or an @job function) is enqueued on a cron schedule.

No registry: the declaration is kept on the job class itself (`__sidepunch_periodic__`, in the class's own
namespace so a subclass does not inherit it), and `declared()` finds every one by walking Job's subclasses
after the app is imported. So importing the app is declaring, and nothing here is module-global state. A
daemon schedules the entries declared in the packages it was told to load (--require), not every class that
happens to be imported in its process (a test suite, an app that embeds a Manager for something else).
Imports core and client only.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from ..core.periodic import DEFAULT_GRACE, PeriodicEntry
from .job import Job, JobFunction

ATTRIBUTE = "__sidepunch_periodic__"
T = TypeVar("T")


def periodic(cron: str, *, tz: str = "UTC", args: Sequence[Any] = (), queue: str | None = None,
             name: str | None = None, missed: str = "skip", grace: float = DEFAULT_GRACE) -> Callable[[T], T]:
    """Enqueue the decorated Job class or @job function on `cron` (5 fields, 6 with seconds first, or an
    alias) in zone `tz`. `name` defaults to the job's name; `missed`: "skip", "latest" or "all" (ticks no
    daemon was up for, at most `grace` seconds old). Bad values raise ValueError now, at import."""

    def declare(target: T) -> T:
        job_class = _job_class(target)
        entry = PeriodicEntry(name=name or job_class.job_name(), cron=cron, job=job_class.job_name(),
                              args=list(args), queue=queue or "", tz=tz, missed=missed, grace=grace)  # type: ignore[arg-type]
        # vars(), not getattr: a subclass of a periodic class is not periodic itself
        setattr(job_class, ATTRIBUTE, (*vars(job_class).get(ATTRIBUTE, ()), entry))
        return target

    return declare


def _job_class(target: Any) -> type[Job]:
    if isinstance(target, JobFunction):
        return target.job_class
    if isinstance(target, type) and issubclass(target, Job):
        return target
    raise TypeError("@sidepunch.periodic decorates a Job subclass or an @sidepunch.job function "
                    "(put it above @sidepunch.job)")


def declared(packages: Sequence[str] | None = None) -> list[tuple[PeriodicEntry, type[Job]]]:
    """Every entry declared on a Job subclass imported so far, with its class, in a stable order; with
    `packages` (a daemon's --require), only those declared in modules of their top-level packages."""
    roots = None if packages is None else {p.split(".")[0] for p in packages}
    found: list[tuple[PeriodicEntry, type[Job]]] = []
    seen: set[type] = set()
    todo = list(Job.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if roots is None or cls.__module__.split(".")[0] in roots:
            found.extend((entry, cls) for entry in vars(cls).get(ATTRIBUTE, ()))
    return sorted(found, key=lambda pair: pair[0].name)
