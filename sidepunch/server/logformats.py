"""The daemon's log formats (text, JSON, journald), and for each the text of a per-job line made straight from
the tuple a processor thread queued (`job_texts`), byte for byte what formatting its LogRecord gives: the log
writer thread's fast path (logs.py), which skips building a record for each of the two lines a job logs at INFO.

Must not import: sidepunch.api or sidepunch.admin (core and client only); imports nothing of Sidepunch.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

#: What json.dumps(entry, ensure_ascii=False) builds on every call, built once.
_JSON_LINE = json.JSONEncoder(ensure_ascii=False)
#: The string escaper that encoder uses (ensure_ascii=False).
_json_text = json.encoder.encode_basestring


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, pid, logger, msg and, with a traceback, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 6), "level": record.levelname, "pid": record.process,
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_text or record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)
        return _JSON_LINE.encode(entry)

    def job_texts(self, pid: int, terminator: str) -> Callable[[float, str, int, str, tuple], str]:
        """For one batch of the writer: the text of a per-job line tuple (see `job_texts` below)."""
        return _each_line(self.job_text, pid, terminator)

    def job_text(self, created: float, pid: int, level: int, name: str, message: str) -> str:
        """What `format` makes of a record with these fields and no traceback: the object spelled as the
        encoder spells it (its string escaper, repr for numbers), without building an encoder per line as
        `JSONEncoder.encode` does."""
        ts, levelname = round(created, 6), logging.getLevelName(level)
        if ts - ts or type(levelname) is not str or type(pid) is not int:  # not finite, or odd: the encoder
            return _JSON_LINE.encode({"ts": ts, "level": levelname, "pid": pid, "logger": name, "msg": message})
        return f'{{"ts": {ts!r}, "level": {_json_text(levelname)}, "pid": {pid!r}, "logger": {_json_text(name)}, ' \
               f'"msg": {_json_text(message)}}}'


class TextFormatter(logging.Formatter):
    """The text format, `asctime pid level logger: message`. The date and time part is formatted once per
    second, not per line: at INFO a busy worker writes two lines per job, and strftime was a tenth of the cost
    of a line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        self._cached = (-1, "")  # (second, its text), replaced as one object so threads never mix two

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._stamp(record.created, int(record.msecs))

    def _stamp(self, created: float, msecs: int) -> str:
        second = int(created)
        cached = self._cached
        if cached[0] != second:
            cached = self._second(second)
        return f"{cached[1]},{msecs:03d}"

    def _second(self, second: int) -> tuple[int, str]:
        cached = self._cached = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        return cached

    def job_texts(self, pid: int, terminator: str) -> Callable[[float, str, int, str, tuple], str]:
        """For one batch of the writer (see `job_texts` below): the text `format` gives the record of a per-job line
        tuple, terminator included, in one call per line (the writer's largest cost per line was calls)."""
        names: dict[int, str] = {}

        def text(created: float, name: str, level: int, msg: str, args: tuple) -> str:
            message = str(msg)
            if args:  # as LogRecord.getMessage formats it
                message = message % args
            second = int(created)
            cached = self._cached
            if cached[0] != second:
                cached = self._second(second)
            levelname = names.get(level)
            if levelname is None:
                levelname = names[level] = logging.getLevelName(level)
            return f"{cached[1]},{int((created - second) * 1000):03d} {pid} {levelname} {name}: {message}{terminator}"
        return text


class JournalFormatter(logging.Formatter):
    """Under journald: no timestamp (the journal adds one) and a <priority> prefix so that
    `journalctl -p warning` finds warnings and errors."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(process)d %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return self._prefixed(record.levelno, super().format(record))

    def _prefixed(self, level: int, text: str) -> str:
        priority = self.PRIORITIES.get(level, 6)
        # journald takes each line as its own entry; repeat the priority so a stack dump keeps its level.
        return "\n".join(f"<{priority}>{line}" for line in text.split("\n"))

    def job_texts(self, pid: int, terminator: str) -> Callable[[float, str, int, str, tuple], str]:
        """For one batch of the writer: the text of a per-job line tuple (see `job_texts` below)."""
        return _each_line(self.job_text, pid, terminator)

    def job_text(self, created: float, pid: int, level: int, name: str, message: str) -> str:
        """What `format` makes of a record with these fields and no traceback."""
        return self._prefixed(level, f"{pid} {logging.getLevelName(level)} {name}: {message}")


#: The daemon's own formatters: each has `job_texts`, the text its `format` gives a per-job line's record.
JOB_TEXT_FORMATTERS = (TextFormatter, JsonFormatter, JournalFormatter)


def job_texts(target: logging.StreamHandler) -> Callable[[float, str, int, str, tuple], str] | None:
    """The text (terminator included) of a per-job line tuple, made without its LogRecord, when nothing but
    the daemon's own formatter would look at that record: the target is a plain stream or file handler with
    no filters and one of our formatters. None otherwise (the record is built and formatted as usual)."""
    formatter = target.formatter
    if type(formatter) not in JOB_TEXT_FORMATTERS or target.filters or not logging.logProcesses \
            or type(target) not in (logging.StreamHandler, logging.FileHandler):
        return None
    return formatter.job_texts(os.getpid(), target.terminator)  # type: ignore[union-attr, attr-defined]


def _each_line(job_text: Callable[..., str], pid: int,
               terminator: str) -> Callable[[float, str, int, str, tuple], str]:
    """A per-job line tuple's text through a formatter's `job_text(created, pid, level, name, message)`."""
    def text(created: float, name: str, level: int, msg: str, args: tuple) -> str:
        message = str(msg)
        if args:  # as LogRecord.getMessage formats it
            message = message % args
        return job_text(created, pid, level, name, message) + terminator
    return text
