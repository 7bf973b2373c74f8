"""Logging setup for the daemon: text or JSON lines, to stderr or a file; no timestamps under journald."""
from __future__ import annotations

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


def setup_logging(config: Any, environ: Mapping[str, str]) -> None:
    handler: logging.Handler = (logging.FileHandler(config.logfile) if config.logfile
                                else logging.StreamHandler(sys.stderr))
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif environ.get("JOURNAL_STREAM") and not config.logfile:
        handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.verbose else getattr(logging, config.log_level.upper()))
