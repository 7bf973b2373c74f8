"""The dashboard in a real browser: headless Chromium driven by Selenium against a live server and a real Redis.

Loads every page with a populated Redis and follows its links, performs Retry all, Delete, Kill and Quiet by
clicking and checks Redis afterwards, shows hostile job data as text without running it, and refuses a forged
cross-site POST. Skipped (with the reason) when Chromium, chromedriver or Selenium are missing; with $CI set
they are required, so a CI machine without them fails instead of skipping.
"""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

import webdata
from sidepunch.core import keys

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError as exc:
        return f"Selenium or the web extra is not installed ({exc})"
    if not CHROMIUM or not DRIVER:
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"the browser tests are required in CI: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


class Served:
    """A WSGI app on a real socket in a thread (Werkzeug's threaded test server), stopped by `close`."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        from werkzeug.serving import make_server
        self.server = make_server(host, 0, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


@pytest.fixture
def live(redis_server, r):
    from sidepunch.web import create_app
    webdata.populate(r)
    served = Served(create_app(redis_server.url))
    yield served
    served.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def by(css):
    from selenium.webdriver.common.by import By
    return By.CSS_SELECTOR, css


def no_injection(driver) -> None:
    """Nothing from job data ran: no flag set by a payload, no alert open, no element a payload would add."""
    from selenium.common.exceptions import NoAlertPresentException
    assert driver.execute_script("return window.__xss === undefined")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text
    assert driver.find_elements(*by("main img, main svg[onload], main script")) == []


def click(driver, css: str) -> None:
    """Click an element of the page a previous click submitted, once that page has loaded."""
    wait_until(lambda: driver.find_elements(*by(css)))
    driver.find_element(*by(css)).click()


def notice(driver) -> str:
    """The notice of the page a click submitted, once it has loaded."""
    wait_until(lambda: driver.find_elements(*by(".notice")))
    return driver.find_element(*by(".notice")).text


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_every_page_and_its_links(live, browser):
    browser.get(live.url + "/")
    tabs = [a.get_attribute("href") for a in browser.find_elements(*by("header nav a"))]
    from sidepunch.web.app import TABS
    assert len(tabs) == len(TABS) >= 11  # Metrics, Periodic, Batches and the rest
    seen = set()
    for tab in tabs:
        browser.get(tab)
        links = [a.get_attribute("href") for a in browser.find_elements(*by("main a[href]"))]
        for link in [tab] + [x for x in links if x and x.startswith(live.url)][:15]:
            if link in seen:
                continue
            seen.add(link)
            browser.get(link)
            assert "Could not do that" not in browser.page_source, link
            assert browser.find_element(*by(".summary")).is_displayed()
            no_injection(browser)
    assert len(seen) > 30


def test_live_polling_updates_the_summary_bar(live, browser, r):
    browser.get(live.url + "/")
    wait_until(lambda: browser.find_element(*by("[data-stat=processed]")).text == "1,234")
    r.set(keys.STAT_PROCESSED, 99999)
    wait_until(lambda: browser.find_element(*by("[data-stat=processed]")).text == "99,999", timeout=15)
    wait_until(lambda: browser.find_element(*by("#live")).is_displayed(), timeout=15)


def test_retry_all_by_clicking(live, browser, r):
    queued = r.llen("queue:default")
    browser.get(live.url + "/retries")
    browser.find_element(*by("#all-retry")).click()
    click(browser, "#confirm")
    assert "job(s) enqueued" in notice(browser)
    assert r.zcard(keys.RETRY) == 0 and r.llen("queue:default") == queued + 6


def test_delete_checked_by_clicking(live, browser, r):
    before = r.zcard(keys.DEAD)
    browser.get(live.url + "/morgue")
    boxes = browser.find_elements(*by("input[name=key]"))
    boxes[0].click()
    boxes[1].click()
    browser.find_element(*by("#bulk-delete")).click()
    assert "2 job(s) deleted" in notice(browser)
    assert r.zcard(keys.DEAD) == before - 2


def test_kill_from_the_entry_page(live, browser, r):
    dead, retries = r.zcard(keys.DEAD), r.zcard(keys.RETRY)
    browser.get(live.url + "/retries")
    browser.find_element(*by("#bulk td a")).click()
    click(browser, "#entry-kill")
    assert "moved to Dead" in notice(browser)
    assert r.zcard(keys.DEAD) == dead + 1 and r.zcard(keys.RETRY) == retries - 1


def test_delete_a_queue_by_clicking(live, browser, r):
    browser.get(live.url + "/queues/critical")
    browser.find_element(*by("#delete-queue")).click()
    click(browser, "#confirm")
    assert "Queue deleted" in notice(browser)
    assert not r.exists("queue:critical") and not r.sismember(keys.QUEUES, "critical")


def test_quiet_by_clicking(live, browser, r):
    browser.get(live.url + "/busy")
    browser.find_element(*by(".quiet-one")).click()
    assert "signalled" in notice(browser)
    assert r.lrange(keys.signals(webdata.IDENTITY), 0, -1) == [b"TSTP"]


def test_metrics_pages_by_clicking(live, browser, r):
    browser.get(live.url + "/metrics")
    rows = browser.find_elements(*by("a.metrics-class"))
    assert [a.text for a in rows] == [webdata.XSS[0], "app.Report", "app.Mailer"]  # the most total time first
    no_injection(browser)
    rows[2].click()
    wait_until(lambda: browser.find_elements(*by("#m-processed")))
    assert browser.find_element(*by("#m-processed")).text == "770"
    assert len(browser.find_elements(*by("#histogram-chart rect"))) == 17
    assert len(browser.find_elements(*by("#series-chart rect.processed"))) == 20
    browser.find_element(*by("main .toolbar a[href*='hours=24']")).click()
    wait_until(lambda: "hours=24" in browser.current_url)
    assert browser.find_element(*by("#m-processed")).text == "770" and "per 10 minutes" in browser.page_source
    browser.get(live.url + "/busy")
    assert browser.find_element(*by(".processed-count")).text == "4,321"


def test_hostile_args_show_as_text(live, browser, r):
    for path in ("/retries", "/morgue", "/queues/default", "/busy", "/metrics"):
        browser.get(live.url + path)
        no_injection(browser)
        assert "<script>window.__xss=1;alert(1)</script>" in browser.find_element(*by("main")).text
    browser.get(live.url + "/retries?q=xss")
    browser.find_element(*by("#bulk td a")).click()
    no_injection(browser)
    assert '"><img src=x onerror="window.__xss=2">' in browser.find_element(*by("main")).text


def test_forged_cross_site_post_is_refused(live, browser, r):
    """Another site's page auto-submits a form to Delete all, with a real token stolen from the session."""
    browser.get(live.url + "/retries")
    stolen = browser.find_element(*by("input[name=authenticity_token]")).get_attribute("value")
    target = live.url + "/retries/all/delete"

    def evil(environ, start_response):
        page = (f'<form id="f" method="post" action="{target}"><input name="authenticity_token" value="{stolen}">'
                '<input name="confirm" value="yes"></form><script>document.getElementById("f").submit()</script>')
        start_response("200 OK", [("Content-Type", "text/html")])
        return [page.encode()]

    attacker = Served(evil, host="localhost")  # another site than 127.0.0.1
    try:
        before = r.zcard(keys.RETRY)
        browser.get(attacker.url + "/")
        wait_until(lambda: browser.current_url.startswith(live.url))
        assert "refused" in browser.page_source or "CSRF" in browser.page_source
        assert r.zcard(keys.RETRY) == before > 0
    finally:
        attacker.close()
