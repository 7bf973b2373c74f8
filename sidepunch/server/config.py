"""The daemon's settings: declared once in SETTINGS, resolved into one frozen Config.

Precedence is command line > environment > config file (sidepunch.toml or [tool.sidepunch] in
pyproject.toml) > default. The argparse parser and the README option table are generated from SETTINGS.
Nothing here reads the environment at import time: `build_config` takes the environment as an argument.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .. import __version__
from ..core.connection import hide_urls, resolve_url
from ..client.validate import check_queue_name


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where the value came from."""


#: Queue weights expand to a list of names (as Sidekiq does), so a weight is a small whole number.
MAX_WEIGHT = 1000
MAX_FILE_SIZE = 1_000_000
DAY = 86400


@dataclass(frozen=True)
class QueueSpec:
    name: str
    weight: int = 0


def _show(value: Any) -> str:
    """A value quoted for an error message: one line, at most about 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_int(text: Any) -> int:
    """A whole number written in plain ASCII digits (int() also takes "1_000" and other scripts' digits)."""
    if type(text) is int:
        return text
    stripped = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", stripped):
        raise ValueError(f"expected a whole number, got {_show(text)}")
    return int(stripped)


def _read_float(text: Any) -> float:
    if type(text) in (int, float):
        value = float(text)
    else:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {_show(text)}") from None
    if not math.isfinite(value):  # nan compares false with any bound, so it must be caught by name
        raise ValueError(f"must be a finite number, got {_show(text)}")
    return value


def parse_queue(text: str) -> QueueSpec:
    name, _, weight = text.strip().partition(",")
    name = check_queue_name(name.strip())  # the client's rule, so every queue fetched is one a client can fill
    if weight == "":
        return QueueSpec(name)
    if not re.fullmatch(r"[0-9]{1,30}", weight.strip()):
        raise ValueError(f"queue weight must be a whole number, got {_show(weight)} in {_show(text)}")
    value = int(weight)
    if value > MAX_WEIGHT:
        raise ValueError(f"queue weight must be at most {MAX_WEIGHT}, got {value} in {_show(text)}")
    return QueueSpec(name, value)


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {_show(text)}")


#: How each kind of setting reads a flag or environment string, and which TOML types a file may give.
_READERS: dict[str, Callable[[Any], Any]] = {"int": _read_int, "float": _read_float, "str": str,
                                             "bool": _bool, "queue": parse_queue}
_FILE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                            "bool": (bool,), "queue": (str,)}
_TYPE_NAMES = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
               "queue": "a string NAME or NAME,WEIGHT"}


@dataclass(frozen=True)
class Setting:
    """One daemon setting. `kind` says how a value is read ("int", "float", "str", "bool" or "queue");
    `limits` is the inclusive range every numeric value must fall in, wherever it came from."""

    name: str
    flags: tuple[str, ...]
    env: str | None
    kind: str
    default: Any
    help: str
    limits: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    many: bool = False      # repeatable flag; env and file give a list
    switch: bool = False    # a flag without a value

    @property
    def doc(self) -> str:
        """The help text with the allowed range, for --help and the README."""
        if self.limits is None:
            return self.help
        low, high = self.limits
        span = f" ({_duration(high)})" if self.kind == "float" and high >= 3600 else ""
        return f"{self.help}; allowed: {_number(low)} to {_number(high)}{span}"

    def read(self, raw: Any) -> Any:
        """One value (a flag or environment string, or a TOML value already type-checked) -> checked value."""
        value = _READERS[self.kind](raw)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, got {_show(value)}")
        if self.limits is not None:
            low, high = self.limits
            if value < low:
                raise ValueError(f"must be at least {_number(low)}, got {_show(raw)} "
                                 f"(allowed: {_number(low)} to {_number(high)})")
            if value > high:
                raise ValueError(f"must be at most {_number(high)}, got {_show(raw)} "
                                 f"(allowed: {_number(low)} to {_number(high)})")
        return value

    def check_file_type(self, raw: Any) -> list[Any]:
        """The TOML value as a list of items of the right type; ValueError names what was expected."""
        items = ([raw] if isinstance(raw, str) else raw) if self.many else [raw]
        expected = _FILE_TYPES[self.kind]
        wanted = _TYPE_NAMES[self.kind] + (" or a list of them" if self.many else "")
        if self.many and not isinstance(items, list):
            raise ValueError(f"expected {wanted}, got {_toml_type(raw)}")
        for item in items:
            # bool is an int subclass in Python, but `threads = true` is a mistake, not 1.
            if isinstance(item, bool) != (bool in expected) or not isinstance(item, expected):
                raise ValueError(f"expected {wanted}, got {_toml_type(item)} {_show(item)}")
        return items


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def _duration(seconds: float) -> str:
    for unit, size in (("year", 365 * DAY), ("day", DAY), ("hour", 3600)):
        if seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} s"


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
             dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _default_workers() -> int:
    return min(os.cpu_count() or 1, 1024)


SETTINGS: tuple[Setting, ...] = (
    Setting("workers", ("-w", "--workers"), "SIDEPUNCH_WORKERS", "int", _default_workers,
            "worker processes the master forks (default: number of CPUs)", (1, 1024)),
    Setting("threads", ("-c", "--threads"), "SIDEPUNCH_THREADS", "int", 10,
            "processor threads in each worker process", (1, 1000)),
    Setting("queues", ("-q", "--queue"), "SIDEPUNCH_QUEUES", "queue", ("default",),
            "queue to fetch from, repeat in priority order; NAME,WEIGHT for weighted random order "
            f"(weight 0 to {_number(MAX_WEIGHT)})", many=True),
    Setting("require", ("-r", "--require"), "SIDEPUNCH_REQUIRE", "str", (),
            "module that defines your jobs, imported by every worker; repeatable", many=True),
    Setting("middleware", ("--middleware",), "SIDEPUNCH_MIDDLEWARE", "str", (),
            "dotted path of a server middleware mw(job, payload, queue, call_next); repeatable, outermost "
            "first", many=True),
    Setting("death_handlers", ("--death-handler",), "SIDEPUNCH_DEATH_HANDLERS", "str", (),
            "dotted path of a function called with (payload, exception) when a job dies or is discarded; "
            "repeatable", many=True),
    Setting("timeout", ("-t", "--timeout"), "SIDEPUNCH_TIMEOUT", "float", 25.0,
            "seconds a stopping worker waits for running jobs before requeueing them", (0, DAY)),
    Setting("redis_url", ("--redis-url",), None, "str", None,
            "Redis URL (redis://, rediss://, unix://); else $REDIS_PROVIDER names a variable, else $REDIS_URL"),
    Setting("config", ("-C", "--config"), "SIDEPUNCH_CONFIG", "str", None,
            "TOML file with settings (top level or [tool.sidepunch]); default ./sidepunch.toml if present"),
    Setting("fetch", ("--fetch",), "SIDEPUNCH_FETCH", "str", "reliable",
            "reliable (at-least-once, default) or basic (plain BRPOP, Sidekiq's semantics)",
            choices=("reliable", "basic")),
    Setting("poll_interval", ("--poll-interval",), "SIDEPUNCH_POLL_INTERVAL", "float", 0.0,
            "average seconds between scheduled/retry polls (0: 5 s x number of processes)", (0, DAY)),
    Setting("max_retries", ("--max-retries",), "SIDEPUNCH_MAX_RETRIES", "int", 25,
            "retries for jobs whose retry option is true", (0, 1000)),
    Setting("dead_max_jobs", ("--dead-max-jobs",), "SIDEPUNCH_DEAD_MAX_JOBS", "int", 10000,
            "size limit of the dead set", (1, 10_000_000)),
    Setting("dead_timeout", ("--dead-timeout",), "SIDEPUNCH_DEAD_TIMEOUT", "float", 180 * 86400.0,
            "seconds a job stays in the dead set", (1, 3650 * DAY)),
    Setting("max_interruptions", ("--max-interruptions",), "SIDEPUNCH_MAX_INTERRUPTIONS", "int", 3,
            "times a job may be interrupted by its worker dying before it goes to the dead set", (0, 1000)),
    Setting("grace", ("--grace",), "SIDEPUNCH_GRACE", "float", 5.0,
            "seconds the master waits beyond --timeout before it SIGKILLs a worker", (0, 3600)),
    Setting("worker_timeout", ("--worker-timeout",), "SIDEPUNCH_WORKER_TIMEOUT", "float", 60.0,
            "seconds without a heartbeat before the master kills a worker (SIGABRT for a stack dump, "
            "then SIGKILL) and recovers its jobs", (2, DAY)),
    Setting("tag", ("-g", "--tag"), "SIDEPUNCH_TAG", "str", "", "tag shown in process listings"),
    Setting("max_memory", ("--max-memory",), "SIDEPUNCH_MAX_MEMORY", "int", 0,
            "MB of RSS after which a worker is replaced gracefully (0: no limit)", (0, 1_048_576)),
    Setting("max_jobs", ("--max-jobs",), "SIDEPUNCH_MAX_JOBS", "int", 0,
            "jobs after which a worker is replaced gracefully (0: no limit)", (0, 1_000_000_000_000)),
    Setting("job_timeout", ("--job-timeout",), "SIDEPUNCH_JOB_TIMEOUT", "float", 0.0,
            "default seconds a job may run before it fails with JobTimeout (0: no limit)", (0, 30 * DAY)),
    Setting("log_level", ("--log-level",), "SIDEPUNCH_LOG_LEVEL", "str", "info",
            "debug, info (a line per job start and finish), warning or error",
            choices=("debug", "info", "warning", "error")),
    Setting("log_format", ("--log-format",), "SIDEPUNCH_LOG_FORMAT", "str", "text", "text or json",
            choices=("text", "json")),
    Setting("logfile", ("--logfile",), "SIDEPUNCH_LOGFILE", "str", None, "write the log to this file"),
    Setting("pidfile", ("--pidfile",), "SIDEPUNCH_PIDFILE", "str", None, "write the master's pid to this file"),
    Setting("verbose", ("-v", "--verbose"), "SIDEPUNCH_VERBOSE", "bool", False,
            "debug logging (same as --log-level debug)", switch=True),
)

Config = dataclasses.make_dataclass(
    "Config", [(s.name, Any, field(default=None)) for s in SETTINGS], frozen=True,
    namespace={"__doc__": "Every daemon setting, resolved; built once by the CLI and passed down."})


def make_parser(prog: str = "sidepunchd") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description="Sidepunch job daemon: a master that supervises "
                            "worker processes which run jobs from Redis.", argument_default=argparse.SUPPRESS)
    for s in SETTINGS:
        if s.switch:
            parser.add_argument(*s.flags, dest=s.name, action="store_true", help=s.doc)
        else:
            parser.add_argument(*s.flags, dest=s.name, action="append" if s.many else "store",
                                metavar=s.name.upper(), help=s.doc)
    parser.add_argument("-V", "--version", action="version", version=f"sidepunch {__version__}")
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line and exit status 2, without the usage block, and without echoing a Redis
    password that was given in the wrong place."""

    _argv: Sequence[str] = ()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        message = hide_urls(message, self._argv)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_file(path: str | None, explicit: bool) -> dict[str, Any]:
    """The settings table of a TOML file ({} if the default file is absent); ConfigError if unusable."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_FILE_SIZE + 1)  # -C /dev/zero must not eat the memory
        if len(text) > MAX_FILE_SIZE:
            raise ValueError(f"it is larger than {MAX_FILE_SIZE:,} bytes")
        data = tomllib.loads(text.decode("utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    # ValueError: a NUL byte in the path, or bytes that are not UTF-8 (tomllib raises UnicodeDecodeError).
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {_one_line(exc)}") from None
    section = data
    if path.endswith("pyproject.toml"):
        tool = data.get("tool")
        section = tool.get("sidepunch") if isinstance(tool, dict) else None
        if section is None:
            raise ConfigError(f"config file {path} has no [tool.sidepunch] table")
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: tool.sidepunch must be a table, got {_toml_type(section)}")
    known = {s.name for s in SETTINGS}
    unknown = sorted(set(section) - known - {"tool"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(map(_show, unknown))}")
    return section


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def build_config(argv: Sequence[str], environ: Mapping[str, str], prog: str = "sidepunchd") -> Any:
    """Parse flags, environment and file into a Config; ConfigError names any bad value."""
    cli = vars(make_parser(prog).parse_args(argv))
    config_path = cli.get("config") or environ.get("SIDEPUNCH_CONFIG")
    from_file = load_file(config_path or "sidepunch.toml", explicit=bool(config_path))
    values: dict[str, Any] = {}
    for s in SETTINGS:
        values[s.name] = _resolve(s, cli, environ, from_file)
    # Sidekiq's REDIS_PROVIDER/REDIS_URL are the environment layer of redis_url, so a file's URL ranks below them.
    values["redis_url"] = resolve_url(cli.get("redis_url"), environ, fallback=values["redis_url"])
    _check_queues(values["queues"])
    return Config(**values)


def _resolve(s: Setting, cli: Mapping[str, Any], environ: Mapping[str, str], from_file: Mapping[str, Any]) -> Any:
    """The setting's value from the first layer that has one; ConfigError names the layer and the setting."""
    if s.name in cli:
        raw, origin = cli[s.name], s.flags[-1]
        items = raw if s.many else [raw]
    elif s.env and environ.get(s.env, "") != "":
        raw, origin = environ[s.env], f"${s.env}"
        items = raw.split() if s.many else [raw]
    elif s.name in from_file:
        raw, origin = from_file[s.name], f"config file setting {s.name}"
        items = None
    else:
        default = s.default() if callable(s.default) else s.default
        return tuple(s.read(v) for v in default) if s.many else default
    try:
        if items is None:
            items = s.check_file_type(raw)
        values = [s.read(v) for v in items]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {_one_line(exc)}") from None
    if s.many and s.kind == "queue" and not values:
        raise ConfigError(f"{origin}: names no queue; give at least one")
    return tuple(values) if s.many else values[0]


def _check_queues(queues: Sequence[QueueSpec]) -> None:
    seen: set[str] = set()
    for q in queues:
        if q.name in seen:
            raise ConfigError(f"queue {_show(q.name)} is named twice")
        seen.add(q.name)


def option_table() -> str:
    """The README's option table, generated from SETTINGS."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "CPUs" if callable(s.default) else (",".join(s.default) if s.many else s.default)
        rows.append(f"| `{', '.join(s.flags)}` | {f'`{s.env}`' if s.env else ''} | {default!s} | {s.doc} |")
    return "\n".join(rows)
