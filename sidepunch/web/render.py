"""How the dashboard shows things: the Jinja2 environment (autoescaping on), its filters, and names in URLs.

Owns turning hostile data into safe text. Every `{{ }}` passes through `_finalize`, so a string holding lone
surrogates (a name or key read from Redis that was not UTF-8, see api.records.name_of) shows its bad bytes as
\\xNN instead of failing to encode; Jinja then escapes it. Names travel in URLs by `encode_name`, which keeps
their exact bytes: plain UTF-8 as it is, anything else (or a name starting with `~`) as `~x` + hex.
Imports api only (never server).
"""
from __future__ import annotations

import binascii
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ..api.records import jsonable, name_key, name_of, printable

TEMPLATES = Path(__file__).resolve().parent / "templates"


def encode_name(name: str) -> str:
    """A name (possibly holding surrogate escapes) as URL-safe text that `decode_name` gives back exactly."""
    raw = name_key(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith("~") or text == "":
        return "~x" + raw.hex()
    return text


def decode_name(text: str) -> str:
    if text.startswith("~x"):
        try:
            return name_of(binascii.unhexlify(text[2:]))
        except (binascii.Error, ValueError):
            return text
    return text


def _finalize(value: Any) -> Any:
    if isinstance(value, Markup) or not isinstance(value, str):
        return "" if value is None else value
    return printable(value)


def pretty(value: Any) -> str:
    """Any JSON-ish value as indented strict JSON text (NaN and surrogates made visible, see jsonable)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False, allow_nan=False)


def compact(value: Any, limit: int = 300) -> str:
    text = json.dumps(jsonable(value), ensure_ascii=False, allow_nan=False)
    return text if len(text) <= limit else text[:limit] + "…"


def when(epoch: Any) -> str:
    """An epoch as UTC time; '-' for none or out of range."""
    if not isinstance(epoch, (int, float)) or not math.isfinite(epoch) or epoch <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "-"


def ago(epoch: Any, now: float | None = None) -> str:
    """'3m ago' / 'in 2h' for an epoch; '-' for none."""
    if not isinstance(epoch, (int, float)) or not math.isfinite(epoch) or epoch <= 0:
        return "-"
    delta = (time.time() if now is None else now) - epoch
    span = abs(delta)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if span >= size or unit == "s":
            text = f"{int(span // size)}{unit}"
            break
    return f"{text} ago" if delta >= 0 else f"in {text}"


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def seconds(ms: Any) -> str:
    """A total time given in ms, in seconds ('12.3 s'); '-' for none."""
    return f"{ms / 1000:,.1f} s" if isinstance(ms, (int, float)) and math.isfinite(ms) else "-"


def millis(ms: Any) -> str:
    """An average time in ms ('4.21 ms', '1,530 ms'); '-' for none (no runs)."""
    if not isinstance(ms, (int, float)) or not math.isfinite(ms):
        return "-"
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.2f} ms"


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      finalize=_finalize, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pretty=pretty, compact=compact, when=when, ago=ago, number=number, name=encode_name,
                       seconds=seconds, millis=millis)
    return env
