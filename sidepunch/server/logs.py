"""Logging setup for the daemon: text or JSON lines, to stderr or a file; no timestamps under journald.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import faulthandler
import json
import logging
import sys
from typing import Any, Mapping


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 6), "level": record.levelname, "pid": record.process,
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """Under journald: no timestamp (the journal adds one) and a <priority> prefix so that
    `journalctl -p warning` finds warnings and errors."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(process)d %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        # journald takes each line as its own entry; repeat the priority so a stack dump keeps its level.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def enable_faulthandler() -> None:
    """Dump every thread's stack to the log's stream on SIGABRT, SIGSEGV and the like."""
    stream = next((h.stream for h in logging.getLogger().handlers if hasattr(h, "stream")), sys.stderr)
    try:
        faulthandler.enable(file=stream, all_threads=True)
    except (ValueError, OSError, AttributeError):
        faulthandler.enable(all_threads=True)


def setup_logging(config: Any, environ: Mapping[str, str]) -> None:
    """Log to the configured file or stderr; ValueError (one line, naming --logfile) if the file cannot be
    opened for appending, so the daemon stops at start instead of with a traceback."""
    handler: logging.Handler = _file_handler(config.logfile) if config.logfile else logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif environ.get("JOURNAL_STREAM") and not config.logfile:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.verbose else getattr(logging, config.log_level.upper()))


def _file_handler(path: str) -> logging.Handler:
    try:
        # Job data may hold lone surrogates (JSON "\\ud800"); a strict encoder would turn each such line into
        # a "--- Logging error ---" traceback.
        return logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ValueError(f"--logfile: cannot write {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
