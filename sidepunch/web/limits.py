"""The dashboard's Limits tab: `/limits` lists the rate limiters the fleet has used (name, kind, definition, in
use, available, waiting), as `sidepunch limits` does, and its POST resets one (its held slots, log, tokens and
waiting set). Everything comes from sidepunch.api.LimitSet; names are hostile text and show through render's
escaping. Imports api (never server).
"""
from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..api.limits import LimitSet


def listing(ctx: Any) -> Response:
    return ctx.render("limits.html", tab="limits", rows=LimitSet(ctx.redis).list())


def act(ctx: Any) -> Response:
    form = ctx.request.form
    action, name = form.get("action", ""), form.get("name", "")
    if action != "reset":
        return ctx.fail("unknown action", 400)
    limits = LimitSet(ctx.redis)
    if name not in limits.names():
        raise NotFound(f"no rate limiter named {name!r}")
    limits.reset(name)
    return ctx.redirect("limits")


ROUTES = [("/limits", "limits", ["GET"], listing), ("/limits", "limits_post", ["POST"], act)]
