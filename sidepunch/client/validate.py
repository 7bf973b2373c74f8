"""What the client may write: jobs built from a caller's item (`normalize`) and checked (`check_job`).

Owns the rules a job must meet before anything reaches Redis: JSON-native data nested at most
payload.MAX_DEPTH levels (the limit `decode` enforces on the server), ints and strings JSON can write, epoch
times, and queue names a daemon can fetch (`check_queue_name`, which the daemon's `-q` parsing shares). Bad
input raises TypeError or ValueError whose message starts with where it was (`args[1]['k']`, `retry_queue`).
The common path is one iterative scan that builds no paths; `unfit` walks again only to explain a failure.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core only).
"""
from __future__ import annotations

import math
import numbers
import os
import sys
import time
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from ..core.keys import MAX_QUEUE_BYTES, queue_name_problem
from ..core.payload import MAX_DEPTH

#: Random bytes in a jid: 24 hex digits, as payload.new_jid and Sidekiq make them.
JID_BYTES = 12
#: Ints below this have at most 640 digits, the least sys.set_int_max_str_digits() allows, so json can always
#: write them; only bigger ones are counted exactly.
_SAFE_INT = 2 ** 2123
_NEG_SAFE_INT = -_SAFE_INT


class _Unfit(Exception):
    """The fast scan met a value it cannot pass; `unfit` then walks again to say what and where."""


def check_queue_name(name: Any, what: str = "queue") -> str:
    """Return `name` as a str if a daemon can fetch that queue and Sidekiq's tools can show it.

    Raises TypeError (not a str) or ValueError (empty, a comma, leading or trailing whitespace, control
    characters or line separators, lone surrogates, longer than MAX_QUEUE_BYTES), naming the queue.
    """
    if type(name) is not str:
        if not issubclass(type(name), str):
            raise TypeError(f"{what} must be a str, got {describe(name)}")
        name = str.__str__(name)  # a StrEnum member names the queue by its value
    if (0 < len(name) <= MAX_QUEUE_BYTES // 4 and name.isprintable() and "," not in name
            and not name[0].isspace() and not name[-1].isspace()):
        return name  # the common case, decided without looking at single characters
    problem = queue_name_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {describe(name)} {problem}")
    return name


def check_json_native(value: Any, where: str = "args", level: int = 2) -> bool:
    """Raise TypeError or ValueError naming the first part of `value` a job cannot carry.

    `value` sits at nesting `level` of its job (the job is 1, its args list 2): JSON-native types only
    (str, int, float, bool, None, list, dict with str keys), finite floats, ints that json can write, at most
    MAX_DEPTH levels. Returns True when some float needs Ruby's spelling (see `ruby_float`), so `encode` takes
    its slow path only then. Lone surrogates in strings are left to the UTF-8 encoding (see `unfit`).
    """
    try:
        return _scan((value,), level)
    except _Unfit:
        raise unfit(value, where, level) from None


def check_args(args: list, row: int | None = None) -> bool:
    """check_json_native for a job's args list (row `row` of a bulk push), without building a path first."""
    try:
        return _scan(args, 3)
    except _Unfit:
        raise unfit(args, "args" if row is None else f"args[{row}]") from None


def _scan(items: Iterable[Any], level: int) -> bool:
    """The fast check behind check_json_native: raises a bare _Unfit; iterative, so any nesting is safe."""
    odd = False
    stack = [(items, level)]
    while stack:
        items, level = stack.pop()
        for item in items:
            kind = type(item)
            if kind is str:
                continue
            if kind is int:
                if _NEG_SAFE_INT < item < _SAFE_INT or _int_fits(item):
                    continue
                raise _Unfit
            if kind is float:
                if 1e-4 <= item < 1e15 or -1e15 < item <= -1e-4 or item == 0.0:
                    continue
                if item - item != 0.0:  # NaN or infinite
                    raise _Unfit
                odd = True
            elif kind is list or kind is dict:
                if level > MAX_DEPTH:
                    raise _Unfit
                if kind is dict:
                    for key in item:
                        if type(key) is not str:
                            raise _Unfit
                    item = item.values()
                stack.append((item, level + 1))
            elif item is not None and kind is not bool:
                raise _Unfit
    return odd


def _int_fits(n: int) -> bool:
    """Can json write `n`? It goes through str(), limited to sys.get_int_max_str_digits() digits."""
    limit = sys.get_int_max_str_digits()
    return limit == 0 or n.bit_length() <= 3 * limit or -10 ** limit < n < 10 ** limit


def unfit(value: Any, where: str = "args", level: int = 2) -> Exception:
    """The exception naming the first part of `value` that a job cannot carry, lone surrogates included.

    The slow twin of check_json_native, run only once something failed, so the common path builds no paths.
    `where=""` means `value` is the whole job and paths start at its field names.
    """
    stack: list[tuple] = [(None, where, value, level)]  # (parent node, key or index, value, level)
    while stack:
        node = stack.pop()
        problem = _problem(node)
        if problem is not None:
            return problem
        _, _, item, level = node
        if type(item) is list:
            stack.extend((node, i, item[i], level + 1) for i in range(len(item) - 1, -1, -1))
        elif type(item) is dict:
            stack.extend((node, key, child, level + 1) for key, child in reversed(list(item.items())))
    return ValueError(f"{where or 'the job'} cannot be written as JSON")


def _problem(node: tuple) -> Exception | None:
    item, level = node[2], node[3]
    kind = type(item)
    if kind is str:
        bad = _lone_surrogate(item)
        return None if bad is None else ValueError(f"{_path(node)} holds {bad}")
    if kind is int:
        if _int_fits(item):
            return None
        return ValueError(f"{_path(node)} is an int of about {int(item.bit_length() * 0.30103) + 1} digits; "
                          f"json writes at most {sys.get_int_max_str_digits()} (sys.get_int_max_str_digits()), "
                          "so pass it as a string")
    if kind is float:
        return None if math.isfinite(item) else TypeError(
            f"{_path(node)} is {item!r}, which JSON cannot carry; pass a finite number")
    if kind is list or kind is dict:
        if level > MAX_DEPTH:
            return _too_deep(node)
        for key in item if kind is dict else ():
            if type(key) is not str:
                shown = f" {describe(key)}" if key is None or issubclass(type(key), (int, float, str)) else ""
                return TypeError(f"{_path(node)} has a key{shown} of type {type(key).__name__}; JSON object keys "
                                 "must be str")
            bad = _lone_surrogate(key)
            if bad is not None:
                return ValueError(f"{_path(node)} has a key {describe(key)} that holds {bad}")
        return None
    if item is None or kind is bool:
        return None
    hint = " (it would arrive as a list; pass a list)" if kind is tuple else ""
    return TypeError(f"{_path(node)} is a {kind.__module__}.{kind.__qualname__}, which is not JSON-native{hint}; "
                     "job arguments and options must be str, int, float, bool, None, list or dict with str keys")


def _lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"a lone surrogate {text[exc.start]!r} at index {exc.start}, which UTF-8 cannot carry (a str "
                "decoded with errors='surrogateescape'?)")
    return None


def _too_deep(node: tuple) -> Exception:
    chain = []
    while node is not None:
        chain.append(node)
        node = node[0]
    chain.reverse()
    first_seen: dict[int, tuple] = {}
    for link in chain:
        earlier = first_seen.setdefault(id(link[2]), link)
        if earlier is not link:
            return ValueError(f"{_path(earlier)} contains itself (at {_path(link)}); JSON cannot carry a "
                              "recursive structure")
    return ValueError(f"{_path(chain[-1])} is nested {chain[-1][3]} levels deep; a job may nest lists and dicts "
                      f"at most {MAX_DEPTH} levels (the job is level 1, its args list level 2)")


def _path(node: tuple) -> str:
    """`args[0]['k']`, or `custom[1]` for a job's field; long paths keep their ends around a count."""
    steps = []
    while node[0] is not None:
        steps.append(node[1])
        node = node[0]
    text, pieces = node[1], []
    for step in reversed(steps):
        if not text and not pieces and type(step) is str and step.isidentifier():
            text = step
        else:
            pieces.append(f"[{step}]" if type(step) is int else f"[{describe(step)}]")
    if len(pieces) > 10:
        pieces[6:-2] = [f"…({len(pieces) - 8} more)…"]
    return (text + "".join(pieces)) or "the job"


def describe(value: Any) -> str:
    """A short rendering of a value for an error message that runs none of the value's own code."""
    kind = type(value)  # not isinstance, which may call a __class__ property
    if issubclass(kind, str):
        text = str.__str__(value)
        return str.__repr__(text[:60]) + ("…" if len(text) > 60 else "")
    if value is None or kind is bool:
        return repr(value)
    if issubclass(kind, float):
        return float.__repr__(value)
    if issubclass(kind, int):
        bits = int.bit_length(value)
        return int.__repr__(value) if bits <= 64 else f"an int of {bits} bits"
    return f"a {kind.__module__}.{kind.__qualname__}"


def check_at(value: Any, where: str = "'at'") -> float:
    """Epoch seconds as a float, from any real number; TypeError or ValueError naming `where` otherwise."""
    if type(value) is float and value - value == 0.0:
        return value
    if type(value) is bool or not issubclass(type(value), (numbers.Real, Decimal)):
        raise TypeError(f"{where} must be a number of epoch seconds, got {describe(value)}")
    try:
        seconds = float(value)
    except (ArithmeticError, ValueError, TypeError):  # too big for a float, a signaling NaN
        raise ValueError(f"{where} is {describe(value)}, which is not a finite float number of epoch seconds"
                         ) from None
    if not math.isfinite(seconds):
        raise TypeError(f"{where} must be a finite number of epoch seconds, got {describe(value)}")
    return seconds


def check_job(job: Any) -> bool:
    """Validate a job as the client writes it; True if some float needs Ruby's spelling.

    TypeError or ValueError name the field or argument at fault. Fixes up in place what it may: a StrEnum
    queue becomes its str, `at` a float.
    """
    if type(job) is not dict:
        raise TypeError(f"a job must be a dict, got {describe(job)}")
    if type(job.get("args")) is not list:
        raise TypeError(f"job args must be a list, got {describe(job.get('args'))}")
    if type(job.get("class")) is not str or not job["class"]:
        raise TypeError(f"'class' must be a non-empty str, got {describe(job.get('class'))}")
    queue = job.get("queue")
    name = check_queue_name(queue)
    if name is not queue:
        job["queue"] = name
    if type(job.get("jid")) is not str or not job["jid"]:
        raise TypeError(f"'jid' must be a non-empty str, got {describe(job.get('jid'))}")
    if "at" in job:
        job["at"] = check_at(job["at"])
    tags = job.get("tags")
    if tags is not None and tags is not False and type(tags) is not list:
        raise TypeError(f"'tags' must be a list of strings, got {describe(tags)}")
    retry_queue = job.get("retry_queue")
    if retry_queue is not None and retry_queue is not False:
        job["retry_queue"] = check_queue_name(retry_queue, "retry_queue")
    try:
        return _scan((job,), 1)
    except _Unfit:
        raise unfit(job, "", 1) from None


def normalize(item: Mapping[str, Any], defaults: Mapping[str, Any], class_name: str, now: float | None = None,
              random_bytes: Callable[[int], bytes] = os.urandom) -> tuple[dict[str, Any], bool]:
    """Merge a caller's item over the job's defaults in Sidekiq's key order and validate it (`check_job`).

    Returns the payload (still holding `at` if given) and whether it needs Ruby float spelling. As in
    Sidekiq, a missing, null or false `jid` or `created_at` is filled in: `created_at` with `now`, the jid with
    JID_BYTES of `random_bytes` in hex (payload.new_jid's form; a test may pass fixed bytes).
    """
    job = dict(defaults)
    job.update(item)
    job["class"] = class_name
    jid, created_at = job.get("jid"), job.get("created_at")
    if jid is None or jid is False:
        job["jid"] = random_bytes(JID_BYTES).hex()
    if created_at is None or created_at is False:
        job["created_at"] = time.time() if now is None else now
    return job, check_job(job)
