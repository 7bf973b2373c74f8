"""Lua scripts from sidepunch/lua, loaded once per client and run with EVALSHA (re-sent on NOSCRIPT).

Must not import: anything of sidepunch's above core (client, server, api, admin).
"""
from __future__ import annotations

from importlib import resources
from typing import Any, Sequence

import redis
from redis.commands.core import Script


def _source(name: str, uses: Sequence[str] = ()) -> str:
    """The script's text. Each name in `uses` is another script file, made callable from this one as
    `local function <name>(KEYS, ARGV)`: the file runs unchanged with the tables it is given, so scripts share
    Lua (e.g. dead.lua's add-and-trim) instead of repeating it."""
    own = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
    shared = "".join(f"local function {lib}(KEYS, ARGV)\n{_source(lib)}\nend\n" for lib in uses)
    return shared + own


def source(name: str) -> str:
    """A script's text, for a caller that sends it with EVAL in a round trip of its own making (the client's
    unique push, which the async client pipelines with other pushes)."""
    return _source(name)


def unbound(name: str, uses: Sequence[str] = ()) -> Script:
    """A script for `script(keys=..., args=..., client=pipe_or_client)`; the caller names the client each time,
    so one object serves any connection, including a MULTI pipeline (which loads it before MULTI)."""
    return Script(None, _source(name, uses).encode())  # type: ignore[arg-type]  # bytes need no client's encoder


def load(client: redis.Redis, name: str, uses: Sequence[str] = ()) -> Any:
    """A callable `script(keys=[...], args=[...])`; redis-py retries with the source on NOSCRIPT."""
    return client.register_script(_source(name, uses))
