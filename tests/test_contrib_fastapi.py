"""sidepunch.contrib.fastapi through the example app in examples/fastapi_app: the lifespan configures the client
and closes it at shutdown, a route enqueues with `await Job.aperform_async` into the real Redis, a Manager runs
the async job and the route reads its kept result, and the dashboard is mounted through the ASGI bridge."""
from __future__ import annotations

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

import sidepunch
from sidepunch.client import push as push_module

from conftest import ROOT, wait_for

SAME = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def app(redis_server, r, monkeypatch):
    monkeypatch.setattr(push_module, "_default", push_module._default)  # the lifespan configures; put it back
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DASHBOARD_PASSWORD", "sesame")
    monkeypatch.delenv("REDIS_PROVIDER", raising=False)
    from fastapi_app import main
    return main.create_app()


def test_a_route_enqueues_with_the_async_client_and_the_lifespan_closes_it(app, r, monkeypatch):
    closed = []
    real = sidepunch.AsyncClient.aclose

    async def spy(self):
        closed.append(self)
        await real(self)
    monkeypatch.setattr(sidepunch.AsyncClient, "aclose", spy)
    with TestClient(app) as web:
        answer = web.post("/reports", json={"account_id": 4, "month": "2026-11"})
        assert answer.status_code == 202
        assert web.post("/reports", json={"account_id": "x"}).status_code == 422
        assert closed == []
    assert closed == [sidepunch.default_async_client()]
    [raw] = r.lrange("queue:reports", 0, -1)
    job = json.loads(raw)
    assert (job["class"], job["args"], job["jid"]) == ("fastapi_app.jobs.BuildReport", [4, "2026-11"],
                                                      answer.json()["jid"])


def test_the_async_job_runs_and_its_result_is_served(app, redis_server):
    with TestClient(app) as web:
        jid = web.post("/reports", json={"account_id": 3, "month": "2026-10"}).json()["jid"]
        assert web.get(f"/reports/{jid}").status_code == 404
        with sidepunch.Manager(concurrency=1, queues=["reports"], redis_url=redis_server.url):
            def served():
                got = web.get(f"/reports/{jid}")
                return got if got.status_code == 200 else None
            answer = wait_for(served, 20, message="the report job to run and its result to be kept")
    assert answer.json() == {"jid": jid, "report": {"account": 3, "month": "2026-10", "rows": 30}}


def test_the_dashboard_is_mounted_with_basic_auth(app, r):
    r.zadd("retry", {json.dumps({"class": "X", "args": [], "jid": "c" * 24, "queue": "default"}): time.time()})
    with TestClient(app) as web:
        refused = web.get("/sidepunch/")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        auth = ("admin", "sesame")
        page = web.get("/sidepunch/retries", auth=auth)
        assert page.status_code == 200 and 'href="/sidepunch/queues"' in page.text
        token = re.search(r'name="authenticity_token" value="([^"]+)"', page.text).group(1)
        done = web.post("/sidepunch/retries/all/delete", data={"authenticity_token": token, "confirm": "yes"},
                        headers=SAME, auth=auth, follow_redirects=False)
        assert done.status_code == 303 and r.zcard("retry") == 0


def test_without_a_password_the_example_mounts_no_dashboard(app, monkeypatch):
    monkeypatch.delenv("DASHBOARD_PASSWORD")
    from fastapi_app import main
    with TestClient(main.create_app()) as web:
        assert web.get("/sidepunch/").status_code == 404
