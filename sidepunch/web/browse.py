"""The dashboard's Redis pages: `/redis` (INFO) and `/keys`, a key browser, with `/keys/show` for one value.

Owns reading Redis for an admin without ever blocking it: keys are listed with SCAN (never KEYS), a page at a
time by SCAN cursor, with each key's type and size; a value is read a page at a time (GETRANGE, LRANGE,
ZRANGE, SSCAN, HSCAN, XRANGE). Key names are hostile bytes: they travel in URLs by render.encode_name and show
through render's escaping. Reads only; imports api (never server).
"""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from ..api.records import name_key, name_of
from .pages import page_args
from .render import decode_name

KEYS_PER_PAGE = 50
STRING_BYTES = 64 * 1024
SIZE_OF = {b"string": "strlen", b"list": "llen", b"set": "scard", b"zset": "zcard", b"hash": "hlen",
           b"stream": "xlen"}


def redis_page(ctx: Any) -> Response:
    info = ctx.redis.info()
    sections = sorted((str(k), v) for k, v in info.items())
    return ctx.render("redis.html", tab="redis", info=sections)


def _cursor(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 21 else 0


def _scan_page(client: Any, cursor: int, match: bytes | None) -> tuple[list[bytes], int]:
    """About one page of keys from `cursor` on, and the cursor to go on from (0: the end)."""
    found: list[bytes] = []
    rounds = 0
    while True:
        cursor, batch = client.scan(cursor, match=match, count=200)
        found.extend(batch)
        rounds += 1
        # A sparse MATCH can give empty batches; stop after a bounded number of rounds either way.
        if cursor == 0 or len(found) >= KEYS_PER_PAGE or rounds >= 50:
            return found, cursor


def keys_page(ctx: Any) -> Response:
    args = ctx.request.args
    cursor = _cursor(args.get("cursor", "0"))
    match = args.get("match", "")[:200]
    names, after = _scan_page(ctx.redis, cursor, name_key(match) if match else None)
    pipe = ctx.redis.pipeline(transaction=False)
    for key in names:
        pipe.type(key)
    kinds = pipe.execute()
    for key, kind in zip(names, kinds):
        getattr(pipe, SIZE_OF.get(kind, "exists"))(key)
    sizes = pipe.execute(raise_on_error=False)
    rows = [(name_of(k), t.decode("ascii", "replace"), s if isinstance(s, int) else "?")
            for k, t, s in sorted(zip(names, kinds, sizes))]
    return ctx.render("keys.html", tab="keys", rows=rows, cursor=cursor, after=after, match=match)


def _value(client: Any, key: bytes, kind: bytes, page: int, per: int, cursor: int) -> tuple[Any, int]:
    """One page of a value as rows of text (or bytes), and the cursor for SSCAN/HSCAN (0: the end)."""
    start, stop = (page - 1) * per, page * per - 1
    if kind == b"string":
        return [client.getrange(key, 0, STRING_BYTES - 1)], 0
    if kind == b"list":
        return [(start + i, v) for i, v in enumerate(client.lrange(key, start, stop))], 0
    if kind == b"zset":
        return [(s, m) for m, s in client.zrange(key, start, stop, withscores=True)], 0
    if kind == b"set":
        cursor, members = client.sscan(key, cursor, count=per)
        return [("", m) for m in members], cursor
    if kind == b"hash":
        cursor, fields = client.hscan(key, cursor, count=per)
        return list(fields.items()), cursor
    if kind == b"stream":
        return [(i, repr(f)) for i, f in client.xrange(key, count=per)], 0
    return [], 0


def key_show(ctx: Any) -> Response:
    raw = name_key(decode_name(ctx.request.args.get("key", "")))
    kind = ctx.redis.type(raw)
    if kind == b"none":
        return ctx.fail("no such key (it may have expired or been deleted)", 404)
    page, per = page_args(ctx)
    cursor = _cursor(ctx.request.args.get("cursor", "0"))
    rows, after = _value(ctx.redis, raw, kind, page, per, cursor)
    size = getattr(ctx.redis, SIZE_OF.get(kind, "exists"))(raw)
    return ctx.render("key.html", tab="keys", key=name_of(raw), kind=kind.decode("ascii", "replace"), size=size,
                      ttl=ctx.redis.ttl(raw), rows=[tuple(_text(c) for c in row) if isinstance(row, tuple)
                                                   else _text(row) for row in rows],
                      page=page, per=per, cursor=cursor, after=after, string_cap=STRING_BYTES)


def _text(value: Any) -> Any:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


ROUTES = [("/redis", "redis", ["GET"], redis_page), ("/keys", "keys", ["GET"], keys_page),
          ("/keys/show", "key", ["GET"], key_show)]
