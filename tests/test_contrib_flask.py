"""sidepunch.contrib.flask through the example app in examples/flask_app: config from app.config, enqueueing
from a route into the real Redis, the job run from there, and the dashboard mounted under its prefix behind the
app's auth hook (which sees Flask's session)."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from flask import Flask

import sidepunch
import sidepunch.testing
from sidepunch.client import push as push_module
from sidepunch.contrib.flask import Sidepunch

from conftest import ROOT, wait_for

SAME = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture(autouse=True)
def keep_default_client(monkeypatch):
    monkeypatch.setattr(push_module, "_default", push_module._default)  # init_app configures; put it back


@pytest.fixture
def example(redis_server, r, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import flask_app
    app = flask_app.create_app({"SIDEPUNCH_REDIS_URL": redis_server.url, "ADMIN_PASSWORD": "sesame",
                                "TESTING": True})
    return app.test_client()


def test_init_app_reads_app_config(redis_server, r):
    calls = []
    app = Flask("t")
    app.config.update(SIDEPUNCH_REDIS_URL=redis_server.url, SIDEPUNCH_DASHBOARD=None,
                      SIDEPUNCH_MIDDLEWARE=[lambda job, call_next: calls.append(job["args"]) or call_next(job)])
    ext = Sidepunch()
    ext.init_app(app)
    assert app.extensions["sidepunch"] is ext
    assert sidepunch.default_client().redis_url == redis_server.url
    sidepunch.default_client().push({"class": "X", "args": [1]})
    assert calls == [[1]] and r.llen("queue:default") == 1
    assert app.test_client().get("/sidepunch/").status_code == 404  # not mounted


@pytest.mark.parametrize("config, error", [
    ({"SIDEPUNCH_REDIS_URL": "http://nope"}, ValueError),
    ({"SIDEPUNCH_MIDDLEWARE": "a.b.c"}, TypeError),
    ({"SIDEPUNCH_MIDDLEWARE": ["nowhere.at_all.mw"]}, ImportError),
    ({"SIDEPUNCH_DASHBOARD": "sidepunch"}, ValueError),
    ({"SIDEPUNCH_DASHBOARD": "/sidepunch/"}, ValueError),
])
def test_bad_config_raises_from_init_app_and_changes_nothing(config, error):
    before = sidepunch.default_client()
    app = Flask("t")
    app.config.update(config)
    with pytest.raises(error):
        Sidepunch(app)
    assert sidepunch.default_client() is before and "sidepunch" not in app.extensions


def test_a_route_enqueues_and_the_job_runs(example, r):
    assert example.post("/signup", json={"email": "nope"}).status_code == 400
    answer = example.post("/signup", json={"email": "ann@example.com"})
    assert answer.status_code == 202
    [raw] = r.lrange("queue:mail", 0, -1)
    job = json.loads(raw)
    assert (job["class"], job["args"], job["jid"]) == ("flask_app.jobs.SendWelcome", ["ann@example.com", "welcome"],
                                                      answer.get_json()["jid"])
    with sidepunch.testing.inline() as mode:
        example.post("/signup", json={"email": "bob@example.com"})
    assert [p["args"] for p in mode.performed] == [["bob@example.com", "welcome"]]


def test_the_dashboard_is_mounted_behind_the_auth_hook(example):
    assert example.get("/sidepunch/").status_code == 403  # nobody logged in
    assert example.post("/login", data={"password": "wrong"}).status_code == 403
    assert example.get("/sidepunch/queues").status_code == 403
    assert example.post("/login", data={"password": "sesame"}).status_code == 200
    page = example.get("/sidepunch/queues")
    assert page.status_code == 200 and 'href="/sidepunch/retries"' in page.get_data(as_text=True)
    assert example.get("/signup").status_code == 405  # the app itself is still there


def test_dashboard_actions_work_in_the_mount(example, r):
    r.zadd("retry", {json.dumps({"class": "X", "args": [], "jid": "b" * 24, "queue": "default"}): time.time()})
    example.post("/login", data={"password": "sesame"})
    page = example.get("/sidepunch/retries").get_data(as_text=True)
    token = re.search(r'name="authenticity_token" value="([^"]+)"', page).group(1)
    done = example.post("/sidepunch/retries/all/delete", data={"authenticity_token": token, "confirm": "yes"},
                        headers=SAME)
    assert done.status_code == 303 and r.zcard("retry") == 0


def test_without_an_auth_hook_the_dashboard_refuses_everyone(redis_server):
    app = Flask("t")
    app.config.update(SIDEPUNCH_REDIS_URL=redis_server.url, SIDEPUNCH_DASHBOARD="/admin/jobs", SECRET_KEY="k")
    ext = Sidepunch(app)
    web = app.test_client()
    assert web.get("/admin/jobs/").status_code == 403
    ext.dashboard_auth(lambda request: request.headers.get("X-Admin") == "yes")  # set after init_app: applies
    assert web.get("/admin/jobs/", headers={"X-Admin": "yes"}).status_code == 200
    assert web.get("/admin/jobs/", headers={"X-Admin": "no"}).status_code == 403


def test_init_app_twice_on_one_app_is_refused(redis_server):
    app = Flask("t")
    app.config.update(SIDEPUNCH_REDIS_URL=redis_server.url)
    Sidepunch(app)
    with pytest.raises(RuntimeError, match="already"):
        Sidepunch(app)


def test_sidepunchd_runs_the_example_job(example, daemon, r):
    """What the example's README says: `sidepunchd -r flask_app.jobs -q mail`, from examples/."""
    started = daemon("-r", "flask_app.jobs", "-q", "mail", "-w", "1", "-c", "1",
                     env={"PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(ROOT)])})
    jid = example.post("/signup", json={"email": "cy@example.com"}).get_json()["jid"]
    started.wait_log(f"done flask_app.jobs.SendWelcome jid={jid}", timeout=30)
    wait_for(lambda: r.get("stat:processed") == b"1", 15, message="the processed count (flushed with a beat)")
    assert r.llen("queue:mail") == 0
