"""The dashboard in urls.py, behind Django's auth: `dashboard_path("sidepunch/")` (staff only by default).

    from sidepunch.contrib.django.dashboard import dashboard_path
    urlpatterns = [..., dashboard_path("sidepunch/")]

`DashboardView` is a Django view that first asks `allow(request)` (default: an active staff user; an anonymous
visitor is sent to settings.LOGIN_URL, anyone else refused with 403), then hands the request to the WSGI app
of `sidepunch.web.create_app`, mounted at the URL prefix that matched, and turns its answer into an
HttpResponse (every Set-Cookie kept). The dashboard has its own CSRF protection (a token bound to its session
cookie, and a cross-site check), so the view is exempt from Django's. It serves WSGI and ASGI deployments alike.

The dashboard app is made on the first request (the Redis URL and middleware are the client's that
`sidepunch.configure` set, i.e. settings.SIDEPUNCH's), with a secret derived from settings.SECRET_KEY, so every
server process accepts the others' sessions. Imports django, sidepunch's client and sidepunch.web.
"""
from __future__ import annotations

import io
import re
import sys
import threading
from typing import Any, Callable

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException
from django.urls import URLPattern, re_path
from django.utils.crypto import salted_hmac

from ...client.push import default_client

Allow = Callable[[HttpRequest], bool]


def is_staff(request: HttpRequest) -> bool:
    """The default check: the request's user (AuthenticationMiddleware sets it) is active and staff."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def dashboard_path(prefix: str = "sidepunch/", *, allow: Allow = is_staff, read_only: bool = False,
                   redis_url: str | None = None, name: str = "sidepunch-dashboard") -> URLPattern:
    """A urlpatterns entry serving the dashboard under `prefix` (ends with "/"; also works inside include())."""
    if not prefix.endswith("/") or prefix.startswith("/"):
        raise ValueError(f"dashboard_path prefix must end with '/' and not start with one, got {prefix!r}")
    view = DashboardView(allow=allow, read_only=read_only, redis_url=redis_url)
    # [\s\S], not `.`: a path may hold a newline (%0A), which is the dashboard's to answer, not a 404 here
    return re_path(rf"^{re.escape(prefix)}(?P<path>[\s\S]*)\Z", view, name=name)


class DashboardView:
    """A Django view (a callable object) dispatching to the dashboard's WSGI app."""

    csrf_exempt = True  # Django's CsrfViewMiddleware reads this; the dashboard checks its own tokens

    def __init__(self, *, allow: Allow = is_staff, read_only: bool = False, redis_url: str | None = None) -> None:
        self.allow = allow
        self.read_only = read_only
        self.redis_url = redis_url
        self._app: Any = None
        self._lock = threading.Lock()

    def __call__(self, request: HttpRequest, path: str = "") -> HttpResponse:
        if not self.allow(request):
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        try:
            environ = wsgi_environ(request, path)
        except RawPostDataException:  # a middleware consumed a multipart body; the dashboard posts none
            return HttpResponse("the request body was already read\n", status=400, content_type="text/plain")
        return call_wsgi(self.app(), environ)

    def app(self) -> Any:
        """The dashboard's WSGI app, made on first use."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from ...web import create_app
                    secret = salted_hmac("sidepunch.contrib.django.dashboard", "secret").hexdigest()
                    self._app = create_app(self.redis_url or default_client().redis_url,
                                           read_only=self.read_only, secret_key=secret)
        return self._app


def _wsgi_str(text: str) -> str:
    """A path as WSGI carries it: its UTF-8 bytes, one str character per byte (PEP 3333)."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def wsgi_environ(request: HttpRequest, path: str) -> dict[str, Any]:
    """A WSGI environ for the dashboard: the request mounted at the prefix that matched (`path` is the rest)."""
    environ = dict(request.META)
    full = request.path
    mount = full[:len(full) - len(path)] if full.endswith(path) else full
    body = request.body  # read once by Django (and bounded by DATA_UPLOAD_MAX_MEMORY_SIZE)
    environ.update({
        "SCRIPT_NAME": _wsgi_str(mount.rstrip("/")), "PATH_INFO": _wsgi_str("/" + path),
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "wsgi.url_scheme": request.scheme,
    })
    # An ASGIRequest's META has no wsgi.* keys.
    for key, value in (("wsgi.version", (1, 0)), ("wsgi.errors", sys.stderr), ("wsgi.multithread", True),
                       ("wsgi.multiprocess", True), ("wsgi.run_once", False), ("SERVER_PROTOCOL", "HTTP/1.1")):
        environ.setdefault(key, value)
    return environ


def call_wsgi(app: Any, environ: dict[str, Any]) -> HttpResponse:
    """Run a WSGI app on `environ`; its status, headers (each Set-Cookie too) and body as an HttpResponse."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        started.update(status=status, headers=headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        getattr(result, "close", lambda: None)()
    code, _, reason = started["status"].partition(" ")
    response = HttpResponse(b"".join(chunks), status=int(code), reason=reason or None)
    for name, value in started["headers"]:
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        elif name in response and name.lower() != "content-type":
            response[name] = f"{response[name]}, {value}"
        else:
            response[name] = value
    return response
