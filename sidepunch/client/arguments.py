"""A push's positional `args` from a call's arguments, by the parameters of the job's `perform`.

Owns binding keyword arguments to positions (the wire carries positional `args` only, as in Sidekiq) and the
arity check of a push, both at enqueue so a bad call fails with a TypeError naming the job before anything is
written. The parameter shape is read once per Job class and kept on the class, so a plain positional call costs
a dict look-up and two comparisons. perform_bulk's rows are only checked to be lists (no binding, no count).
Imports only client.validate; never imports server modules.
"""
from __future__ import annotations

import inspect
import math
from types import FunctionType, MethodType
from typing import Any, Iterable, Mapping

from .validate import describe

#: The class attribute holding (perform, fewest positional args, most positional args, signature or None).
_SHAPE = "_sidepunch_args_shape"
#: Set on the `perform` that `@job` makes: the user's function, whose parameters a call binds.
ARGS_OF = "__sidepunch_args_of__"
#: Stands for the instance when reading perform's parameters through a bound method (self is never called).
_NO_INSTANCE = object()

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def positional_args(job_class: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
    """`args` as the wire's list, with `kwargs` bound to their positions; TypeError naming the job if perform
    would not take them. Without keywords only the count is checked, against the cached shape."""
    shape = job_class.__dict__.get(_SHAPE)
    if shape is None or shape[0] != job_class.perform:  # first push, or perform was replaced since
        shape = _shape_of(job_class)
    if not kwargs and shape[1] <= len(args) <= shape[2]:
        return list(args)
    return _bind(job_class, shape[3], args, kwargs)


def _shape_of(job_class: Any) -> tuple[Any, float, float, inspect.Signature | None]:
    """Read perform's parameters once and keep them on the class. An unreadable signature accepts any count
    (and refuses keywords, which cannot be placed without it)."""
    signature = _signature(job_class)
    fewest, most = 0.0, math.inf
    if signature is not None:
        params = signature.parameters.values()
        positional = [p for p in params if p.kind in _POSITIONAL]
        fewest = sum(1 for p in positional if p.default is p.empty)
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            most = math.inf
        else:
            most = len(positional)
        if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
            fewest = math.inf  # never satisfiable from the wire: every push goes to _bind, which says why
    shape = (job_class.perform, fewest, most, signature)
    setattr(job_class, _SHAPE, shape)
    return shape


def _signature(job_class: Any) -> inspect.Signature | None:
    """perform's parameters without self (or the decorated function's, for `@job`), None if unreadable."""
    raw = inspect.getattr_static(job_class, "perform", None)
    source = getattr(raw, ARGS_OF, None)
    try:
        if source is not None:
            return inspect.signature(source)
        if isinstance(raw, FunctionType):
            return inspect.signature(MethodType(raw, _NO_INSTANCE))  # drops self, follows functools.wraps
        return inspect.signature(job_class.perform)  # staticmethod, classmethod, a callable object...
    except (TypeError, ValueError):
        return None


def _bind(job_class: Any, signature: inspect.Signature | None, args: tuple[Any, ...],
          kwargs: Mapping[str, Any]) -> list[Any]:
    name = job_class.job_name()
    if signature is None:
        raise TypeError(f"cannot enqueue {name} with keyword arguments: its perform's parameters cannot be read "
                        "(pass them by position)")
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"cannot enqueue {name}: {exc} ({_shown(signature)})") from None
    return _in_order(name, signature, bound.arguments)


def _in_order(name: str, signature: inspect.Signature, given: Mapping[str, Any]) -> list[Any]:
    """The bound arguments by position. A parameter skipped before a given one gets its default (positions
    cannot have holes); defaults after the last given one are left out, as in a positional call, so perform's
    own defaults apply when the job runs. Keyword-only and **kwargs parameters cannot travel: TypeError."""
    args: list[Any] = []
    skipped: list[Any] = []
    for param in signature.parameters.values():
        if param.kind in _POSITIONAL:
            if param.name in given:
                args += skipped
                skipped.clear()
                args.append(given[param.name])
            else:
                skipped.append(param.default)  # bind() has refused a missing parameter without a default
        elif param.kind is param.VAR_POSITIONAL:
            args += given.get(param.name, ())  # given only by position, so nothing was skipped before it
        elif param.name in given:  # keyword-only, or **kwargs (bound only when not empty)
            which = sorted(given[param.name]) if param.kind is param.VAR_KEYWORD else [param.name]
            raise TypeError(f"cannot enqueue {name}: the wire carries positional args only, so argument(s) "
                            f"{', '.join(map(repr, which))}, keyword-only or **kwargs in {_shown(signature)}, "
                            "cannot be sent")
    return args


def _shown(signature: inspect.Signature) -> str:
    """perform's parameters by name, for a message: defaults as `=...`, since a default's repr may be huge or
    may raise."""
    names = []
    for p in signature.parameters.values():
        star = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        names.append(star + p.name + ("=..." if p.default is not p.empty else ""))
    return f"perform({', '.join(names)})"


def bulk_rows(args_list: Any) -> list[list[Any]]:
    """perform_bulk's rows as lists (tuples are taken too); TypeError naming the first that is neither."""
    if isinstance(args_list, (str, bytes, Mapping)) or not isinstance(args_list, Iterable):
        raise TypeError(f"perform_bulk needs a list of argument lists, got {describe(args_list)}")
    rows = []
    for i, args in enumerate(args_list):
        if type(args) is not list and type(args) is not tuple:
            raise TypeError(f"perform_bulk needs a list of argument lists; args_list[{i}] is {describe(args)}")
        rows.append(list(args))
    return rows
