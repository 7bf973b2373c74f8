"""The dashboard's Periodic tab: the listing, enable/disable/run through its forms (CSRF and all), hostile names
escaped, read-only mode hiding the actions and refusing the POST."""
from __future__ import annotations

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from werkzeug.test import Client  # noqa: E402

from sidepunch.core import keys  # noqa: E402
from sidepunch.web import create_app  # noqa: E402
from test_periodic import Clock, every2, enqueued, make  # noqa: E402
from test_web import assert_safe, post  # noqa: E402
import time  # noqa: E402


@pytest.fixture
def web(redis_server, r):
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def register(r, *entries):
    make(r, list(entries) or [every2()], Clock(time.time())).look()


def test_lists_entries_and_acts_on_them(web, r):
    register(r)
    resp = web.get("/periodic")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "every2" in text and "*/2 * * * * *" in text and 'href="/periodic"' in text
    assert_safe(text)
    assert post(web, "/periodic", {"action": "disable", "name": "every2"}).status_code == 303
    assert r.sismember(keys.PERIODIC_DISABLED, "every2")
    assert "Enable" in web.get("/periodic").get_data(as_text=True)
    assert post(web, "/periodic", {"action": "enable", "name": "every2"}).status_code == 303
    assert not r.sismember(keys.PERIODIC_DISABLED, "every2")
    before = len(enqueued(r))
    assert post(web, "/periodic", {"action": "run", "name": "every2"}).status_code == 303
    assert len(enqueued(r)) == before + 1
    assert post(web, "/periodic", {"action": "run", "name": "nope"}).status_code == 404
    assert post(web, "/periodic", {"action": "disable", "name": "nope"}).status_code == 404
    assert post(web, "/periodic", {"action": "explode", "name": "every2"}).status_code == 400
    assert web.post("/periodic", data={"action": "disable", "name": "every2"}).status_code in (400, 403)
    assert not r.sismember(keys.PERIODIC_DISABLED, "every2")


def test_hostile_names_are_escaped(web, r):
    register(r, every2(name='<script>alert(1)</script>"x'))
    text = web.get("/periodic").get_data(as_text=True)
    assert "&lt;script&gt;" in text
    assert_safe(text)


def test_read_only_hides_and_refuses_actions(redis_server, r):
    register(r)
    web = Client(create_app(redis_server.url, secret_key="test-secret", read_only=True))
    text = web.get("/periodic").get_data(as_text=True)
    assert "every2" in text and "<form" not in text
    assert web.post("/periodic", data={"action": "disable", "name": "every2"}).status_code == 403
    assert not r.sismember(keys.PERIODIC_DISABLED, "every2")
