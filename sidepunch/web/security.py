"""The dashboard's protections: the signed session cookie, CSRF tokens, the cross-site check, headers, basic auth.

Owns deciding whether a request may change state (`Guard.refusal`) and the headers every response carries. A
session is a random id in a cookie signed with HMAC-SHA256 under the app's secret; the CSRF token is an HMAC of
that id, so it is bound to the session and needs no server-side store. A state change also needs the browser's
`Sec-Fetch-Site` to say same-origin (or none: typed by the user), or, from browsers that do not send it, an
`Origin` equal to the request's own (Sidekiq 8.1's check). Imports nothing of sidepunch; never imported by server.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any, Callable

from werkzeug.wrappers import Request, Response

COOKIE = "sidepunch_session"
CSRF_FIELD = "authenticity_token"
#: No inline script or style anywhere; the page cannot be framed, and forms post only to this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


class Guard:
    """Sessions and CSRF under one secret (random per Guard when none is given)."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8", "surrogateescape")
        self.secret = secret or secrets.token_bytes(32)

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def session_id(self, request: Request) -> str | None:
        """The id of a validly signed session cookie, else None."""
        raw = request.cookies.get(COOKIE, "")
        sid, _, mac = raw.partition(".")
        if not sid or not hmac.compare_digest(mac.encode(), self._mac("session", sid).encode()):
            return None
        return sid

    def new_session(self) -> str:
        return secrets.token_urlsafe(24)

    def cookie_value(self, sid: str) -> str:
        return f"{sid}.{self._mac('session', sid)}"

    def csrf_token(self, sid: str) -> str:
        return self._mac("csrf", sid)

    def refusal(self, request: Request, sid: str | None) -> str | None:
        """Why a state-changing request must be refused, or None when it may go on."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = request.headers.get("Origin")
        if site is None and origin is not None and origin != own_origin(request):
            return "cross-site request refused (Origin does not match)"
        token = request.form.get(CSRF_FIELD, "")
        if sid is None or not hmac.compare_digest(token.encode("utf-8", "replace"),
                                                  self.csrf_token(sid).encode()):
            return "missing or bad CSRF token: reload the page and try again"
        return None


def own_origin(request: Request) -> str:
    return f"{request.scheme}://{request.host}"


def secure_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def basic_auth(username: str, password: str) -> Callable[[Request], bool]:
    """An `auth` callable for create_app checking HTTP basic auth in constant time; the app answers 401 with
    a challenge (its `challenge` attribute) when it says no."""
    want_user = hashlib.sha256(username.encode("utf-8", "surrogateescape")).digest()
    want_pass = hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()

    def check(request: Request) -> bool:
        given = request.authorization
        if given is None or given.type != "basic":
            return False
        user = hashlib.sha256((given.username or "").encode("utf-8", "surrogateescape")).digest()
        word = hashlib.sha256((given.password or "").encode("utf-8", "surrogateescape")).digest()
        # Both compared always, so the time taken does not tell which one was wrong.
        return hmac.compare_digest(user, want_user) & hmac.compare_digest(word, want_pass)

    check.challenge = 'Basic realm="Sidepunch", charset="UTF-8"'  # type: ignore[attr-defined]
    return check


def challenge_of(auth: Any) -> str | None:
    return getattr(auth, "challenge", None)
