"""Lua scripts from sidepunch/lua, loaded once per client and run with EVALSHA (re-sent on NOSCRIPT)."""
from __future__ import annotations

from importlib import resources
from typing import Any

import redis


def load(client: redis.Redis, name: str) -> Any:
    """A callable `script(keys=[...], args=[...])`; redis-py retries with the source on NOSCRIPT."""
    source = resources.files("sidepunch").joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)
