"""The dashboard's Batches tab: the list with progress bars, a batch's page (pending and failed jobs, nested
batches), a job's page naming its batch, and hostile descriptions and ids escaped."""
from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from werkzeug.test import Client  # noqa: E402

import sidepunch  # noqa: E402
from sidepunch.core import keys  # noqa: E402
from sidepunch.web import create_app  # noqa: E402
from conftest import APPS  # noqa: E402
from test_web import assert_safe  # noqa: E402

sys.path.insert(0, str(APPS))
import batchjobs  # noqa: E402


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r, redis_server):
    sidepunch.configure(redis_server.url)
    yield
    sidepunch.configure(redis=r)


@pytest.fixture
def web(redis_server, r):
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def test_the_list_shows_each_batch_with_its_progress(web, r):
    parent, child = sidepunch.Batch(description="parent <b>bold</b>"), sidepunch.Batch(description="child")
    with parent:
        batchjobs.Work.perform_bulk([[1], [2]])
        with child:
            batchjobs.Work.perform_async(3)
    jid = json.loads(r.lindex("queue:default", -1))["jid"]
    r.hset(keys.batch(parent.bid), "pending", 1)  # as if half of it succeeded
    text = web.get("/batches").get_data(as_text=True)
    assert parent.bid in text and child.bid in text and "parent &lt;b&gt;bold&lt;/b&gt;" in text
    assert 'class="batch-progress"' in text and 'width="66.67"' in text and 'href="/batches"' in text
    assert_safe(text)
    page = web.get(f"/batches/{parent.bid}").get_data(as_text=True)
    assert "Nested batches" in page and child.bid in page and jid in page and "Pending jobs" in page
    assert web.get(f"/batches/{child.bid}").get_data(as_text=True).count(parent.bid) >= 1


def test_an_unknown_batch_is_a_404_and_hostile_data_is_escaped(web, r):
    assert web.get("/batches/nope").status_code == 404
    r.hset(keys.batch("evilbatch"), mapping={"description": '<script>alert(1)</script>"', "total": "x"})
    r.zadd(keys.BATCHES, {"evilbatch": 1, "<img src=x>": 2})
    assert web.get("/batches/a:b").status_code == 404
    for path in ("/batches", "/batches/evilbatch"):
        resp = web.get(path)
        assert resp.status_code == 200 and "<script>alert" not in resp.get_data(as_text=True)
        assert_safe(resp.get_data(as_text=True))


def test_a_job_page_names_its_batch(web, r):
    batch = sidepunch.Batch()
    with batch:
        jid = batchjobs.Work.perform_in(60, 1)
    payload = r.zrange("schedule", 0, 0)[0]
    score = r.zscore("schedule", payload)
    listing = web.get("/scheduled").get_data(as_text=True)
    assert jid in listing
    import re
    link = re.search(r'href="(/scheduled/[^"]+)"', listing).group(1)
    page = web.get(link.replace("&amp;", "&")).get_data(as_text=True)
    assert f'href="/batches/{batch.bid}"' in page and score
