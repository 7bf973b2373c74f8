"""Output of the `sidepunch` command: aligned tables of escaped cells, or strict JSON.

Whatever is printed may come from Redis, so it is hostile: control characters, bidi overrides and lone
surrogates are escaped (job data must not drive the terminal, and stdout cannot encode a surrogate), and
JSON goes through api_records.jsonable (NaN and infinities become null, as in JavaScript).

Must not import: sidepunch.server (core, client and api only).
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Sequence

from ..api.records import jsonable, printable

#: C0 and C1 controls, and the invisible format characters that reorder or hide text (bidi overrides).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def escape(text: str) -> str:
    """Control and format characters as \\xNN or \\uNNNN, lone surrogates likewise: job data must not drive
    the terminal, and stdout cannot encode a surrogate."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", printable(text))


def _clean(value: Any, width: int = 60) -> str:
    """One table cell: escaped (see `escape`), long text cut."""
    text = value if isinstance(value, str) else _dumps(value)
    text = escape(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _dumps(data: Any, indent: int | None = None) -> str:
    """Strict JSON, whatever Redis held (see api_records.jsonable)."""
    return json.dumps(jsonable(data), ensure_ascii=False, indent=indent, allow_nan=False)


def when(t: float | None) -> str:
    """A UTC time, or the number itself when it is no time a calendar can show (1e300, -1e20)."""
    if t is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"
    except (OverflowError, ValueError, OSError):
        return f"{t:.6g}" if isinstance(t, float) else _dumps(t)[:20]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_clean(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [[*headers], *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


class Output:
    """Prints a command's result: `data` as JSON with --json, else the text `text()` builds, escaped."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        print(_dumps(data, indent=2) if self.json else "\n".join(escape(line) for line in text().split("\n")))
