"""sidepunch.contrib.django, through the example project in examples/django_app (a shop whose orders are
processed by a job): settings, on-commit enqueueing against sqlite and the real Redis, the dashboard in urls.py
behind Django's auth, and one real `manage.py sidepunchd` run that finds orders/jobs.py by itself.

Django is set up once for this module (it cannot be set up twice in a process), with the shop's settings reading
the test Redis URL and a sqlite file in a temporary folder.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import sidepunch
import sidepunch.testing
from sidepunch.client import push as push_module

from conftest import ROOT, Daemon, wait_for

DJANGO_APP = ROOT / "examples" / "django_app"
SAME = {"HTTP_SEC_FETCH_SITE": "same-origin"}


@pytest.fixture(scope="module")
def shop(redis_server, tmp_path_factory):
    """The example project, set up in this process; yields the sqlite file's path."""
    import django
    from django.core.management import call_command
    db = tmp_path_factory.mktemp("shop") / "shop.sqlite3"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REDIS_URL", redis_server.url)
        mp.setenv("SHOP_DB", str(db))
        mp.setenv("DJANGO_SETTINGS_MODULE", "shop.settings")
        mp.syspath_prepend(str(DJANGO_APP))
        mp.setattr(push_module, "_default", push_module._default)  # ready() configures; put it back after
        django.setup()
        logging.captureWarnings(False)  # Django's logging setup routes warnings to logging; keep this process's as is
        call_command("migrate", verbosity=0)
        yield db


@pytest.fixture
def web(shop, r):
    from django.test import Client
    from orders.models import Order
    Order.objects.all().delete()
    return Client()


def _queued(r, queue="orders"):
    return [json.loads(raw) for raw in reversed(r.lrange(f"queue:{queue}", 0, -1))]


# -- settings ---------------------------------------------------------------------------------------------------

def test_the_app_configures_the_client_from_settings(shop, redis_server):
    from sidepunch.contrib.django.db import CloseOldConnections
    client = sidepunch.default_client()
    assert client.redis_url == redis_server.url
    assert any(isinstance(mw, CloseOldConnections) for mw in client.middleware)


@pytest.mark.parametrize("value, says", [
    ({"REDIS_URLS": "redis://x"}, "unknown key(s) REDIS_URLS"),
    ({"REDIS_URL": 6379}, "must be a str"),
    ({"REDIS_URL": "http://localhost"}, "SIDEPUNCH['REDIS_URL']"),
    ({"MIDDLEWARE": "orders.jobs.ProcessOrder"}, "must be a list"),
    ({"MIDDLEWARE": ["orders.nowhere.Thing"]}, "SIDEPUNCH['MIDDLEWARE']"),
    ({"MIDDLEWARE": ["orders.jobs.NoSuchName"]}, "SIDEPUNCH['MIDDLEWARE']"),
    (["REDIS_URL"], "must be a dict"),
])
def test_bad_settings_are_refused_naming_the_key(shop, value, says):
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings
    from sidepunch.contrib.django.conf import read_options
    with override_settings(SIDEPUNCH=value), pytest.raises(ImproperlyConfigured, match=re.escape(says)):
        read_options()


def test_the_jobs_modules_of_installed_apps_are_found(shop):
    from sidepunch.contrib.django.conf import jobs_modules
    assert jobs_modules() == ["orders.jobs"]  # django.contrib.* and sidepunch's own app have none


def test_the_command_passes_sidepunchd_options_and_drops_djangos():
    from sidepunch.contrib.django.management.commands.sidepunchd import daemon_args, split_django_options
    args, skip = split_django_options(["--settings", "a.b", "-w", "2", "--pythonpath=/x", "--skip-checks", "-v",
                                       "--traceback", "-q", "orders"])
    assert (args, skip) == (["-w", "2", "-v", "-q", "orders"], True)
    assert daemon_args(["-w", "2", "--redis-url", "redis://given"], ["orders.jobs"], "redis://settings") == [
        "-r", "orders.jobs", "--redis-url", "redis://settings", "-w", "2", "--redis-url", "redis://given"]
    assert daemon_args([], ["a.jobs", "b.jobs"], None) == ["-r", "a.jobs", "-r", "b.jobs"]


# -- on commit ---------------------------------------------------------------------------------------------------

def test_a_committed_order_is_enqueued_once_the_row_is_visible(web, r, monkeypatch):
    """The write happens after the commit: another connection (another thread) already sees the row then."""
    from orders.models import Order
    client = sidepunch.default_client()
    seen = []

    def spy(entries):
        order_id = json.loads(entries[0][2])["args"][0]
        probe = threading.Thread(target=lambda: seen.append(Order.objects.filter(pk=order_id).exists()))
        probe.start()
        probe.join()
        return type(client).write(client, entries)

    monkeypatch.setattr(client, "write", spy)
    answer = web.post("/orders/", {"item": "teapot"})
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert seen == [True]
    [job] = _queued(r)
    assert (job["class"], job["args"], job["jid"]) == ("orders.jobs.ProcessOrder", [body["id"]], body["jid"])


def test_a_rolled_back_order_enqueues_nothing(web, r):
    from orders.models import Order
    assert web.post("/orders/", {"item": "out of stock"}).status_code == 409
    assert not Order.objects.exists()
    assert r.llen("queue:orders") == 0 and r.zcard("schedule") == 0


def test_nothing_is_written_before_the_commit_and_a_rolled_back_savepoint_drops_its_jobs(web, r):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from sidepunch.contrib.django import on_commit
    with transaction.atomic():
        kept = on_commit(ProcessOrder).perform_async(1)
        try:
            with transaction.atomic():
                on_commit(ProcessOrder.set(queue="other")).perform_async(2)
                on_commit(ProcessOrder).perform_in(60, 3)
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        later = on_commit(ProcessOrder).perform_bulk([[4], [5]])
        scheduled = on_commit(ProcessOrder).perform_in(60, 6)
        assert r.llen("queue:orders") == 0 and r.zcard("schedule") == 0
    assert [(j["jid"], j["args"]) for j in _queued(r)] == [(kept, [1]), (later[0], [4]), (later[1], [5])]
    assert [json.loads(raw)["jid"] for raw in r.zrange("schedule", 0, -1)] == [scheduled]
    assert r.llen("queue:other") == 0


def test_a_bad_argument_raises_at_the_call_inside_the_transaction(web, r):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from orders.models import Order
    from sidepunch.contrib.django import on_commit
    with pytest.raises(TypeError):
        with transaction.atomic():
            Order.objects.create(item="x")
            on_commit(ProcessOrder).perform_async(object())
    assert not Order.objects.exists() and r.llen("queue:orders") == 0


def test_in_autocommit_the_push_is_written_at_once(web, r):
    from orders.jobs import ProcessOrder
    from sidepunch.contrib.django import on_commit
    jid = on_commit(ProcessOrder).perform_async(9)
    assert [j["jid"] for j in _queued(r)] == [jid]
    with pytest.raises(TypeError, match="sync"):
        import asyncio
        asyncio.run(on_commit(ProcessOrder).aperform_async(9))


def test_a_write_that_fails_after_the_commit_is_logged_with_its_payload(web, r, caplog):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from sidepunch.contrib.django import on_commit

    def refuse(entries):
        raise ConnectionError("redis is down")

    broken = sidepunch.Client(writer=refuse)
    ran = []
    with caplog.at_level(logging.ERROR, logger="sidepunch.django"):
        with transaction.atomic():
            jid = on_commit(ProcessOrder, client=broken).perform_async(7)
            transaction.on_commit(lambda: ran.append("next callback"))
    assert ran == ["next callback"]  # one failed write does not stop the other on-commit callbacks
    [record] = [rec for rec in caplog.records if rec.name == "sidepunch.django"]
    assert jid in record.getMessage() and "redis is down" in caplog.text


def test_the_testing_modes_get_on_commit_pushes_at_the_commit(web, r):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from sidepunch.contrib.django import on_commit
    with sidepunch.testing.fake() as jobs:
        with transaction.atomic():
            on_commit(ProcessOrder).perform_async(1)
            assert jobs.jobs() == []
        try:
            with transaction.atomic():
                on_commit(ProcessOrder).perform_async(2)
                raise RuntimeError
        except RuntimeError:
            pass
        assert [j["args"] for j in jobs.jobs(ProcessOrder)] == [[1]]
    assert r.llen("queue:orders") == 0


# -- the dashboard -----------------------------------------------------------------------------------------------

def _user(username, staff):
    from django.contrib.auth.models import User
    User.objects.filter(username=username).delete()
    return User.objects.create_user(username, password="pw-" + username, is_staff=staff)


def test_the_dashboard_is_for_staff_only(web):
    anonymous = web.get("/sidepunch/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/?next=/sidepunch/")
    web.force_login(_user("customer", staff=False))
    assert web.get("/sidepunch/queues").status_code == 403
    web.force_login(_user("clerk", staff=True))
    page = web.get("/sidepunch/queues")
    assert page.status_code == 200 and b"Queues" in page.content
    assert 'href="/sidepunch/retries"' in page.content.decode()  # links carry the mount point


def test_dashboard_actions_work_through_django_with_the_dashboards_own_csrf(web, r):
    r.zadd("retry", {json.dumps({"class": "orders.jobs.ProcessOrder", "args": [1], "jid": "a" * 24,
                                 "queue": "orders", "retry_count": 0}): time.time() + 60})
    web.force_login(_user("clerk", staff=True))
    page = web.get("/sidepunch/retries")
    cookie = page.cookies["sidepunch_session"]
    assert cookie["path"] == "/sidepunch" and cookie["httponly"] and cookie["samesite"] == "Strict"
    token = re.search(r'name="authenticity_token" value="([^"]+)"', page.content.decode()).group(1)
    forged = web.post("/sidepunch/retries/all/delete", {"authenticity_token": "forged", "confirm": "yes"}, **SAME)
    assert forged.status_code == 403 and r.zcard("retry") == 1
    done = web.post("/sidepunch/retries/all/delete", {"authenticity_token": token, "confirm": "yes"}, **SAME)
    assert done.status_code == 303 and done["Location"].startswith("/sidepunch/retries")
    assert r.zcard("retry") == 0


# -- the daemon --------------------------------------------------------------------------------------------------

class ManagePy(Daemon):
    """`python manage.py sidepunchd ...` in examples/django_app, in its own process group (conftest's Daemon
    cleans it up by pid)."""

    def __init__(self, args, env, tmp_path):
        self.logfile = tmp_path / "manage-sidepunchd.log"
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **env)
        full_env.pop("REDIS_PROVIDER", None)
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "manage.py", "sidepunchd", *args], cwd=DJANGO_APP,
                                         env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid


def test_manage_py_sidepunchd_runs_the_jobs_of_installed_apps(web, shop, redis_server, r, tmp_path):
    """No -r: the worker loads orders/jobs.py by itself, with Django set up, and the job uses the ORM."""
    from orders.models import Order
    env = {"REDIS_URL": redis_server.url, "SHOP_DB": str(shop), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    daemon = ManagePy(["-w", "1", "-c", "2", "-q", "orders", "--timeout", "5"], env, tmp_path)
    try:
        created = web.post("/orders/", {"item": "kettle"}).json()
        order = wait_for(lambda: Order.objects.filter(pk=created["id"], status="processed").first(), 30,
                         message="the order processed by the daemon's worker")
        assert order.processed_by not in (None, os.getpid(), daemon.pid)  # a forked worker ran it
        daemon.wait_log(f"done orders.jobs.ProcessOrder jid={created['jid']}")  # logged just after the save
        daemon.signal(15)
        assert daemon.wait() == 0
    finally:
        daemon.kill_group(redis_server)
    assert "Traceback" not in daemon.log()


def test_manage_py_sidepunchd_refuses_a_bad_option_in_one_line(shop, redis_server, tmp_path):
    env = {"REDIS_URL": redis_server.url, "SHOP_DB": str(shop), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    daemon = ManagePy(["--workers", "0"], env, tmp_path)
    try:
        assert daemon.wait(60) == 2
    finally:
        daemon.kill_group(redis_server)
    assert daemon.log().strip().splitlines() == [
        "sidepunchd: error: --workers: must be at least 1, got '0' (allowed: 1 to 1,024)"]


def test_the_dashboard_serves_asgi_requests_too(web):
    """Under ASGI the request has no WSGI environ; the view builds one (Django's AsyncClient goes through ASGI)."""
    import asyncio
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient
    user = _user("clerk", staff=True)

    async def visit():
        client = AsyncClient()
        await sync_to_async(client.force_login)(user)
        return await client.get("/sidepunch/queues", headers={"Sec-Fetch-Site": "same-origin"})
    page = asyncio.run(visit())
    assert page.status_code == 200 and 'href="/sidepunch/retries"' in page.content.decode()
    assert page.cookies["sidepunch_session"]["path"] == "/sidepunch"


def test_on_commit_keeps_the_job_signature_for_type_checkers(tmp_path):
    """mypy flags exactly the calls that perform would refuse (as for Job.set; see tests/test_typing.py)."""
    calls = tmp_path / "calls.py"
    calls.write_text(TYPED_CALLS)
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           "--follow-imports=silent", "--ignore-missing-imports", "--no-error-summary", str(calls)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    flagged = sorted({int(line.split(":")[1]) for line in done.stdout.splitlines() if ": error:" in line})
    wrong = sorted(n for n, line in enumerate(TYPED_CALLS.splitlines(), 1) if line.endswith("# wrong"))
    assert flagged == wrong, done.stdout + done.stderr


TYPED_CALLS = '''\
import sidepunch
from sidepunch.contrib.django import on_commit


class Ship(sidepunch.Job):
    def perform(self, order_id: int, fast: bool = False) -> None: ...


@sidepunch.job(queue="x")
def notify(user: str) -> None: ...


on_commit(Ship).perform_async(1)
on_commit(Ship).perform_async(1, fast=True)
on_commit(Ship.set(queue="low"), using="other").perform_in(5, 2)
on_commit(notify).perform_async("ann")
on_commit(Ship).perform_async("one")  # wrong
on_commit(notify).perform_async(3)  # wrong
on_commit(Ship.set(queue="low")).perform_async()  # wrong
on_commit(Ship).perform_bulk([[1], [2]])
'''


def test_every_dashboard_path_reaches_the_dashboard(web, r, redis_server):
    """Names with a newline, a slash or non-ASCII reach the dashboard as they do standalone: same answers."""
    from django.urls import reverse
    from werkzeug.test import Client as WsgiClient
    from sidepunch.web import create_app
    assert reverse("sidepunch-dashboard", kwargs={"path": ""}) == "/sidepunch/"
    for name in ["a\nb", "ünï", "a/b", "%41"]:
        r.lpush(f"queue:{name}", json.dumps({"class": "X", "args": [], "jid": "d" * 24, "queue": name}))
        r.sadd("queues", name)
    standalone = WsgiClient(create_app(redis_server.url))
    web.force_login(_user("clerk", staff=True))
    links = re.findall(r'href="/sidepunch(/queues/[^"]+)"', web.get("/sidepunch/queues").content.decode())
    assert len(links) == 4
    shown = 0
    for link in links:
        mounted, alone = web.get("/sidepunch" + link), standalone.get(link)
        assert mounted.status_code == alone.status_code, link
        assert ("d" * 24 in mounted.content.decode()) == ("d" * 24 in alone.get_data(as_text=True)), link
        shown += "d" * 24 in mounted.content.decode()
    assert shown >= 3  # the newline one is a 404 standalone too (Werkzeug's path converter stops at a newline)


def test_under_inline_mode_the_job_runs_at_the_commit_and_its_error_reaches_the_test(web):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from orders.models import Order
    from sidepunch.contrib.django import on_commit
    with sidepunch.testing.inline() as mode:
        with transaction.atomic():
            order = Order.objects.create(item="lamp")
            on_commit(ProcessOrder).perform_async(order.pk)
            assert mode.performed == []
        assert Order.objects.get(pk=order.pk).status == "processed"
        with pytest.raises(Order.DoesNotExist):
            with transaction.atomic():
                on_commit(ProcessOrder).perform_async(10 ** 9)  # no such order: the job raises at the commit


def test_manual_transaction_management_is_refused_as_django_refuses_on_commit(web, r):
    from django.db import transaction
    from orders.jobs import ProcessOrder
    from sidepunch.contrib.django import on_commit
    transaction.set_autocommit(False)
    try:
        with pytest.raises(transaction.TransactionManagementError):
            on_commit(ProcessOrder).perform_async(1)
    finally:
        transaction.rollback()
        transaction.set_autocommit(True)
    assert r.llen("queue:orders") == 0


def test_manage_py_sidepunchd_help_lists_the_daemons_options(shop, redis_server):
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=redis_server.url, SHOP_DB=str(shop),
               DJANGO_SETTINGS_MODULE="shop.settings")
    done = subprocess.run([sys.executable, "manage.py", "sidepunchd", "--help"], cwd=DJANGO_APP, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--workers" in done.stdout and "--require" in done.stdout, done.stderr
