"""Sidepunch for FastAPI and Starlette: `lifespan(...)` and `mount_dashboard(app, ...)`.

    from contextlib import asynccontextmanager
    from sidepunch.contrib import fastapi as sp

    @asynccontextmanager
    async def lifespan(app):
        async with sp.lifespan(redis_url=...):      # configure at startup, close the connection at shutdown
            yield

    app = FastAPI(lifespan=lifespan)
    sp.mount_dashboard(app, "/sidepunch", auth=sidepunch.web.basic_auth("admin", "..."))

Routes then push with `await MyJob.aperform_async(...)` (the default async client, set by `lifespan`).
`lifespan` connects to nothing at startup (the client connects on its first push) and at shutdown closes the
connection the default async client opened on the app's event loop.

Imports starlette (through FastAPI's dependency; FastAPI itself is not needed), sidepunch's client and
sidepunch.web.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

import sidepunch


@asynccontextmanager
async def lifespan(redis_url: str | None = None, *, middleware: Sequence[Any] = ()) -> AsyncIterator[None]:
    """`sidepunch.configure(redis_url, middleware=...)` on entry; on exit, close the default async client's
    connection on this event loop (`await client.aclose()`)."""
    sidepunch.configure(redis_url, middleware=middleware)
    try:
        yield
    finally:
        await sidepunch.default_async_client().aclose()


def mount_dashboard(app: Any, prefix: str = "/sidepunch", *, auth: Callable[[Any], bool] | None,
                    redis_url: str | None = None, read_only: bool = False,
                    secret_key: str | bytes | None = None) -> None:
    """Mount the dashboard (`sidepunch.web.create_asgi_app`) on a FastAPI or Starlette app under `prefix`.

    `auth(request) -> bool` (a Werkzeug request) is required: pass `auth=None` knowingly to leave it open, e.g.
    behind a proxy that authenticates. `redis_url`: default $REDIS_PROVIDER / $REDIS_URL / localhost, read now
    (the app is usually built before its lifespan runs). A several-process server needs one `secret_key`
    (or $SIDEPUNCH_WEB_SECRET) for all."""
    from ..web import create_asgi_app
    app.mount(prefix, create_asgi_app(redis_url, auth=auth, read_only=read_only, secret_key=secret_key))
