"""Schedule maths for periodic jobs (sidepunch/core/cron.py) with a fake clock: seconds-first 6 fields, aliases,
DST both ways in two zones, leap days, month ends, and bad expressions or zones."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sidepunch.core.cron import ALIASES, Schedule

UTC = ZoneInfo("UTC")


def at(zone: str, *parts: int, fold: int = 0) -> int:
    return int(datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold).timestamp())  # type: ignore[misc]


def walls(schedule: Schedule, start: float, count: int) -> list[str]:
    """The next `count` ticks as local ISO times with their offsets."""
    out, tick = [], start
    for _ in range(count):
        nxt = schedule.next_after(tick)
        assert nxt is not None and nxt > tick
        out.append(datetime.fromtimestamp(nxt, schedule.zone).isoformat())
        tick = nxt
    return out


def test_six_fields_read_seconds_first_every_two_seconds():
    s = Schedule("*/2 * * * * *")
    start = at("UTC", 2024, 5, 1, 12, 0, 0)
    assert list(s.ticks(start, start + 10)) == [start + 2, start + 4, start + 6, start + 8, start + 10]
    assert s.next_after(start + 1) == start + 2
    # "0 5 * * * *" is second 0 of minute 5 of every hour, not minute 0 of hour 5
    assert walls(Schedule("0 5 * * * *"), start, 2) == ["2024-05-01T12:05:00+00:00", "2024-05-01T13:05:00+00:00"]


def test_five_fields_are_minutes_first():
    start = at("UTC", 2024, 5, 1, 12, 0, 0)
    assert walls(Schedule("*/15 * * * *"), start, 3) == ["2024-05-01T12:15:00+00:00", "2024-05-01T12:30:00+00:00",
                                                         "2024-05-01T12:45:00+00:00"]


@pytest.mark.parametrize("alias, expected", [
    ("@yearly", ["2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]),
    ("@annually", ["2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]),
    ("@monthly", ["2024-06-01T00:00:00+00:00", "2024-07-01T00:00:00+00:00"]),
    ("@weekly", ["2024-05-05T00:00:00+00:00", "2024-05-12T00:00:00+00:00"]),  # Sundays
    ("@daily", ["2024-05-02T00:00:00+00:00", "2024-05-03T00:00:00+00:00"]),
    ("@midnight", ["2024-05-02T00:00:00+00:00", "2024-05-03T00:00:00+00:00"]),
    ("@hourly", ["2024-05-01T13:00:00+00:00", "2024-05-01T14:00:00+00:00"]),
])
def test_every_alias(alias, expected):
    assert walls(Schedule(alias), at("UTC", 2024, 5, 1, 12, 0, 1), 2) == expected
    assert walls(Schedule(alias.upper()), at("UTC", 2024, 5, 1, 12, 0, 1), 2) == expected


def test_aliases_are_all_tested():
    assert set(ALIASES) == {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@pytest.mark.parametrize("zone, day, wall", [("Europe/Paris", (2024, 3, 31), "2024-03-31T03:00:00+02:00"),
                                             ("America/New_York", (2024, 3, 10), "2024-03-10T03:00:00-04:00")])
def test_spring_forward_a_missing_tick_runs_once_at_the_end_of_the_gap(zone, day, wall):
    s = Schedule("30 2 * * *", zone)
    ticks = walls(s, at(zone, *day, 0, 0), 2)
    assert ticks[0] == wall
    assert ticks[1][11:19] == "02:30:00" and ticks[1][:10] > ticks[0][:10]  # the next day, as usual


@pytest.mark.parametrize("zone, day", [("Europe/Paris", (2024, 3, 31)), ("America/New_York", (2024, 3, 10))])
def test_spring_forward_many_ticks_in_the_gap_run_once(zone, day):
    s = Schedule("*/10 2 * * *", zone)  # six ticks in the missing hour
    start = at(zone, *day, 1, 0)
    ticks = list(s.ticks(start, start + 6 * 3600))
    local = [datetime.fromtimestamp(t, s.zone).strftime("%H:%M") for t in ticks]
    assert local == ["03:00"]
    every_second = Schedule("* * 2 * * *", zone)
    assert [datetime.fromtimestamp(t, s.zone).strftime("%H:%M:%S") for t in every_second.ticks(start, start + 7200)] \
        == ["03:00:00"]


@pytest.mark.parametrize("zone, day, offset", [("Europe/Paris", (2024, 10, 27), "+02:00"),
                                               ("America/New_York", (2024, 11, 3), "-04:00")])
def test_fall_back_a_repeated_tick_runs_once_at_its_first_occurrence(zone, day, offset):
    hour = 2 if zone == "Europe/Paris" else 1
    s = Schedule(f"30 {hour} * * *", zone)
    start = at(zone, *day, 0, 0)
    ticks = list(s.ticks(start, start + 86400))
    assert [datetime.fromtimestamp(t, s.zone).isoformat() for t in ticks] == \
        [f"{day[0]}-{day[1]:02d}-{day[2]:02d}T{hour:02d}:30:00{offset}"]


def test_fall_back_an_every_20_minutes_schedule_does_not_repeat_the_hour():
    s = Schedule("*/20 * * * *", "America/New_York")
    start = at("America/New_York", 2024, 11, 3, 0, 50)
    assert walls(s, start, 7) == ["2024-11-03T01:00:00-04:00", "2024-11-03T01:20:00-04:00",
                                  "2024-11-03T01:40:00-04:00", "2024-11-03T02:00:00-05:00",
                                  "2024-11-03T02:20:00-05:00", "2024-11-03T02:40:00-05:00",
                                  "2024-11-03T03:00:00-05:00"]
    # looking from inside the repeated hour (its second pass) finds no tick of the first pass again
    inside = at("America/New_York", 2024, 11, 3, 1, 10, fold=1)
    assert walls(s, inside, 1) == ["2024-11-03T02:00:00-05:00"]


def test_leap_days():
    s = Schedule("0 12 29 2 *")
    assert walls(s, at("UTC", 2023, 1, 1, 0, 0), 3) == ["2024-02-29T12:00:00+00:00", "2028-02-29T12:00:00+00:00",
                                                        "2032-02-29T12:00:00+00:00"]
    # 2100 is not a leap year
    assert walls(s, at("UTC", 2096, 3, 1, 0, 0), 1) == ["2104-02-29T12:00:00+00:00"]


def test_month_ends():
    s = Schedule("0 0 31 * *", "Europe/Paris")
    assert [w[:10] for w in walls(s, at("Europe/Paris", 2024, 1, 1, 0, 0), 4)] == \
        ["2024-01-31", "2024-03-31", "2024-05-31", "2024-07-31"]
    last = Schedule("0 0 L * *")  # cronsim's last day of the month
    assert [w[:10] for w in walls(last, at("UTC", 2024, 1, 1, 0, 0), 3)] == ["2024-01-31", "2024-02-29",
                                                                          "2024-03-31"]


@pytest.mark.parametrize("expression", ["", "* * *", "61 * * * *", "* * * * * * *", "@sometimes", "x" * 500,
                                        "*/0 * * * *", "0 0 30 2 *", 5, None])
def test_bad_expressions_raise_value_error_with_one_line(expression):
    with pytest.raises(ValueError) as info:
        Schedule(expression)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("zone", ["Mars/Base", "", "../../etc/passwd", "UTC\x00", "x" * 300, 3])
def test_unknown_zones_raise_value_error(zone):
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule("* * * * *", zone)  # type: ignore[arg-type]


def test_the_end_of_time_is_none():
    assert Schedule("0 0 1 1 *").next_after(datetime(9999, 6, 1, tzinfo=UTC).timestamp()) is None
    assert Schedule("0 0 1 1 *").next_after(1e30) is None
