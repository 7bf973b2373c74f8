"""The dashboard's /metrics pages and /busy's per-process counts through Werkzeug's test client against a real
Redis: data the heartbeat really flushed, every window, hostile class names (markup, bytes that are not UTF-8,
`|` and `/` in names) shown escaped and reachable by their links, and hostile metrics data."""
from __future__ import annotations

import html as htmllib
import logging
import re
import time

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from werkzeug.test import Client  # noqa: E402

import webdata  # noqa: E402
from sidepunch.core import keys  # noqa: E402
from sidepunch.core.connection import Outage  # noqa: E402
from sidepunch.server.heartbeat import Heartbeat  # noqa: E402
from sidepunch.server.state import ChildContext, LifecycleState  # noqa: E402
from sidepunch.web import create_app  # noqa: E402
from test_web import assert_safe  # noqa: E402


@pytest.fixture
def web(redis_server, r):
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def page(web, path: str) -> str:
    resp = web.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    text = resp.get_data(as_text=True)
    assert_safe(text)
    return text


def class_links(text: str) -> list[tuple[str, str]]:
    """(href, shown name) of each class on /metrics."""
    return [(htmllib.unescape(h), htmllib.unescape(n))
            for h, n in re.findall(r'<a class="metrics-class" href="([^"]+)">([^<]*)</a>', text)]


def flush(r, redis_server, jobs) -> None:
    """Record (class, failed, seconds) jobs and flush them with a real heartbeat."""
    ctx = ChildContext(redis=r, config=None, identity="web-metrics:1:abcdef", state=LifecycleState(),
                       outage=Outage(redis_server.url, logging.getLogger("test")), resolver=None, retry=None)
    for klass, failed, seconds in jobs:
        ctx.counters.record(failed, False, klass, seconds)
    assert Heartbeat(ctx, {"hostname": "web-metrics"}, on_signal=lambda name: None).beat()


def test_metrics_lists_each_class_with_its_numbers_and_links_to_its_page(web, r, redis_server):
    flush(r, redis_server, [("app.Mailer", False, 0.010)] * 3 + [("app.Mailer", True, 0.030),
                                                                  ("app.Report", False, 2.0)])
    text = page(web, "/metrics")
    assert class_links(text) == [("/metrics/app.Report?hours=1", "app.Report"),
                                 ("/metrics/app.Mailer?hours=1", "app.Mailer")]
    row = re.search(r'app\.Mailer</a></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>',
                    text).groups()
    assert row == ("4", "1", "0.1 s", "15.00 ms")
    detail = page(web, "/metrics/app.Mailer")
    assert re.search(r'id="m-processed">4<', detail) and re.search(r'id="m-failed">1<', detail)
    assert len(re.findall(r"<rect ", detail.split('id="histogram-chart"')[1].split("</svg>")[0])) == 17
    assert "<title>&lt; 25 ms: 3</title>" in detail and "<title>&lt; 50 ms: 1</title>" in detail
    series = detail.split('id="series-chart"')[1].split("</svg>")[0]
    assert len(re.findall(r'<rect class="processed"', series)) == 1  # one minute had jobs
    assert "per minute" in detail


@pytest.mark.parametrize("hours", ["1", "2", "4", "8", "24", "48", "72", "3", "0", "-1", "x" * 50, ""])
def test_every_window_and_odd_ones(web, r, hours):
    webdata.populate(r, hostile=False)
    shown = hours if hours in {"1", "2", "4", "8", "24", "48", "72"} else "1"
    text = page(web, f"/metrics?hours={hours}")
    assert f"<b>{shown} h</b>" in text and "app.Mailer" in text
    detail = page(web, f"/metrics/app.Mailer?hours={hours}")
    assert f"<b>{shown} h</b>" in detail
    slots = int(shown) * (60 if int(shown) <= 8 else 6)
    assert detail.count("<title>") >= 17 and re.search(r'id="m-processed">770<', detail), slots


def test_an_empty_window_and_an_unknown_class_render(web, r):
    text = page(web, "/metrics")
    assert "No jobs ended in this window" in text
    detail = page(web, "/metrics/No.Such.Class?hours=72")
    assert re.search(r'id="m-processed">0<', detail) and "No.Such.Class" in detail


@pytest.mark.parametrize("name", ['<script>window.__xss=1</script>', '"><img src=x onerror=alert(1)>', "a|b|p",
                                  "a/b/../c", "~x41", "Ωmega ☃", "%2e%2e", "?hours=8&x", "sp ace", "#frag"])
def test_hostile_class_names_show_as_text_and_their_links_work(web, r, redis_server, name):
    flush(r, redis_server, [(name, True, 0.004), ("Plain", False, 0.001)])
    text = page(web, "/metrics")
    links = dict((shown, href) for href, shown in class_links(text))
    assert set(links) == {name, "Plain"}
    detail = page(web, links[name])
    assert re.search(r'id="m-processed">1<', detail) and re.search(r'id="m-failed">1<', detail)
    heading = re.search(r"<h1>(.*?)</h1>", detail).group(1)
    assert htmllib.unescape(heading.split("</a> / ", 1)[1]) == name


def test_a_class_name_that_is_not_utf8_is_reachable(web, r):
    slot = keys.metrics_slot(time.time(), 60)
    r.hset(keys.metrics_jobs(60, slot), mapping={b"Bad\xff<b>|p": 2, b"Bad\xff<b>|ms": 10})
    r.hset(keys.metrics_histogram(60, slot, b"Bad\xff<b>"), mapping={"1": 2})
    [(href, shown)] = class_links(page(web, "/metrics"))
    assert shown == "Bad\\xff<b>" and href.startswith("/metrics/~x")
    detail = page(web, href)
    assert re.search(r'id="m-processed">2<', detail) and "<title>&lt; 2.5 ms: 2</title>" in detail


def test_hostile_metrics_data_does_not_break_the_pages(web, r):
    slot = keys.metrics_slot(time.time(), 60)
    r.hset(keys.metrics_jobs(60, slot), mapping={"A|p": "NaN", "A|ms": "-1", "B|p": "1" * 100, "C|p": 1,
                                                 "C|ms": "1e9", "|p": 3, "nobar": 1})
    r.set(keys.metrics_histogram(60, slot, "C"), "not a hash")
    r.set(keys.metrics_jobs(60, keys.metrics_slot(time.time() - 60, 60)), "not a hash")
    r.set(keys.metrics_jobs(600, keys.metrics_slot(time.time(), 600)), "not a hash")
    text = page(web, "/metrics")
    assert [shown for _, shown in class_links(text)] == ["", "C"]
    for href, _ in class_links(text):
        page(web, href)
    page(web, "/metrics?hours=72")
    page(web, "/metrics/C?hours=72")


def test_busy_shows_each_processs_processed_and_failed(web, r):
    webdata.populate(r, hostile=False)
    text = page(web, "/busy")
    assert '<td class="processed-count">4,321</td>' in text and '<td class="failed-count">87</td>' in text
    r.hset(keys.process(webdata.IDENTITY), mapping={keys.PROCESS_PROCESSED: "x<script>", keys.PROCESS_FAILED: ""})
    text = page(web, "/busy")
    assert '<td class="processed-count">0</td>' in text and '<td class="failed-count">0</td>' in text


def test_the_metrics_tab_is_in_the_navigation(web, r):
    text = page(web, "/")
    assert re.search(r'<a href="/metrics"\s*>Metrics</a>', text)
    assert re.search(r'<a href="/metrics" class="active">Metrics</a>', page(web, "/metrics"))
