"""Turning the class name on the wire into a Job class.

Names are dotted paths (`myapp.jobs.EmailJob`) or aliases that a Job declares with `wire_name` (for jobs a
Ruby app pushes as `HardWorker`). Only modules inside the packages the daemon was told to load (-r), or
already imported, are imported: a name read from Redis must not choose arbitrary code to import.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import importlib
import sys
from typing import Iterator, Sequence

from ..client.job import Job, job_class_of


class UnknownJobClass(Exception):
    """The job names a class that does not exist or is not a Job."""


def _all_job_classes(base: type[Job] = Job) -> Iterator[type[Job]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _all_job_classes(sub)


class JobResolver:
    def __init__(self, packages: Sequence[str]) -> None:
        self._roots = {p.split(".")[0] for p in packages}
        self._cache: dict[str, type[Job]] = {}

    def resolve(self, name: str) -> type[Job]:
        found = self._cache.get(name)
        if found is None:
            found = self._find(name)
            self._cache[name] = found
        return found

    def _find(self, name: str) -> type[Job]:
        for cls in _all_job_classes():
            if cls.wire_name == name:
                return cls
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            module = sys.modules.get(module_name)
            if module is None and parts[0] in self._roots:
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError:
                    continue
            if module is None:
                continue
            obj = module
            for attr in parts[cut:]:
                obj = getattr(obj, attr, None)
            cls = job_class_of(obj)
            if cls is not None:
                return cls
            if obj is not None:
                raise UnknownJobClass(f"{name} is a {type(obj).__name__}, not a sidepunch Job")
        where = ", ".join(sorted(self._roots)) or "nothing (no -r given)"
        raise UnknownJobClass(f"unknown job class {name!r}: no Job with that dotted path or wire_name "
                              f"(the daemon loads {where})")
