"""Queue pausing in a real browser (headless Chromium, skipped where it is not installed, as in
test_web_browser.py): Pause and Unpause buttons on the Queues page, through the real CSRF + origin guard, with the
hostile queue names of webdata on the page running nothing."""
from __future__ import annotations

from sidepunch.core import keys
from test_web_browser import browser, by, live, no_injection, notice, pytestmark  # noqa: F401


def _row(driver, name):
    rows = driver.find_elements(*by("tr.queue-row"))
    return next(row for row in rows if row.find_element(*by("td a")).text == name)


def test_pause_and_unpause_by_clicking(live, browser, r):  # noqa: F811
    browser.get(live.url + "/queues")
    no_injection(browser)
    _row(browser, "critical").find_element(*by(".pause-queue")).click()
    assert "Paused" in notice(browser)
    assert r.sismember(keys.PAUSED, "critical")
    row = _row(browser, "critical")
    assert row.find_element(*by(".queue-state")).text == "paused" and "paused" in row.get_attribute("class")
    row.find_element(*by(".unpause-queue")).click()
    assert "Unpaused" in notice(browser)
    assert not r.sismember(keys.PAUSED, "critical")
    assert _row(browser, "critical").find_element(*by(".queue-state")).text == "active"
    no_injection(browser)
