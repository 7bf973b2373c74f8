"""Sidepunch for Flask: `Sidepunch(app)` or `ext = Sidepunch(); ext.init_app(app)` (application factories).

`init_app` reads app.config, configures the client (`sidepunch.configure`) and mounts the dashboard:

    SIDEPUNCH_REDIS_URL          default None: $REDIS_PROVIDER / $REDIS_URL / localhost
    SIDEPUNCH_MIDDLEWARE         list of Middleware classes, functions or dotted paths (default [])
    SIDEPUNCH_DASHBOARD          URL prefix of the dashboard (default "/sidepunch"; None: not mounted)
    SIDEPUNCH_DASHBOARD_READ_ONLY  True hides and refuses every action (default False)
    SIDEPUNCH_WEB_SECRET         signs the dashboard's session; default derived from app.secret_key

The dashboard is `sidepunch.web.create_app` mounted in front of the app with Werkzeug's DispatcherMiddleware.
It refuses everyone (403) until an auth hook says yes: `Sidepunch(app, auth=hook)` or `@ext.dashboard_auth`.
The hook is called with the Flask `request` inside a request context of the app, so `session`, `g` and
Flask-Login's `current_user` work in it, and returns True to let the request in. It must not read the request
body (`request.form`): the dashboard reads it next. A bad setting raises
ValueError or TypeError from `init_app`, naming it.

Imports flask, sidepunch's client and core, and sidepunch.web.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable

from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import sidepunch

from ..core.connection import check_url
from ..core.middleware import load_dotted

Auth = Callable[[Any], bool]
DEFAULTS: dict[str, Any] = {"SIDEPUNCH_REDIS_URL": None, "SIDEPUNCH_MIDDLEWARE": [], "SIDEPUNCH_DASHBOARD": "/sidepunch",
            "SIDEPUNCH_DASHBOARD_READ_ONLY": False, "SIDEPUNCH_WEB_SECRET": None}


class Sidepunch:
    """The extension; `app.extensions["sidepunch"]` is it once `init_app(app)` ran."""

    def __init__(self, app: Flask | None = None, *, auth: Auth | None = None) -> None:
        self.auth = auth
        if app is not None:
            self.init_app(app)

    def dashboard_auth(self, hook: Auth) -> Auth:
        """Decorator: `hook(request) -> bool` decides who sees the dashboard."""
        self.auth = hook
        return hook

    def init_app(self, app: Flask) -> None:
        if "sidepunch" in app.extensions:  # a second mount would wrap the first
            raise RuntimeError("Sidepunch.init_app was already called for this app")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        # Every setting is checked before anything changes.
        url = app.config["SIDEPUNCH_REDIS_URL"]
        if url is not None:
            check_url(url)  # ValueError saying what is wrong with it; connects to nothing
        middleware = _middleware(app.config["SIDEPUNCH_MIDDLEWARE"])
        prefix = app.config["SIDEPUNCH_DASHBOARD"]
        mounts = {} if prefix is None else {_check_prefix(prefix): self._dashboard(app, url)}
        sidepunch.configure(url, middleware=middleware)
        app.extensions["sidepunch"] = self
        if mounts:
            app.wsgi_app = DispatcherMiddleware(app.wsgi_app, mounts)  # type: ignore[method-assign]

    def _dashboard(self, app: Flask, url: str | None) -> Any:
        from ..web import create_app
        return create_app(url, auth=lambda req: self._allowed(app, req),
                          read_only=bool(app.config["SIDEPUNCH_DASHBOARD_READ_ONLY"]), secret_key=_secret(app))

    def _allowed(self, app: Flask, dashboard_request: Any) -> bool:
        """The auth hook, run in a request context of `app` for the same request (no hook: nobody)."""
        if self.auth is None:
            return False
        with app.request_context(dashboard_request.environ):
            return bool(self.auth(request))


def _middleware(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"SIDEPUNCH_MIDDLEWARE must be a list, got {type(value).__name__}")
    return [load_dotted(m) if isinstance(m, str) else m for m in value]


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
        raise ValueError(f"SIDEPUNCH_DASHBOARD must be a path like '/sidepunch' (or None), got {prefix!r}")
    return prefix


def _secret(app: Flask) -> str | bytes | None:
    given = app.config["SIDEPUNCH_WEB_SECRET"]
    if given:
        return given
    if app.secret_key:  # derived, so that every process of the app accepts the others' dashboard sessions
        key = app.secret_key if isinstance(app.secret_key, bytes) else str(app.secret_key).encode()
        return hmac.new(key, b"sidepunch.contrib.flask dashboard", hashlib.sha256).hexdigest()
    return None
