"""The dashboard's Periodic tab: `/periodic` lists the entries the fleet declares (name, schedule, zone, job,
next run, last run and its jid, enabled), as `sidepunch periodic list` does, and its POST enables, disables or
enqueues one now. Everything comes from sidepunch.api.PeriodicSet; names are hostile text and show through
render's escaping. Imports api (never server).
"""
from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from ..api.periodic import PeriodicSet


def listing(ctx: Any) -> Response:
    return ctx.render("periodic.html", tab="periodic", rows=PeriodicSet(ctx.redis).list())


def act(ctx: Any) -> Response:
    form = ctx.request.form
    action, name = form.get("action", ""), form.get("name", "")
    entries = PeriodicSet(ctx.redis)
    if action == "run":
        if entries.run(name) is None:
            raise NotFound(f"no periodic entry named {name!r} (no daemon declares it)")
        return ctx.redirect("periodic", notice="periodic_run", n=1)
    if action in ("enable", "disable"):
        if not (entries.enable(name) if action == "enable" else entries.disable(name)):
            raise NotFound(f"no periodic entry named {name!r} (no daemon declares it)")
        return ctx.redirect("periodic", notice=f"periodic_{action}", n=1)
    return ctx.fail("unknown action", 400)


ROUTES = [("/periodic", "periodic", ["GET"], listing), ("/periodic", "periodic_post", ["POST"], act)]
