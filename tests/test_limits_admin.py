"""Rate limits seen and operated from outside, and the feature run directly in a Processor: `sidepunch limits`
(list, reset, --json, exit statuses), the dashboard's Limits tab (listing, reset through CSRF, hostile names
escaped, read-only), LimitSet.waiting_on, and LimitsFeature's endings (rate limited back to the schedule and
waiting; slots given back when the job fails; plain jobs untouched)."""
from __future__ import annotations

import json
import random
import sys

import pytest

import sidepunch
from sidepunch import Outcome
from sidepunch.api import LimitSet
from sidepunch.core import keys, limiting
from sidepunch.core.middleware import MiddlewareContext
from sidepunch.features import FeatureSet
from sidepunch.features.limits import LimitsFeature
from sidepunch.limits import Concurrent, Window
import conftest
from conftest import APPS

sys.path.insert(0, str(APPS))
import limitjobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


def take(r, limiters, token):
    return limiting.take(r, limiting.Scripts().acquire, limiters, token, token, random.Random(1))[0]


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


# --- CLI ----------------------------------------------------------------------------------------------------------

def test_cli_lists_and_resets(r, cli):
    status, out, _ = cli("limits")
    assert status == 0 and "no rate limiters" in out
    take(r, [Concurrent("cli-c", 2)], "a")
    take(r, [Window("cli-w", 1, per=30)], "b")
    take(r, [Window("cli-w", 1, per=30)], "c")
    status, out, _ = cli("limits")
    assert status == 0 and "cli-c" in out and "2 at once (lease 60s)" in out and "1 per 30s" in out
    status, out, _ = cli("limits", "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["cli-c"]["in_use"] == 1 and rows["cli-w"]["waiting"] == 1 and rows["cli-w"]["available"] == 0
    assert cli("limits", "reset", "cli-w")[0] == 0
    assert LimitSet(r).get("cli-w").in_use == 0 and LimitSet(r).get("cli-w").waiting == 0
    assert cli("limits", "reset", "cli-c", "--forget")[0] == 0 and LimitSet(r).get("cli-c") is None
    assert cli("limits", "reset", "missing")[0] == 1
    assert cli("limits", "reset")[0] == 2


def test_cli_survives_hostile_registrations(r, cli):
    r.hset(keys.LIMITS, mapping={"\x1b[31mred": "{", "x": '{"kind":"window","limit":1e999,"per":1}'})
    status, out, _ = cli("limits")
    assert status == 0 and "\x1b" not in out


# --- web ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def web(redis_server, r):
    pytest.importorskip("werkzeug")
    pytest.importorskip("jinja2")
    from werkzeug.test import Client
    from sidepunch.web import create_app
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def test_web_lists_and_resets(web, r):
    from test_web import assert_safe, post
    take(r, [Concurrent("web-c", 2)], "a")
    resp = web.get("/limits")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "web-c" in text and "2 at once" in text and 'href="/limits"' in text
    assert_safe(text)
    assert post(web, "/limits", {"action": "reset", "name": "web-c"}).status_code == 303
    assert LimitSet(r).get("web-c").in_use == 0
    assert post(web, "/limits", {"action": "reset", "name": "nope"}).status_code == 404
    assert post(web, "/limits", {"action": "explode", "name": "web-c"}).status_code == 400
    take(r, [Concurrent("web-c", 2)], "b")
    assert web.post("/limits", data={"action": "reset", "name": "web-c"}).status_code in (400, 403)  # no CSRF
    assert LimitSet(r).get("web-c").in_use == 1


def test_web_escapes_hostile_names_and_read_only_refuses(redis_server, web, r):
    from werkzeug.test import Client
    from sidepunch.web import create_app
    from test_web import assert_safe
    r.hset(keys.LIMITS, '<script>alert(1)</script>"x', '{"kind":"window","limit":1,"per":1}')
    text = web.get("/limits").get_data(as_text=True)
    assert "&lt;script&gt;" in text
    assert_safe(text)
    ro = Client(create_app(redis_server.url, secret_key="test-secret", read_only=True))
    assert "<form" not in ro.get("/limits").get_data(as_text=True)
    assert ro.post("/limits", data={"action": "reset", "name": "x"}).status_code in (403, 405)


# --- the feature, run in a Processor ------------------------------------------------------------------------------

def processor(r):
    feature = LimitsFeature(MiddlewareContext(r))
    return conftest.make_processor(r, "limitjobs", IDENTITY, features=FeatureSet([feature])), feature


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return unit, proc.process(unit)


def test_a_job_over_its_limit_goes_back_to_the_schedule_as_fetched_and_waits(r, client):
    proc, _ = processor(r)
    take(r, [limitjobs.PAIR], "other-1")
    take(r, [limitjobs.PAIR], "other-2")
    jid = client.push({"class": limitjobs.Paired, "args": [0]})
    unit, outcome = run_next(proc)
    assert outcome is Outcome.RATE_LIMITED
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert member == unit.payload  # untouched: no retry_count, no error fields
    assert r.zcard("retry") == r.zcard("dead") == 0 and not r.exists("done")
    assert proc.ctx.counters.take() == (0, 0, {"rate_limited": 1})
    assert LimitSet(r).get("pair").waiting == 1 and LimitSet(r).waiting_on(jid) == ["pair"]


def test_a_failing_job_gives_its_slot_back_and_goes_to_retry(r, client):
    class Failing(limitjobs.Paired):
        def perform(self, seconds):
            raise RuntimeError("boom")

    proc, feature = processor(r)
    proc.ctx.resolver.resolve = lambda name: Failing
    client.push({"class": limitjobs.Paired, "args": [0]})
    assert run_next(proc)[1] is Outcome.RETRY
    assert LimitSet(r).get("pair").in_use == 0 and feature._leases.held() == 0


def test_a_granted_job_leaves_the_waiting_set_and_gives_back(r, client):
    proc, feature = processor(r)
    jid = client.push({"class": limitjobs.PairAndWindow, "args": [0]})
    r.zadd(keys.limit_waiting("pair"), {jid: 1e12})  # it was refused before
    assert run_next(proc)[1] is Outcome.DONE
    info = LimitSet(r).get("pair")
    assert (info.in_use, info.waiting) == (0, 0) and LimitSet(r).get("ten-per-second").in_use == 1
    assert float(r.get(keys.limit_hold("pair"))) >= 0 and feature._leases.held() == 0


def test_a_plain_job_never_reaches_the_feature(r, client):
    proc, feature = processor(r)
    plain = limitjobs.AcquiresInside()
    assert proc.ctx.features.for_run("around_perform", plain, {"class": "x"}, ()) == ()
    assert proc.ctx.features.for_run("around_perform", limitjobs.Paired(), {"class": "x"}, ()) != ()


def test_limits_changed_to_garbage_after_definition_fail_the_job_clearly(r, client):
    class Tampered(limitjobs.Paired):
        pass
    Tampered.limits = ["not a limiter"]  # after the class check: the feature checks again, once
    proc, _ = processor(r)
    proc.ctx.resolver.resolve = lambda name: Tampered
    client.push({"class": limitjobs.Paired, "args": [0]})
    assert run_next(proc)[1] is Outcome.RETRY
    [entry] = r.zrange("retry", 0, -1)
    assert b"limits must hold sidepunch.limits limiters" in entry


def test_conflicting_definitions_are_logged_once(r, client, caplog):
    take(r, [Concurrent("pair", 7)], "older-deploy")
    proc, _ = processor(r)
    for _ in range(2):
        client.push({"class": limitjobs.Paired, "args": [0]})
        assert run_next(proc)[1] is Outcome.DONE
    assert sum("defined differently" in rec.getMessage() for rec in caplog.records) == 1


def test_limits_set_per_instance_are_honoured_and_not_cached(r, client):
    class PerInstance(limitjobs.Paired):
        def __init__(self):
            self.limits = [Window("per-instance", 1, per=30)]

    proc, feature = processor(r)
    proc.ctx.resolver.resolve = lambda name: PerInstance
    client.push({"class": limitjobs.Paired, "args": [0]})
    client.push({"class": limitjobs.Paired, "args": [0]})
    assert run_next(proc)[1] is Outcome.DONE and run_next(proc)[1] is Outcome.RATE_LIMITED
    assert feature._plans == {}


def test_a_scheduled_job_waiting_on_a_limiter_names_it_on_its_page(web, r):
    from test_web import assert_safe
    take(r, [Window("page-w", 1, per=30)], "first")
    take(r, [Window("page-w", 1, per=30)], "waiter")  # refused: waits on page-w
    r.zadd("schedule", {json.dumps({"class": "X", "args": [], "jid": "waiter", "queue": "default"}): 2e9,
                        json.dumps({"class": "X", "args": [], "jid": "other", "queue": "default"}): 2e9 + 1})
    pages = {}
    for jid in ("waiter", "other"):
        entry = next(e for e in sidepunch.api.ScheduledSet(r) if e.jid == jid)
        pages[jid] = web.get(f"/scheduled/{entry.score!r}-{entry.id}").get_data(as_text=True)
    assert "Rate limited by" in pages["waiter"] and "page-w" in pages["waiter"]
    assert "Rate limited by" not in pages["other"]
    assert_safe(pages["waiter"])
