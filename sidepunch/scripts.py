"""Lua scripts from sidepunch/lua, loaded once per client and run with EVALSHA (re-sent on NOSCRIPT)."""
from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script


def _source(name: str) -> str:
    return resources.files("sidepunch").joinpath("lua", f"{name}.lua").read_text()


def unbound(name: str) -> Script:
    """A script for `script(keys=..., args=..., client=pipe_or_client)`; the caller names the client each time,
    so one object serves any connection, including a MULTI pipeline (which loads it before MULTI)."""
    return Script(None, _source(name).encode())  # type: ignore[arg-type]  # bytes need no client's encoder


def load(client: redis.Redis, name: str) -> Any:
    """A callable `script(keys=[...], args=[...])`; redis-py retries with the source on NOSCRIPT."""
    return client.register_script(_source(name))
