"""The dashboard's WSGI application: routing, the per-request context, sessions, errors and static files.

Owns dispatching a request to a page (pages.py, jobsets.py, metrics.py, periodic.py, browse.py), the checks every request
passes (the `auth` callable; for a POST the read-only switch, the cross-site check and the CSRF token of
security.py) and turning failures into pages: an admin operation that cannot be done (api.ops.OpError,
payload.PayloadError) is a 409/404 page saying why, Redis down is a 503 page naming the masked URL. A GET never
changes state. Imports core and api (never server).
"""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, Callable

import redis
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from ..api.ops import NotFound as OpNotFound
from ..api.ops import OpError
from ..core.connection import OUTAGE_ERRORS
from ..core.payload import PayloadError
from ..core.urls import mask_url
from . import batches, browse, jobsets, limits, metrics, pages, pausing, periodic
from .render import make_env
from .security import COOKIE, CSRF_FIELD, Guard, challenge_of, secure_headers

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.css", "app.js", "LICENSE.txt"}
Handler = Callable[..., Response]
#: Tabs of the navigation bar: (endpoint, label).
TABS = [("dashboard", "Dashboard"), ("busy", "Busy"), ("queues", "Queues"), ("jobset:retries", "Retries"),
        ("jobset:scheduled", "Scheduled"), ("jobset:morgue", "Dead"), ("metrics", "Metrics"), ("periodic", "Periodic"),
        ("batches", "Batches"),
        ("limits", "Limits"),
        ("redis", "Redis"),
        ("keys", "Keys")]
NOTICES = {"retried": "{n} job(s) enqueued.", "deleted": "{n} job(s) deleted.", "killed": "{n} job(s) moved to Dead.",
           "signalled": "{n} process(es) signalled; they act at their next heartbeat (about 5 s).",
           "cleared": "Queue deleted ({n} job(s) removed).", "left": "{n} entry(ies) could not be enqueued and stay.",
           "periodic_run": "Enqueued now.", "periodic_enable": "Enabled; every daemon enqueues its next tick.",
           "periodic_disable": "Disabled; every daemon skips its ticks from its next look (about a second).",
           "paused": "Paused; every daemon stops fetching it within about 3 s (pushes are still accepted).",
           "unpaused": "Unpaused; daemons fetch it again within about a second."}


def _routes() -> tuple[Map, dict[str, Handler]]:
    handlers: dict[str, Handler] = {}
    rules = []
    for module in (pages, jobsets, metrics, periodic, batches, limits, pausing, browse):
        for path, endpoint, methods, handler in module.ROUTES:
            rules.append(Rule(path, endpoint=endpoint, methods=methods))
            handlers[endpoint] = handler
    rules.append(Rule("/static/<name>", endpoint="static"))
    return Map(rules, strict_slashes=False, merge_slashes=False), handlers


class Context:
    """One request: its Redis client, session, URL builder and renderer."""

    def __init__(self, app: "WebApp", request: Request, adapter: Any, sid: str) -> None:
        self.app = app
        self.request = request
        self.redis = app.redis
        self.adapter = adapter
        self.sid = sid
        self.read_only = app.read_only
        self.fresh = False  # no valid session cookie came with the request

    def url(self, endpoint: str, **values: Any) -> str:
        return self.adapter.build(endpoint, values)

    def redirect(self, endpoint: str, notice: str | None = None, n: int = 0, **values: Any) -> Response:
        if notice:
            values.update(notice=notice, n=n)
        return redirect(self.url(endpoint, **values), 303)

    def render(self, template: str, status: int = 200, **data: Any) -> Response:
        notice = NOTICES.get(self.request.args.get("notice", ""))
        count = self.request.args.get("n", "0")
        html = self.app.env.get_template(template).render(
            ctx=self, url=self.url, tabs=TABS, csrf_field=CSRF_FIELD, csrf=self.app.guard.csrf_token(self.sid),
            read_only=self.read_only, summary=pages.summary(self.redis),
            notice=notice.format(n=int(count)) if notice and count.isdigit() and len(count) < 10 else None,
            **data)
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    def fail(self, message: str, status: int = 409) -> Response:
        return self.render("error.html", status=status, message=message)


class WebApp:
    """The WSGI callable create_app returns."""

    def __init__(self, client: redis.Redis, url: str, *, auth: Callable[[Request], bool] | None = None,
                 read_only: bool = False, secret_key: str | bytes | None = None) -> None:
        self.redis = client
        self.url = url
        self.auth = auth
        self.read_only = read_only
        self.guard = Guard(secret_key)
        self.env = make_env()
        self.map, self.handlers = _routes()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        request.max_form_memory_size = 1 << 20
        response = secure_headers(self.handle(request))
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        if self.auth is not None and not self.auth(request):
            challenge = challenge_of(self.auth)
            headers = {"WWW-Authenticate": challenge} if challenge else {}
            return Response("authentication required\n" if challenge else "forbidden\n",
                            status=401 if challenge else 403, headers=headers, content_type="text/plain")
        adapter = self.map.bind_to_environ(request.environ)
        sid = self.guard.session_id(request)
        fresh = sid is None
        ctx = Context(self, request, adapter, sid or self.guard.new_session())
        ctx.fresh = fresh
        response = self._dispatch(ctx)
        if fresh:
            response.set_cookie(COOKIE, self.guard.cookie_value(ctx.sid), httponly=True, samesite="Strict",
                                secure=request.scheme == "https", path=request.script_root or "/")
        return response

    def _dispatch(self, ctx: Context) -> Response:
        try:
            endpoint, values = ctx.adapter.match()
            if endpoint == "static":
                return self._static(values["name"])
            if ctx.request.method == "POST":
                refused = self._refusal(ctx)
                if refused:
                    return ctx.fail(refused, 403)
            return self.handlers[endpoint](ctx, **values)
        except HTTPException as exc:
            if isinstance(exc, (NotFound, MethodNotAllowed)):
                return ctx.fail(exc.description or exc.name, exc.code or 404)
            return exc.get_response(ctx.request.environ)  # type: ignore[return-value]
        except OpNotFound as exc:
            return ctx.fail(str(exc), 404)
        except (OpError, PayloadError) as exc:
            return ctx.fail(str(exc), 409)
        except OUTAGE_ERRORS as exc:
            detail = " ".join(str(exc).split())[:200]
            return Response(f"cannot reach Redis at {mask_url(self.url)} ({detail})\n", status=503,
                            content_type="text/plain; charset=utf-8")
        except redis.ResponseError as exc:
            return ctx.fail(f"Redis refused: {exc}", 409)

    def _refusal(self, ctx: Context) -> str | None:
        if self.read_only:
            return "this dashboard is read-only"
        return self.guard.refusal(ctx.request, None if ctx.fresh else ctx.sid)

    def _static(self, name: str) -> Response:
        if name not in STATIC_FILES:
            raise NotFound()
        kind = mimetypes.guess_type(name)[0] or "text/plain"
        response = Response((STATIC / name).read_bytes(), content_type=f"{kind}; charset=utf-8")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

