"""`python manage.py sidepunchd [sidepunchd options]`: the daemon, run with this Django project loaded.

Django has been set up by manage.py when this runs (settings read, apps ready, sidepunch configured from
settings.SIDEPUNCH), and the daemon's master runs in this process: its worker processes fork from it and start
with Django ready, then each imports every installed app's `jobs` module (passed as `-r app.jobs`; a `-r` given adds
more). The Redis URL is settings.SIDEPUNCH["REDIS_URL"] unless `--redis-url` is given. Database
connections are closed before the fork, so no worker shares the master's socket. Every other argument is
sidepunchd's, parsed by it (bad ones exit 2 with one line; `--help` lists them); Django's own `--settings`,
`--pythonpath` (applied by manage.py already), `--skip-checks` (no system checks), `--traceback`, `--no-color`
and `--force-color` are taken out first.

This is the one module of sidepunch.contrib that imports the server (its command-line entry point).
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ...conf import jobs_modules, read_options

#: Django options taken out of the arguments: those with a value, and flags.
DJANGO_VALUED = ("--settings", "--pythonpath")
DJANGO_FLAGS = ("--skip-checks", "--traceback", "--no-color", "--force-color")


class Command(BaseCommand):
    help = ("Run sidepunchd with this project: every installed app's jobs module is loaded in each worker. "
            "Takes sidepunchd's options (manage.py sidepunchd --help lists them).")

    def run_from_argv(self, argv: list[str]) -> None:
        """manage.py's entry: the arguments go to sidepunchd, not to Django's parser."""
        args, skip_checks = split_django_options(argv[2:])
        if not skip_checks and "-h" not in args and "--help" not in args:
            try:
                self.check()
            except CommandError as exc:
                self.stderr.write(f"{type(exc).__name__}: {exc}")
                sys.exit(exc.returncode)
        self.handle(*args)

    def handle(self, *args: Any, **options: Any) -> None:
        """Runs the daemon with `args` (sidepunchd's options); never returns: exits with the daemon's status."""
        argv = daemon_args([str(a) for a in args], jobs_modules(), read_options().redis_url)
        connections.close_all()  # the workers fork from this process: none may inherit an open socket
        from sidepunch.server.cli import daemon_main
        daemon_main(argv)


def split_django_options(args: Sequence[str]) -> tuple[list[str], bool]:
    """(the arguments without Django's own options, whether --skip-checks was given)."""
    kept: list[str] = []
    skip = False
    it = iter(args)
    for arg in it:
        if arg == "--":
            kept.extend(it)
            break
        if arg in DJANGO_VALUED:
            next(it, None)
        elif arg.startswith(tuple(f"{name}=" for name in DJANGO_VALUED)):
            continue
        elif arg in DJANGO_FLAGS:
            skip = skip or arg == "--skip-checks"
        else:
            kept.append(arg)
    return kept, skip


def daemon_args(args: list[str], modules: Sequence[str], redis_url: str | None) -> list[str]:
    """sidepunchd's argv: a `-r` per jobs module and the settings' Redis URL first, then the given arguments,
    so that a `--redis-url` given (even abbreviated) comes later and wins, and given `-r` modules add to ours."""
    argv: list[str] = []
    for module in modules:
        argv += ["-r", module]
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    return argv + list(args)
