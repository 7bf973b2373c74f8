"""Screenshots of every dashboard page, for the README and for reviewing the look.

    .venv/bin/python tools/screenshots.py [OUT_DIR]      (default docs/screenshots)

Starts its own redis-server (sidepunch.embedded) and fills it with the test suite's sample data (tests/webdata.py:
queues, retries, scheduled and dead jobs, one live process with a running job, hostile payloads), serves the
dashboard on a local port and saves one PNG per page with headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium). Needs the web and test extras.
"""
from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PAGES = {"dashboard": "/", "busy": "/busy", "queues": "/queues", "queue": "/queues/default", "retries": "/retries",
         "retry-entry": None, "scheduled": "/scheduled", "dead": "/morgue", "redis": "/redis", "keys": "/keys",
         "key": "/keys/show?key=queue:default"}


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def shoot(url: str, out: Path) -> list[Path]:
    from selenium.webdriver.common.by import By
    driver = browser()
    written = []
    try:
        for name, path in PAGES.items():
            if path is None:  # the first retry's own page
                driver.get(url + "/retries")
                path = driver.find_element(By.CSS_SELECTOR, "#bulk td a").get_attribute("href")[len(url):]
            driver.get(url + path)
            target = out / f"{name}.png"
            driver.save_screenshot(str(target))
            written.append(target)
    finally:
        driver.quit()
    return written


def main() -> int:
    import redis
    from werkzeug.serving import make_server

    import webdata
    from sidepunch.embedded import RedisServer
    from sidepunch.web import create_app

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    server = RedisServer().start()
    try:
        with redis.Redis.from_url(server.url) as r:
            webdata.populate(r, n=12)
        http = make_server("127.0.0.1", 0, create_app(server.url), threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            for path in shoot(f"http://127.0.0.1:{http.server_port}", out):
                print(path)
        finally:
            http.shutdown()
            http.server_close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
