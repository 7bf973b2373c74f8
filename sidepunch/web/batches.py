"""The dashboard's Batches tab: `/batches` lists batches newest first with a progress bar each (as `sidepunch
batches` does), `/batches/<bid>` shows one batch's status, its pending and failed jobs and its nested batches (as
`sidepunch batch BID`). Read only: a batch changes only through its jobs. Everything comes from
sidepunch.api.BatchSet / BatchStatus; descriptions and ids are hostile text and show through render's escaping.
Imports api (never server).
"""
from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..api.batches import BatchSet, BatchStatus

#: Batches per page of the list, and jids shown per kind on a batch's page.
PAGE = 50
SHOWN_JIDS = 100


def _page(ctx: Any) -> int:
    raw = ctx.request.args.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


def listing(ctx: Any) -> Response:
    page = _page(ctx)
    batches = BatchSet(ctx.redis)
    rows = batches.list(limit=PAGE, offset=(page - 1) * PAGE)
    return ctx.render("batches.html", tab="batches", rows=rows, page=page, size=batches.size(), per_page=PAGE)


def detail(ctx: Any, bid: str) -> Response:
    status = BatchStatus(bid, ctx.redis)
    if not status.exists:
        raise NotFound(f"no batch {bid!r} (unknown, or its data expired 30 days after it finished)")
    members = status.members()
    kinds = {kind: [m for m, s in members.items() if s == kind and not m.startswith("b:")]
             for kind in ("pending", "failed")}
    children = [BatchStatus(m[2:], ctx.redis) for m in members if m.startswith("b:")][:SHOWN_JIDS]
    return ctx.render("batch.html", tab="batches", batch=status, kinds=kinds, children=children,
                      shown=SHOWN_JIDS)


ROUTES = [("/batches", "batches", ["GET"], listing), ("/batches/<bid>", "batch", ["GET"], detail)]
