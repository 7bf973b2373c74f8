"""Job payloads: encode and decode the JSON that travels through Redis.

Owns the byte format (Sidekiq's key order and Ruby's JSON spelling, SIDEKIQ_WIRE.md section 2) and MAX_DEPTH,
the one nesting limit: `decode` refuses deeper payloads, and validate.py, which checks what the client
writes, refuses deeper arguments. Imports nothing from the server side and never touches Redis.
"""
from __future__ import annotations

import itertools
import json
import re
import secrets
from decimal import Decimal
from typing import Any, Iterator, Mapping


class PayloadError(ValueError):
    """A job read from Redis cannot be understood (bad JSON, missing class or args)."""


def new_jid() -> str:
    return secrets.token_hex(12)


def _odd_float(x: float) -> bool:
    ax = abs(x)
    return ax >= 1e15 or (ax != 0.0 and ax < 1e-4)


def ruby_float(x: float) -> str:
    """Spell a float as Ruby's JSON does: shortest digits, exponent form from 1e15 with a `.0` mantissa."""
    if not _odd_float(x):
        return repr(x)
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    adjusted = exponent + len(digits) - 1
    mantissa = f"{digits[0]}.{''.join(map(str, digits[1:])) or '0'}"
    return f"{'-' if sign else ''}{mantissa}e{'+' if adjusted >= 0 else '-'}{abs(adjusted):02d}"


def _encode_slow(value: Any) -> str:
    kind = type(value)
    if kind is float:
        return ruby_float(value)
    if kind is list:
        return "[" + ",".join(_encode_slow(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(f"{_encode_slow(k)}:{_encode_slow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def _has_odd_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return _odd_float(value)
    if kind is list:
        return any(_has_odd_float(v) for v in value)
    if kind is dict:
        return any(_has_odd_float(v) for v in value.values())
    return False


#: Built once: json.dumps with these options would build a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(job: Mapping[str, Any], odd_floats: bool | None = None) -> bytes:
    """JSON bytes identical to Ruby's JSON.generate for the same data (SIDEKIQ_WIRE.md section 2.1)."""
    if odd_floats is None:
        odd_floats = _has_odd_float(job)
    if odd_floats:
        return _encode_slow(job).encode("utf-8")
    return _ENCODER.encode(job).encode("utf-8")


def encode_value(value: Any, odd_floats: bool) -> str:
    """One JSON value as text, spelled as `encode` spells it inside a job."""
    if odd_floats:
        return _encode_slow(value)
    return _ENCODER.encode(value)


#: Deepest JSON nesting a payload may have; the job object itself is level 1, so its args list is level 2.
#: It is Ruby JSON's default max_nesting, so every payload Sidepunch accepts can be read by Sidekiq too.
MAX_DEPTH = 100


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value - value:  # inf - inf and nan - nan are nan (true), x - x is 0.0 for any finite x: no call per float
        raise ValueError(f"{text[:40]} overflows a float")
    return value


#: Refuses what Python's json accepts but cannot write back strictly (NaN, Infinity, 1e999), so a decoded job
#: can always be encoded again. parse_float runs only for float tokens; plain jobs pay nothing for it.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def parse(raw: bytes | str, what: str = "JSON") -> Any:
    """Strict JSON from Redis: PayloadError unless `encode` could write the value back.

    Text that is not UTF-8, NaN or infinite numbers, lone surrogate escapes and nesting deeper than
    MAX_DEPTH are refused here, not discovered at a later write. The same bytes get the same answer
    wherever they are parsed, whatever the stack depth of the caller.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = _strict_loads(text)
    except RecursionError:
        raise PayloadError(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{what} is not valid JSON ({exc})") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise PayloadError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if "\\u" in text and _SURROGATE.search(text) and not _encodable(value):
        raise PayloadError(f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which UTF-8 cannot carry")
    return value


def _strict_loads(text: str) -> Any:
    """`_DECODER.decode(text)`, without its wrapper's two whitespace scans for the usual text that has no
    whitespace around its value; anything else (and every error) goes through `decode` itself."""
    try:
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except Exception:  # the same text again through decode, for its own exception and message
        pass
    return _DECODER.decode(text)


def decode(raw: bytes | str) -> dict[str, Any]:
    """Parse a job read from Redis (strictly, see `parse`); PayloadError says what is wrong with it."""
    job = parse(raw, "job")
    if type(job) is not dict:
        raise PayloadError(f"job is a JSON {type(job).__name__}, not an object")
    if type(job.get("class")) is not str or not job["class"]:
        raise PayloadError("job has no 'class' string")
    return job


def _children(value: Any) -> Iterator[Any]:
    if type(value) is list:
        return iter(value)
    if type(value) is dict:
        return itertools.chain(value.keys(), value.values())
    return iter(())


def depth(value: Any) -> int:
    """Nesting depth of decoded JSON (a scalar is 0, [] is 1); iterative, so any depth is safe to measure."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if type(item) in (list, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in _children(item))
    return deepest


def _encodable(value: Any) -> bool:
    """False if some string (or key) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        else:
            stack.extend(_children(item))
    return True

