"""The dashboard's queue pausing: the Queues page shows each queue's state and a Pause / Unpause button whose POST
goes through the CSRF + origin guard; hostile names are escaped and round-trip exactly; read-only mode hides the
buttons and refuses the POST."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from werkzeug.test import Client  # noqa: E402

from sidepunch.core import keys  # noqa: E402
from sidepunch.web import create_app  # noqa: E402
from test_web import SAME, assert_safe, post  # noqa: E402


@pytest.fixture
def web(redis_server, r):
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def names_in_forms(html):
    return re.findall(r'name="name" value="([^"]*)"><input type="hidden" name="action" value="(\w+)"', html)


def test_pause_and_unpause_from_the_queues_page(web, r, client):
    client.push({"class": "A", "args": [], "queue": "mail"})
    html = web.get("/queues").get_data(as_text=True)
    assert ("mail", "pause") in names_in_forms(html) and "active" in html
    assert post(web, "/pause", {"action": "pause", "name": "mail"}).status_code == 303
    assert r.sismember(keys.PAUSED, "mail")
    html = web.get("/queues").get_data(as_text=True)
    assert ("mail", "unpause") in names_in_forms(html) and 'class="queue-state">paused' in html
    assert post(web, "/pause", {"action": "unpause", "name": "mail"}).status_code == 303
    assert not r.sismember(keys.PAUSED, "mail")
    assert post(web, "/pause", {"action": "explode", "name": "mail"}).status_code == 400
    assert post(web, "/pause", {"action": "pause", "name": "a,b"}).status_code == 400


def test_the_post_needs_the_csrf_token_and_the_origin(web, r, client):
    client.push({"class": "A", "args": [], "queue": "mail"})
    assert web.post("/pause", data={"action": "pause", "name": "mail"}).status_code in (400, 403)
    evil = {"Origin": "https://evil.example"}
    assert post(web, "/pause", {"action": "pause", "name": "mail"}, headers=evil).status_code in (400, 403)
    assert not r.sismember(keys.PAUSED, "mail")


def test_hostile_names_are_escaped_and_round_trip(web, r):
    hostile = '<script>alert(1)</script>"x'
    r.sadd(keys.QUEUES, hostile, b"\xff\xfe")
    r.sadd(keys.PAUSED, b"\xff\xfe", "paused-before-any-push")
    html = web.get("/queues").get_data(as_text=True)
    assert "&lt;script&gt;" in html and "paused-before-any-push" in html
    assert_safe(html)
    forms = dict(names_in_forms(html))
    odd = next(name for name, action in forms.items() if action == "unpause" and name.startswith("~x"))
    assert post(web, "/pause", {"action": "unpause", "name": odd}).status_code == 303
    assert not r.sismember(keys.PAUSED, b"\xff\xfe")
    escaped = next(name for name in forms if "script" in name)
    assert post(web, "/pause", {"action": "pause", "name": escaped.replace("&lt;", "<").replace("&gt;", ">")
                                .replace("&#34;", '"').replace("&quot;", '"')}).status_code == 303
    assert r.sismember(keys.PAUSED, hostile)


def test_read_only_hides_and_refuses_the_buttons(redis_server, r, client):
    client.push({"class": "A", "args": [], "queue": "mail"})
    web = Client(create_app(redis_server.url, secret_key="test-secret", read_only=True))
    html = web.get("/queues").get_data(as_text=True)
    assert "mail" in html and "Pause" not in html.replace("paused", "")
    resp = web.post("/pause", data={"action": "pause", "name": "mail", "authenticity_token": "x"}, headers=SAME)
    assert resp.status_code in (400, 403, 405)
    assert not r.sismember(keys.PAUSED, "mail")
