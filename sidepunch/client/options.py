"""A job class's options and per-call `set(...)` options: which go into the payload, and their checks.

Checked once when a class is made (a bad option fails at import, not at a push) and on every `set(...)`.
The options of the built-in features (unique jobs, expiring jobs, rate limits) are checked here for type and
range; what they mean is sidepunch/features/*'s business.
"""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Mapping

from .validate import check_queue_name, describe

#: Class options copied into the payload when set (not None), after "retry" and "queue", in this order.
PAYLOAD_OPTIONS = ("dead", "backtrace", "retry_queue", "tags", "timeout", "unique_for", "unique_until",
                   "expires_in")
UNIQUE_UNTIL = ("success", "start")
#: The longest unique_for / expires_in a job may declare (seconds, about 3 years).
MAX_SECONDS = 10 ** 8


def check_class_options(cls: Any) -> None:
    """A Job's options, checked once when its class is made, so a bad one fails at import, not at a push."""
    name = cls.__qualname__
    check_queue_name(cls.queue, f"{name}.queue")
    if cls.retry_queue is not None and cls.retry_queue is not False:
        check_queue_name(cls.retry_queue, f"{name}.retry_queue")
    if cls.tags is not None and not isinstance(cls.tags, (list, tuple)):
        raise TypeError(f"{name}.tags must be a list of strings, got {describe(cls.tags)}")
    if cls.wire_name is not None and (not isinstance(cls.wire_name, str) or not cls.wire_name):
        raise TypeError(f"{name}.wire_name must be a non-empty str, got {describe(cls.wire_name)}")
    keep = cls.keep_result
    if keep is not None and (type(keep) is not int or not 0 <= keep <= 10 ** 8):
        raise TypeError(f"{name}.keep_result must be a number of seconds (int, 0 to 10**8), got {describe(keep)}")
    check_feature_options({key: getattr(cls, key) for key in ("unique_for", "unique_until", "expires_in")}, name)
    if cls.limits is not None:
        from ..limits import check_limits  # only for classes that list limits: others never load it
        check_limits(cls.limits, name)


def check_feature_options(options: Mapping[str, Any], where: str) -> None:
    """unique_for and expires_in: a number of seconds (0 < n <= MAX_SECONDS); unique_until: one of UNIQUE_UNTIL."""
    for key in ("unique_for", "expires_in"):
        value = options.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 < value <= MAX_SECONDS):
            raise TypeError(f"{where}.{key} must be a number of seconds (0 < n <= {MAX_SECONDS}), "
                            f"got {describe(value)}")
    until = options.get("unique_until")
    if until is not None and until not in UNIQUE_UNTIL:
        raise ValueError(f"{where}.unique_until must be one of {', '.join(UNIQUE_UNTIL)}, got {describe(until)}")


def check_queues(options: Mapping[str, Any], where: str) -> None:
    """The options of a `set(...)` call: queue names, and the features' options."""
    if "queue" in options:
        check_queue_name(options["queue"], f"{where}(queue=...)")
    retry_queue = options.get("retry_queue")
    if retry_queue is not None and retry_queue is not False:
        check_queue_name(retry_queue, f"{where}(retry_queue=...)")
    check_feature_options(options, where)


def seconds(value: Any, what: str) -> float:
    """Seconds from a number or a timedelta; TypeError or ValueError naming `what` otherwise."""
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    try:
        if isinstance(value, bool):
            raise TypeError
        result = float(value)
    except ArithmeticError:
        raise ValueError(f"{what} is {describe(value)}, too large for a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, got {describe(value)}") from None
    if not math.isfinite(result):
        raise ValueError(f"{what} must be finite, got {describe(value)}")
    return result
