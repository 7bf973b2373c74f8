"""`sidepunchd`: parse the settings once, set up logging, and run the master.

Bad flags or settings end with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from .config import ConfigError, build_config
from .connection import make_client, mask_url
from .exitcodes import ExitCode
from .logs import setup_logging


def daemon_main(argv: Sequence[str] | None = None) -> None:
    try:
        config = build_config(sys.argv[1:] if argv is None else argv, os.environ)
        make_client(config.redis_url)  # parses the URL; connects to nothing
    except (ConfigError, ValueError) as exc:
        print(f"sidepunchd: error: {exc}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    setup_logging(config, os.environ)
    # `-r myapp.jobs` should find the app in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if config.pidfile:
        with open(config.pidfile, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    from .master import Master
    from .systemd import Notifier
    import logging
    logging.getLogger("sidepunch").info("sidepunchd using Redis at %s", mask_url(config.redis_url))
    try:
        code = Master(config, Notifier(os.environ)).run()
    finally:
        if config.pidfile:
            try:
                os.unlink(config.pidfile)
            except OSError:
                pass
    sys.exit(code)


if __name__ == "__main__":
    daemon_main()
