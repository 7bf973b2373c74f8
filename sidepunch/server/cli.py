"""`sidepunchd`: parse the settings once, set up logging, and run the master.

Bad flags or settings (values, the Redis URL, a pidfile or logfile that cannot be written) end with one
line on stderr and exit status 2, never a traceback.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn, Sequence

from .config import Config, ConfigError, build_config
from ..core.urls import mask_url
from ..core.exitcodes import ExitCode
from .logs import setup_logging
from .spawner import check_url_apart


def daemon_main(argv: Sequence[str] | None = None) -> None:
    try:
        config = build_config(sys.argv[1:] if argv is None else argv, os.environ)
        check_url_apart(config.redis_url)  # parses the URL; connects to nothing (in a child: redis-py stays out)
        setup_logging(config, os.environ)
        listener = None
        if config.metrics_port:  # bound now: a port in use is a bad setting (exit 2), not a crash later
            from .observe.feed import open_listener
            listener = open_listener(config)
        if config.pidfile:
            _write_pidfile(config.pidfile)
    except (ConfigError, ValueError) as exc:
        _usage_error(str(exc))
    # `-r myapp.jobs` should find the app in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from .master import Master
    from .systemd import Notifier
    logging.getLogger("sidepunch").info("sidepunchd using Redis at %s", mask_url(config.redis_url))
    try:
        code = Master(config, Notifier(os.environ), listener).run()
    finally:
        _remove_pidfile(config)
    sys.exit(code)


def _usage_error(message: str) -> NoReturn:
    print(f"sidepunchd: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(ExitCode.USAGE)


def _write_pidfile(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"--pidfile: cannot write {path!r}: {getattr(exc, 'strerror', None) or exc}") from None


def _remove_pidfile(config: Config) -> None:
    if config.pidfile:
        try:
            os.unlink(config.pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    daemon_main()
