"""Cron schedule maths for periodic jobs: parse an expression once, then say which ticks fall in a span of time.

Expressions are parsed by `cronsim` (never by hand): the standard 5 fields, a 6-field form whose FIRST field is
seconds (as sidekiq-cron and Quartz read it: `*/2 * * * * *` is every two seconds), and the aliases in ALIASES.
Ticks are wall-clock times in the entry's zone (zoneinfo), returned as epoch seconds (ints).

The DST rule: a tick whose wall time does not exist (a spring-forward gap, 02:30 in Paris on the last Sunday of
March) runs once, at the first valid instant after the gap (03:00 local); several ticks in one gap run once,
there. A tick whose wall time happens twice (fall back) runs once, at its first occurrence.

Imports nothing of sidepunch's.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
#: Longest expression accepted (the text is hostile input: it comes from a config file or Redis).
MAX_EXPRESSION = 200
#: Candidate wall times looked at for one next tick: ends the search for a tick that never comes.
MAX_STEPS = 100_000


def zone(name: str) -> ZoneInfo:
    """The zone called `name`; ValueError names it if zoneinfo does not know it."""
    if type(name) is not str or not name or len(name) > 100 or "\x00" in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


class Schedule:
    """One cron expression in one zone. Raises ValueError (one line) for a bad expression or zone."""

    def __init__(self, expression: str, tz: str = "UTC") -> None:
        if type(expression) is not str or len(expression) > MAX_EXPRESSION:
            raise ValueError(f"cron expression must be a string of at most {MAX_EXPRESSION} characters")
        self.expression = expression
        self.tz_name = tz
        self.zone = zone(tz)
        text = " ".join(expression.split())
        self._fields = ALIASES.get(text.lower(), text)
        if len(self._fields.split()) not in (5, 6):
            raise ValueError(f"cron expression {expression!r} must have 5 fields, or 6 with seconds first, "
                             f"or be one of {', '.join(ALIASES)}")
        try:
            next(CronSim(self._fields, datetime(2000, 1, 1)))
        except (CronSimError, StopIteration, ValueError) as exc:
            raise ValueError(f"bad cron expression {expression!r}: {exc}") from None

    def next_after(self, epoch: float) -> int | None:
        """The first tick strictly after `epoch` (None if the expression never fires again, e.g. 30 Feb)."""
        try:
            start = datetime.fromtimestamp(int(epoch), self.zone).replace(tzinfo=None)
            walls = CronSim(self._fields, start)
            for _ in range(MAX_STEPS):
                tick = self._instant(next(walls))
                if tick > epoch:
                    return tick
        except (StopIteration, CronSimError, OverflowError, ValueError, OSError):  # past year 9999, say
            pass
        return None

    def ticks(self, after: float, until: float) -> Iterator[int]:
        """Every tick in (after, until], oldest first."""
        tick = self.next_after(after)
        while tick is not None and tick <= until:
            yield tick
            tick = self.next_after(tick)

    def _instant(self, wall: datetime) -> int:
        """The epoch of a wall time in this zone, by the DST rule in the module docstring."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        epoch = int(first.timestamp())
        if datetime.fromtimestamp(epoch, self.zone).replace(tzinfo=None) == wall:
            return epoch  # it exists; fold=0 is its first occurrence when it happens twice
        # In a gap: fold=0 reads it with the offset before the change, fold=1 with the one after; the change
        # happened between the two instants. Find the first instant whose offset is the new one.
        low = int(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        high = epoch
        low, high = min(low, high), max(low, high)
        after = datetime.fromtimestamp(high, self.zone).utcoffset()
        while high - low > 1:
            mid = (low + high) // 2
            if datetime.fromtimestamp(mid, self.zone).utcoffset() == after:
                high = mid
            else:
                low = mid
        return high

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, tz={self.tz_name!r})"
