"""The web dashboard: `create_app` (WSGI, for Django, Flask or any WSGI server) and `create_asgi_app` (ASGI,
for FastAPI / Starlette), over sidepunch.api. Needs the `web` extra (`pip install 'sidepunch[web]'`).

Nothing here connects or reads the environment at import time: `create_app` resolves the Redis URL (the
argument, else $REDIS_PROVIDER / $REDIS_URL, else localhost) and makes a client when called; the client
connects on first use. Imports core, client and api; server code never imports this.
"""
from __future__ import annotations

import os
from typing import Any, Callable

__all__ = ["basic_auth", "create_app", "create_asgi_app"]


def create_app(redis_url: str | None = None, *, auth: Callable[[Any], bool] | None = None, read_only: bool = False,
               secret_key: str | bytes | None = None) -> Any:
    """The dashboard as a WSGI application.

    `auth(request) -> bool` is asked on every request (a werkzeug Request; False answers 403, or 401 with a
    challenge for `basic_auth`); `read_only` hides and refuses every action; `secret_key` signs the session
    cookie and CSRF tokens (default $SIDEPUNCH_WEB_SECRET, else random per start, which logs everyone out
    on restart and does not work across several server processes).
    """
    from ..core.connection import check_url, make_client
    from ..core.urls import resolve_url
    from .app import WebApp

    url = resolve_url(redis_url, os.environ)
    check_url(url)
    secret = secret_key or os.environ.get("SIDEPUNCH_WEB_SECRET") or None
    return WebApp(make_client(url), url, auth=auth, read_only=read_only, secret_key=secret)


def create_asgi_app(redis_url: str | None = None, *, auth: Callable[[Any], bool] | None = None,
                    read_only: bool = False, secret_key: str | bytes | None = None) -> Any:
    """The same application for ASGI servers and frameworks (bridged by a2wsgi's WSGIMiddleware, which runs
    each request in a thread pool)."""
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(create_app(redis_url, auth=auth, read_only=read_only, secret_key=secret_key))


def basic_auth(username: str, password: str) -> Callable[[Any], bool]:
    """An `auth` callable checking HTTP basic auth (constant time); see security.basic_auth."""
    from .security import basic_auth as make

    return make(username, password)
