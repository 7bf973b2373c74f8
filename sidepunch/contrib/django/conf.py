"""The Django app's settings: the `SIDEPUNCH` dict in settings.py, read and checked, and the apps' jobs modules.

    SIDEPUNCH = {
        "REDIS_URL": "redis://localhost:6379/0",   # default: $REDIS_PROVIDER / $REDIS_URL / localhost
        "MIDDLEWARE": ["myapp.middleware.Tenant"],  # dotted paths (or the objects) sidepunch.configure takes
    }

Every key is optional and an unknown key is an error (a typo must not silently fall back to a default): a bad
value raises ImproperlyConfigured naming the key, when Django starts. Nothing is read at import time.

Imports django and sidepunch's core; nothing else of sidepunch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import module_has_submodule

from ...core.connection import check_url
from ...core.middleware import load_dotted

KEYS = ("REDIS_URL", "MIDDLEWARE")
#: The module of an installed app that `manage.py sidepunchd` loads in every worker, as `-r app.jobs` would.
JOBS_MODULE = "jobs"


@dataclass(frozen=True)
class Options:
    redis_url: str | None
    middleware: tuple[Any, ...]


def read_options() -> Options:
    """settings.SIDEPUNCH, checked; ImproperlyConfigured names what is wrong."""
    given = getattr(settings, "SIDEPUNCH", {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"SIDEPUNCH must be a dict, got {type(given).__name__}")
    unknown = sorted(str(k) for k in given if k not in KEYS)
    if unknown:
        raise ImproperlyConfigured(f"SIDEPUNCH has unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    url = given.get("REDIS_URL")
    if url is not None:
        if not isinstance(url, str):
            raise ImproperlyConfigured(f"SIDEPUNCH['REDIS_URL'] must be a str, got {type(url).__name__}")
        try:
            check_url(url)
        except ValueError as exc:
            raise ImproperlyConfigured(f"SIDEPUNCH['REDIS_URL']: {exc}") from None
    return Options(url, _middleware(given.get("MIDDLEWARE", ())))


def _middleware(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(f"SIDEPUNCH['MIDDLEWARE'] must be a list, got {type(value).__name__}")
    loaded = []
    for item in value:
        if isinstance(item, str):
            try:
                item = load_dotted(item)
            except (ImportError, AttributeError) as exc:
                raise ImproperlyConfigured(f"SIDEPUNCH['MIDDLEWARE']: {exc}") from None
        loaded.append(item)
    return tuple(loaded)


def jobs_modules() -> list[str]:
    """The dotted names of the installed apps' `jobs` modules, in INSTALLED_APPS order (found, not imported)."""
    return [f"{app.name}.{JOBS_MODULE}" for app in apps.get_app_configs()
            if module_has_submodule(app.module, JOBS_MODULE)]
