"""The daemon's settings: the frozen `Config` dataclass, whose fields declare every setting, and
`build_config`, which resolves them once.

Each field is written out with its type and default; its metadata (`settings.option`) holds the flags,
environment variable, help text and range. The argparse parser, --help, the README option table and the
checks are all generated from these fields (the machinery is in settings.py). Precedence is command line >
environment > config file (sidepunch.toml or [tool.sidepunch] in pyproject.toml) > default.

A structured section of the config file (an array of tables such as `[[name]]`) is declared the same way:
a field `name: tuple[Entry, ...] = field(default=(), metadata=section())`, Entry being a frozen
dataclass whose fields are the keys. The fields are the one registry: the loader accepts exactly the
settings and sections declared here, and `config.name` is typed for mypy and pyright. Sections come only
from the file, never from flags or the environment.

Nothing here reads the environment at import time: `build_config` takes the environment as an argument.
This module must not import the master, child or processor modules (they import it).
"""
from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from .. import __version__
from ..core.periodic import PeriodicEntry, check_unique
from ..core.urls import DEFAULT_URL, resolve_url
from .settings import (DAY, MAX_WEIGHT, ConfigError, QueueSpec, Setting, one_line, option, parse_queue, resolve,
                       section, sections_of, settings_of, show_names, show_number, show_value, toml_type)
from . import settings as _settings

__all__ = ["Config", "ConfigError", "QueueSpec", "MAX_WEIGHT", "SETTINGS", "Setting", "build_config",
           "make_parser", "option_table", "parse_queue", "section", "option"]


MAX_FILE_SIZE = 1_000_000
#: Async jobs in flight per worker process by default; measured in bench/ (see README, "Async jobs").
ASYNC_CONCURRENCY = 1000
#: A worker's GIL switch interval in milliseconds (Python's own default is 5). docs/performance.md, section 10.
SWITCH_INTERVAL = 5
MAX_KEY_PARTS = 32


def _default_workers() -> int:
    return min(os.cpu_count() or 1, 1024)


@dataclass(frozen=True)
class Config:
    """Every daemon setting, resolved; built once by the CLI and passed down."""

    workers: int = field(default_factory=_default_workers, metadata=option(
        "-w", "--workers", env="SIDEPUNCH_WORKERS", limits=(1, 1024),
        help="worker processes the master forks (default: number of CPUs)"))
    threads: int = field(default=10, metadata=option(
        "-c", "--threads", env="SIDEPUNCH_THREADS", limits=(1, 1000),
        help="processor threads in each worker process"))
    async_concurrency: int = field(default=ASYNC_CONCURRENCY, metadata=option(
        "--async-concurrency", env="SIDEPUNCH_ASYNC_CONCURRENCY", limits=(1, 100_000),
        help="async jobs (async def perform) in flight at once in each worker process, on its event loop; "
             "apart from --threads"))
    queues: tuple[QueueSpec, ...] = field(default=(QueueSpec("default"),), metadata=option(
        "-q", "--queue", env="SIDEPUNCH_QUEUES",
        help="queue to fetch from, repeat in priority order; NAME,WEIGHT for weighted random order "
             f"(weight 0 to {show_number(MAX_WEIGHT)})"))
    require: tuple[str, ...] = field(default=(), metadata=option(
        "-r", "--require", env="SIDEPUNCH_REQUIRE",
        help="module that defines your jobs, imported by every worker; repeatable"))
    middleware: tuple[str, ...] = field(default=(), metadata=option(
        "--middleware", env="SIDEPUNCH_MIDDLEWARE",
        help="dotted path of a sidepunch.Middleware subclass, or of a server middleware function mw(job, "
             "payload, queue, call_next); repeatable, outermost first"))
    death_handlers: tuple[str, ...] = field(default=(), metadata=option(
        "--death-handler", env="SIDEPUNCH_DEATH_HANDLERS",
        help="dotted path of a function called with (payload, exception) when a job dies or is discarded; "
             "repeatable"))
    timeout: float = field(default=25.0, metadata=option(
        "-t", "--timeout", env="SIDEPUNCH_TIMEOUT", limits=(0, DAY),
        help="seconds a stopping worker waits for running jobs before requeueing them"))
    # No SIDEPUNCH_ variable: Sidekiq's REDIS_PROVIDER/REDIS_URL are this setting's environment layer.
    redis_url: str = field(default=DEFAULT_URL, metadata=option(
        "--redis-url",
        help="Redis URL (redis://, rediss://, unix://); else $REDIS_PROVIDER names a variable, else $REDIS_URL"))
    config: str | None = field(default=None, metadata=option(
        "-C", "--config", env="SIDEPUNCH_CONFIG",
        help="TOML file with settings (top level or [tool.sidepunch]); default ./sidepunch.toml if present"))
    fetch: Literal["reliable", "basic"] = field(default="reliable", metadata=option(
        "--fetch", env="SIDEPUNCH_FETCH",
        help="reliable (at-least-once, default) or basic (plain BRPOP, Sidekiq's semantics)"))
    poll_interval: float = field(default=0.0, metadata=option(
        "--poll-interval", env="SIDEPUNCH_POLL_INTERVAL", limits=(0, DAY),
        help="average seconds between scheduled/retry polls (0: 5 s x number of processes)"))
    max_retries: int = field(default=25, metadata=option(
        "--max-retries", env="SIDEPUNCH_MAX_RETRIES", limits=(0, 1000),
        help="retries for jobs whose retry option is true"))
    dead_max_jobs: int = field(default=10000, metadata=option(
        "--dead-max-jobs", env="SIDEPUNCH_DEAD_MAX_JOBS", limits=(1, 10_000_000),
        help="size limit of the dead set"))
    dead_timeout: float = field(default=180 * 86400.0, metadata=option(
        "--dead-timeout", env="SIDEPUNCH_DEAD_TIMEOUT", limits=(1, 3650 * DAY),
        help="seconds a job stays in the dead set"))
    max_interruptions: int = field(default=3, metadata=option(
        "--max-interruptions", env="SIDEPUNCH_MAX_INTERRUPTIONS", limits=(0, 1000),
        help="times a job may be interrupted by its worker dying before it goes to the dead set"))
    grace: float = field(default=5.0, metadata=option(
        "--grace", env="SIDEPUNCH_GRACE", limits=(0, 3600),
        help="seconds the master waits beyond --timeout before it SIGKILLs a worker"))
    worker_timeout: float = field(default=60.0, metadata=option(
        "--worker-timeout", env="SIDEPUNCH_WORKER_TIMEOUT", limits=(2, DAY),
        help="seconds without a heartbeat before the master kills a worker (SIGABRT for a stack dump, "
             "then SIGKILL) and recovers its jobs"))
    tag: str = field(default="", metadata=option(
        "-g", "--tag", env="SIDEPUNCH_TAG", help="tag shown in process listings"))
    max_memory: int = field(default=0, metadata=option(
        "--max-memory", env="SIDEPUNCH_MAX_MEMORY", limits=(0, 1_048_576),
        help="MB of RSS after which a worker is replaced gracefully (0: no limit)"))
    max_jobs: int = field(default=0, metadata=option(
        "--max-jobs", env="SIDEPUNCH_MAX_JOBS", limits=(0, 1_000_000_000_000),
        help="jobs after which a worker is replaced gracefully (0: no limit)"))
    job_timeout: float = field(default=0.0, metadata=option(
        "--job-timeout", env="SIDEPUNCH_JOB_TIMEOUT", limits=(0, 30 * DAY),
        help="default seconds a job may run before it is stopped and fails with JobTimeout (0: no limit)"))
    interrupt_grace: float = field(default=5.0, metadata=option(
        "--interrupt-grace", env="SIDEPUNCH_INTERRUPT_GRACE", limits=(1, DAY),
        help="seconds a timed-out or cancelled job gets to stop (a sync job blocked in a C call cannot stop "
             "sooner) before its worker process is retired and the job recorded as it exits"))
    switch_interval: int = field(default=SWITCH_INTERVAL, metadata=option(
        "--switch-interval", env="SIDEPUNCH_SWITCH_INTERVAL", limits=(1, 1000),
        help="milliseconds a worker's thread may keep the GIL while another waits (sys.setswitchinterval); longer "
             "suits CPU-bound jobs, shorter the latency of I/O-bound jobs sharing a process with them"))
    log_level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata=option(
        "--log-level", env="SIDEPUNCH_LOG_LEVEL",
        help="debug, info (a line per job start and finish), warning or error"))
    log_format: Literal["text", "json"] = field(default="text", metadata=option(
        "--log-format", env="SIDEPUNCH_LOG_FORMAT", help="text or json"))
    logfile: str | None = field(default=None, metadata=option(
        "--logfile", env="SIDEPUNCH_LOGFILE", help="write the log to this file"))
    pidfile: str | None = field(default=None, metadata=option(
        "--pidfile", env="SIDEPUNCH_PIDFILE", help="write the master's pid to this file"))
    verbose: bool = field(default=False, metadata=option(
        "-v", "--verbose", env="SIDEPUNCH_VERBOSE", help="debug logging (same as --log-level debug)"))
    error_handlers: tuple[str, ...] = field(default=(), metadata=option(
        "--error-handler", env="SIDEPUNCH_ERROR_HANDLERS",
        help="dotted path of a function called with (exception, job) on every failure of a job (for error "
             "reporting); repeatable; what it raises is logged, never fatal"))
    metrics_port: int = field(default=0, metadata=option(
        "--metrics-port", env="SIDEPUNCH_METRICS_PORT", limits=(0, 65535),
        help="serve Prometheus /metrics and /healthz on this TCP port (0: off; needs the prometheus extra)"))
    metrics_bind: str = field(default="127.0.0.1", metadata=option(
        "--metrics-bind", env="SIDEPUNCH_METRICS_BIND",
        help="address the --metrics-port server listens on"))
    healthz_redis_grace: float = field(default=5.0, metadata=option(
        "--healthz-redis-grace", env="SIDEPUNCH_HEALTHZ_REDIS_GRACE", limits=(1, DAY),
        help="seconds Redis may be unreachable before /healthz answers 503"))
    #: `[[periodic]]` tables: jobs enqueued on a cron schedule (keys: PeriodicEntry's fields).
    periodic: tuple[PeriodicEntry, ...] = field(default=(), metadata=section(check_unique))


#: The settings as rows (name, flags, env, kind, default, help, limits, ...), derived from Config's fields.
SETTINGS: tuple[Setting, ...] = settings_of(Config)


def make_parser(prog: str = "sidepunchd", schema: type[Config] = Config) -> argparse.ArgumentParser:
    parser = _settings.make_parser(settings_of(schema), prog, "Sidepunch job daemon: a master that supervises "
                                   "worker processes which run jobs from Redis.")
    parser.add_argument("-V", "--version", action="version", version=f"sidepunch {__version__}")
    return parser


def build_config(argv: Sequence[str], environ: Mapping[str, str], prog: str = "sidepunchd",
                 schema: type[Config] = Config) -> Config:
    """Parse flags, environment and file into a Config (or a subclass `schema` that declares more settings
    or sections); ConfigError names any bad value."""
    settings = settings_of(schema)
    cli = vars(make_parser(prog, schema).parse_args(argv))
    config_path = cli.get("config") or environ.get("SIDEPUNCH_CONFIG")
    known = {s.name for s in settings} | set(sections_of(schema))
    from_file = load_file(config_path or "sidepunch.toml", explicit=bool(config_path), known=known)
    values: dict[str, Any] = {s.name: resolve(s, cli, environ, from_file) for s in settings}
    # Sidekiq's REDIS_PROVIDER/REDIS_URL are the environment layer of redis_url, so a file's URL ranks below them.
    values["redis_url"] = resolve_url(cli.get("redis_url"), environ, fallback=values["redis_url"])
    _check_queues(values["queues"])
    values.update({name: sec.parse(name, from_file[name]) for name, sec in sections_of(schema).items()
                   if name in from_file})
    return schema(**values)


def load_file(path: str | None, explicit: bool, known: set[str]) -> dict[str, Any]:
    """The settings table of a TOML file ({} if the default file is absent); ConfigError if unusable or if
    it names anything outside `known` (setting and section names)."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_FILE_SIZE + 1)  # -C /dev/zero must not eat the memory
        if len(text) > MAX_FILE_SIZE:
            raise ValueError(f"it is larger than {MAX_FILE_SIZE:,} bytes")
        data = tomllib.loads(_check_key_depth(text.decode("utf-8")))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    # ValueError: a NUL byte in the path, or bytes that are not UTF-8 (tomllib raises UnicodeDecodeError).
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {one_line(exc)}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or inline tables
        raise ConfigError(f"config file {path} cannot be read: its values nest too deeply") from None
    table: Any = data
    if path.endswith("pyproject.toml"):
        tool = data.get("tool")
        table = tool.get("sidepunch") if isinstance(tool, dict) else None
        if table is None:
            raise ConfigError(f"config file {path} has no [tool.sidepunch] table")
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: tool.sidepunch must be a table, got {toml_type(table)}")
    unknown = sorted(set(table) - known - {"tool"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {show_names(unknown)}")
    return dict(table)


#: tomllib takes time that grows with the square of a dotted key's length (`a.a.a. ... = 1`: minutes for a
#: file under MAX_FILE_SIZE), so such keys are refused before parsing. The lookbehind and possessive
#: quantifiers keep this scan linear. A string value of as many dotted words is refused too; none is real.
_DEEP_KEY = re.compile(r"""(?<![A-Za-z0-9_-])(?:(?:[A-Za-z0-9_-]++|"[^"\n]*+"|'[^'\n]*+')[ \t]*+\.[ \t]*+){%d}"""
                       % MAX_KEY_PARTS)


def _check_key_depth(text: str) -> str:
    found = _DEEP_KEY.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise ValueError(f"line {line} has a dotted key of more than {MAX_KEY_PARTS} parts")
    return text


def _check_queues(queues: Sequence[QueueSpec]) -> None:
    seen: set[str] = set()
    for q in queues:
        if q.name in seen:
            raise ConfigError(f"queue {show_value(q.name)} is named twice")
        seen.add(q.name)


def option_table() -> str:
    """The README's option table, generated from Config's fields."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{', '.join(s.flags)}` | {f'`{s.env}`' if s.env else ''} | {s.shown_default()} | {s.doc} |")
    return "\n".join(rows)
