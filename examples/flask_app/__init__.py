"""The example Flask app: signing up enqueues a welcome email; /sidepunch is the dashboard, for admins only.

Run it from examples/: `flask --app flask_app run`, and the jobs with `sidepunchd -r flask_app.jobs`.
REDIS_URL and ADMIN_PASSWORD come from the environment (see create_app).
"""
from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Flask, jsonify, request, session

from sidepunch.contrib.flask import Sidepunch

from .jobs import SendWelcome

sidepunch_ext = Sidepunch()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory; `config` overrides the settings read from the environment."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("FLASK_SECRET_KEY", "example-only-not-secret"),
        SIDEPUNCH_REDIS_URL=os.environ.get("REDIS_URL"),
        SIDEPUNCH_DASHBOARD="/sidepunch",
        ADMIN_PASSWORD=os.environ.get("ADMIN_PASSWORD", ""),
    )
    app.config.update(config or {})
    sidepunch_ext.init_app(app)

    @app.post("/signup")
    def signup() -> Any:
        email = (request.get_json(silent=True) or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            return jsonify(error="a valid email is required"), 400
        jid = SendWelcome.perform_async(email, "welcome")
        return jsonify(jid=jid), 202

    @app.post("/login")
    def login() -> Any:
        want = app.config["ADMIN_PASSWORD"]
        given = request.form.get("password", "")
        session["admin"] = bool(want) and hmac.compare_digest(given.encode(), want.encode())
        return jsonify(admin=session["admin"]), 200 if session["admin"] else 403

    return app


@sidepunch_ext.dashboard_auth
def admins_only(req: Any) -> bool:
    """Who sees /sidepunch: whoever logged in as admin (Flask's session works here)."""
    return bool(session.get("admin"))
