"""`sidepunch web`: the dashboard served standalone on waitress (a production WSGI server, pure Python).

Owns the standalone server's choices: bind 127.0.0.1 unless told otherwise, HTTP basic auth when both
$SIDEPUNCH_WEB_USERNAME and $SIDEPUNCH_WEB_PASSWORD are set, and one warning line when it listens beyond
loopback without auth. Imports core and the web package (never server).
"""
from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any, Mapping, TextIO

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_from(environ: Mapping[str, str]) -> Any:
    """basic_auth from the environment, None when neither variable is set; ValueError when only one is."""
    from .security import basic_auth

    user, word = environ.get("SIDEPUNCH_WEB_USERNAME"), environ.get("SIDEPUNCH_WEB_PASSWORD")
    if not user and not word:
        return None
    if not user or not word:
        raise ValueError("set both SIDEPUNCH_WEB_USERNAME and SIDEPUNCH_WEB_PASSWORD, or neither")
    return basic_auth(user, word)


def build(redis_url: str | None, bind: str, read_only: bool, environ: Mapping[str, str],
          err: TextIO = sys.stderr) -> Any:
    """The app the server runs; ValueError (one line) for bad settings."""
    from . import create_app

    auth = auth_from(environ)
    if auth is None and not is_loopback(bind):
        print(f"sidepunch web: warning: listening on {bind} without authentication; anyone who can reach it can "
              "delete every job (set SIDEPUNCH_WEB_USERNAME and SIDEPUNCH_WEB_PASSWORD)", file=err)
    return create_app(redis_url, auth=auth, read_only=read_only)


def serve(app: Any, bind: str, port: int, threads: int = 8) -> None:
    import waitress

    waitress.serve(app, host=bind, port=port, threads=threads, ident="sidepunch", _quiet=False)


def run(redis_url: str | None, bind: str, port: int, read_only: bool) -> None:
    serve(build(redis_url, bind, read_only, os.environ), bind, port)
