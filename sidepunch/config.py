"""The daemon's settings: declared once in SETTINGS, resolved into one frozen Config.

Precedence is command line > environment > config file (sidepunch.toml or [tool.sidepunch] in
pyproject.toml) > default. The argparse parser and the README option table are generated from SETTINGS.
Nothing here reads the environment at import time: `build_config` takes the environment as an argument.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import __version__
from .connection import resolve_url
from .validate import check_queue_name


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where the value came from."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    weight: int = 0


def parse_queue(text: str) -> QueueSpec:
    name, _, weight = text.strip().partition(",")
    name = check_queue_name(name.strip())  # the client's rule, so every queue fetched is one a client can fill
    if weight == "":
        return QueueSpec(name)
    if not weight.strip().isdigit():
        raise ValueError(f"queue weight must be a whole number, got {weight!r} in {text!r}")
    return QueueSpec(name, int(weight))


def _positive(minimum: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {value}")
    return check


def _choice(*options: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
    return check


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Setting:
    name: str
    flags: tuple[str, ...]
    env: str | None
    parse: Callable[[Any], Any]
    default: Any
    help: str
    validate: Callable[[Any], None] | None = None
    many: bool = False      # repeatable flag; env and file give a list
    switch: bool = False    # a flag without a value


SETTINGS: tuple[Setting, ...] = (
    Setting("workers", ("-w", "--workers"), "SIDEPUNCH_WORKERS", int, lambda: os.cpu_count() or 1,
            "worker processes the master forks (default: number of CPUs)", _positive(1)),
    Setting("threads", ("-c", "--threads"), "SIDEPUNCH_THREADS", int, 10,
            "processor threads in each worker process", _positive(1)),
    Setting("queues", ("-q", "--queue"), "SIDEPUNCH_QUEUES", parse_queue, ("default",),
            "queue to fetch from, repeat in priority order; NAME,WEIGHT for weighted random order", many=True),
    Setting("require", ("-r", "--require"), "SIDEPUNCH_REQUIRE", str, (),
            "module that defines your jobs, imported by every worker; repeatable", many=True),
    Setting("middleware", ("--middleware",), "SIDEPUNCH_MIDDLEWARE", str, (),
            "dotted path of a server middleware mw(job, payload, queue, call_next); repeatable, outermost "
            "first", many=True),
    Setting("death_handlers", ("--death-handler",), "SIDEPUNCH_DEATH_HANDLERS", str, (),
            "dotted path of a function called with (payload, exception) when a job dies or is discarded; "
            "repeatable", many=True),
    Setting("timeout", ("-t", "--timeout"), "SIDEPUNCH_TIMEOUT", float, 25.0,
            "seconds a stopping worker waits for running jobs before requeueing them", _positive(0)),
    Setting("redis_url", ("--redis-url",), None, str, None,
            "Redis URL (redis://, rediss://, unix://); else $REDIS_PROVIDER names a variable, else $REDIS_URL"),
    Setting("config", ("-C", "--config"), "SIDEPUNCH_CONFIG", str, None,
            "TOML file with settings (top level or [tool.sidepunch]); default ./sidepunch.toml if present"),
    Setting("fetch", ("--fetch",), "SIDEPUNCH_FETCH", str, "reliable",
            "reliable (at-least-once, default) or basic (plain BRPOP, Sidekiq's semantics)",
            _choice("reliable", "basic")),
    Setting("poll_interval", ("--poll-interval",), "SIDEPUNCH_POLL_INTERVAL", float, 0.0,
            "average seconds between scheduled/retry polls (0: 5 s x number of processes)", _positive(0)),
    Setting("max_retries", ("--max-retries",), "SIDEPUNCH_MAX_RETRIES", int, 25,
            "retries for jobs whose retry option is true", _positive(0)),
    Setting("dead_max_jobs", ("--dead-max-jobs",), "SIDEPUNCH_DEAD_MAX_JOBS", int, 10000,
            "size limit of the dead set", _positive(1)),
    Setting("dead_timeout", ("--dead-timeout",), "SIDEPUNCH_DEAD_TIMEOUT", float, 180 * 86400.0,
            "seconds a job stays in the dead set", _positive(1)),
    Setting("max_interruptions", ("--max-interruptions",), "SIDEPUNCH_MAX_INTERRUPTIONS", int, 3,
            "times a job may be interrupted by its worker dying before it goes to the dead set", _positive(0)),
    Setting("grace", ("--grace",), "SIDEPUNCH_GRACE", float, 5.0,
            "seconds the master waits beyond --timeout before it SIGKILLs a worker", _positive(0)),
    Setting("worker_timeout", ("--worker-timeout",), "SIDEPUNCH_WORKER_TIMEOUT", float, 60.0,
            "seconds without a heartbeat before the master kills a worker (SIGABRT for a stack dump, "
            "then SIGKILL) and recovers its jobs", _positive(2)),
    Setting("tag", ("-g", "--tag"), "SIDEPUNCH_TAG", str, "", "tag shown in process listings"),
    Setting("max_memory", ("--max-memory",), "SIDEPUNCH_MAX_MEMORY", int, 0,
            "MB of RSS after which a worker is replaced gracefully (0: no limit)", _positive(0)),
    Setting("max_jobs", ("--max-jobs",), "SIDEPUNCH_MAX_JOBS", int, 0,
            "jobs after which a worker is replaced gracefully (0: no limit)", _positive(0)),
    Setting("job_timeout", ("--job-timeout",), "SIDEPUNCH_JOB_TIMEOUT", float, 0.0,
            "default seconds a job may run before it fails with JobTimeout (0: no limit)", _positive(0)),
    Setting("log_level", ("--log-level",), "SIDEPUNCH_LOG_LEVEL", str, "info",
            "debug, info (a line per job start and finish), warning or error",
            _choice("debug", "info", "warning", "error")),
    Setting("log_format", ("--log-format",), "SIDEPUNCH_LOG_FORMAT", str, "text", "text or json",
            _choice("text", "json")),
    Setting("logfile", ("--logfile",), "SIDEPUNCH_LOGFILE", str, None, "write the log to this file"),
    Setting("pidfile", ("--pidfile",), "SIDEPUNCH_PIDFILE", str, None, "write the master's pid to this file"),
    Setting("verbose", ("-v", "--verbose"), "SIDEPUNCH_VERBOSE", _bool, False, "debug logging (same as --log-level debug)", switch=True),
)

Config = dataclasses.make_dataclass(
    "Config", [(s.name, Any, field(default=None)) for s in SETTINGS], frozen=True,
    namespace={"__doc__": "Every daemon setting, resolved; built once by the CLI and passed down."})


def make_parser(prog: str = "sidepunchd") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description="Sidepunch job daemon: a master that supervises "
                            "worker processes which run jobs from Redis.", argument_default=argparse.SUPPRESS)
    for s in SETTINGS:
        if s.switch:
            parser.add_argument(*s.flags, dest=s.name, action="store_true", help=s.help)
        else:
            parser.add_argument(*s.flags, dest=s.name, action="append" if s.many else "store",
                                metavar=s.name.upper(), help=s.help)
    parser.add_argument("-V", "--version", action="version", version=f"sidepunch {__version__}")
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line and exit status 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_file(path: str | None, explicit: bool) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    section = data.get("tool", {}).get("sidepunch", data) if path.endswith("pyproject.toml") else data
    known = {s.name for s in SETTINGS}
    unknown = sorted(set(section) - known - {"tool"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return section


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
    if s.name in cli:
        raw, origin = cli[s.name], s.flags[-1]
    elif s.env and environ.get(s.env, "") != "":
        raw, origin = environ[s.env], f"${s.env}"
        if s.many:
            raw = raw.split()
    elif s.name in from_file:
        raw, origin = from_file[s.name], f"config file setting {s.name}"
        if s.many and isinstance(raw, str):
            raw = [raw]
    else:
        default = s.default() if callable(s.default) else s.default
        return tuple(s.parse(v) for v in default) if s.many else default
    try:
        value = tuple(s.parse(v) for v in raw) if s.many else (raw if raw is None else s.parse(raw))
        if s.validate and value is not None:
            s.validate(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return value


def _check_queues(queues: Sequence[QueueSpec]) -> None:
    seen: set[str] = set()
    for q in queues:
        if q.name in seen:
            raise ConfigError(f"queue {q.name!r} is named twice")
        seen.add(q.name)


def option_table() -> str:
    """The README's option table, generated from SETTINGS."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "CPUs" if callable(s.default) else (",".join(s.default) if s.many else s.default)
        rows.append(f"| `{', '.join(s.flags)}` | {f'`{s.env}`' if s.env else ''} | {default!s} | {s.help} |")
    return "\n".join(rows)
