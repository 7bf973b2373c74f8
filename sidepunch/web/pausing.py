"""The dashboard's queue pausing: the POST behind the Pause / Unpause buttons of the Queues page (`/queues/pause`,
form fields `action` = pause | unpause and `name`, the queue name as render.encode_name spells it), and the
paused names the Queues page shows (`paused`). Everything goes through sidepunch.api.pausing; every POST passes
the app's CSRF + origin guard before it gets here. Imports api (never server).
"""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from ..api import pausing
from .render import decode_name


def paused(ctx: Any) -> frozenset[str]:
    """The paused queue names, for the Queues page."""
    return frozenset(pausing.paused_queues(ctx.redis))


def act(ctx: Any) -> Response:
    form = ctx.request.form
    action, name = form.get("action", ""), decode_name(form.get("name", ""))
    if action == "pause":
        try:
            pausing.pause(ctx.redis, name)
        except (TypeError, ValueError) as exc:
            return ctx.fail(f"cannot pause: {exc}", 400)
        return ctx.redirect("queues", notice="paused", n=1)
    if action == "unpause":
        pausing.unpause(ctx.redis, name)
        return ctx.redirect("queues", notice="unpaused", n=1)
    return ctx.fail("unknown action", 400)


ROUTES = [("/pause", "queues_pause", ["POST"], act)]
