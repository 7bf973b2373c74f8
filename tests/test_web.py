"""The web dashboard through Werkzeug's test client against a real Redis: every page and action, hostile data
rendered escaped, the CSRF and cross-site checks, read-only mode, auth, and the `sidepunch web` command."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from werkzeug.test import Client  # noqa: E402

import hostile  # noqa: E402
import webdata  # noqa: E402
from sidepunch.core import keys  # noqa: E402
from sidepunch.web import basic_auth, create_app, create_asgi_app  # noqa: E402
from sidepunch.web.render import decode_name, encode_name  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from sidepunch.admin import main; sys.exit(main())"]
SAME = {"Sec-Fetch-Site": "same-origin"}
PAGES = ["/", "/stats", "/stats/queues", "/busy", "/queues", "/queues/default", "/queues/default?order=oldest",
         "/retries", "/retries?order=asc&page=2&per=50", "/scheduled", "/morgue", "/retries?q=two",
         "/morgue?q=RuntimeError", "/redis", "/keys", "/keys?match=queue:*", "/keys/show?key=retry",
         "/keys/show?key=queue:default", "/keys/show?key=queues", "/keys/show?key=stat:processed",
         "/static/app.css", "/static/app.js", "/metrics", "/metrics?hours=72", "/metrics?hours=x",
         "/metrics/app.Mailer", "/metrics/app.Mailer?hours=24", "/metrics/NoSuchClass"]


@pytest.fixture
def web(redis_server, r):
    return Client(create_app(redis_server.url, secret_key="test-secret"))


def token(web, path="/retries") -> str:
    page = web.get(path).get_data(as_text=True)
    return re.search(r'name="authenticity_token" value="([^"]+)"', page).group(1)


def post(web, path, data=None, headers=SAME, **kw):
    data = dict(data or {})
    data.setdefault("authenticity_token", token(web, "/retries"))
    return web.post(path, data=data, headers=headers, **kw)


def keys_of(r, zset):
    return [re.sub(r"^", "", m.decode("utf-8", "replace")) for m in r.zrange(zset, 0, -1)]


def entry_keys(web, path):
    return re.findall(r'name="key" value="([^"]+)"', web.get(path).get_data(as_text=True))


def assert_safe(html: str) -> None:
    """No script but the vendored one, no event-handler attribute, no image from job data."""
    assert re.findall(r"<script[^>]*>", html) == [re.search(r'<script src="[^"]*app.js"></script>', html).group()
                                                   .replace("</script>", "")]
    assert not re.search(r"<[^>]+\son\w+\s*=", html, re.I)
    assert "<img" not in html and "<svg onload" not in html


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders(web, r, path):
    webdata.populate(r)
    resp = web.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    if resp.content_type.startswith("text/html"):
        html = resp.get_data(as_text=True)
        assert_safe(html)
        assert ">1,234<" in html  # the summary bar on every page


def test_stats_has_sidekiqs_shape(web, r):
    webdata.populate(r, hostile=False)
    body = web.get("/stats").get_json()
    assert set(body) == {"sidekiq", "redis", "server_utc_time"}
    assert body["sidekiq"] == {"processed": 1234, "failed": 56, "busy": 1, "processes": 1, "enqueued": 6,
                               "scheduled": 5, "retries": 5, "dead": 5,
                               "default_latency": body["sidekiq"]["default_latency"]}
    assert set(body["redis"]) == {"redis_version", "uptime_in_days", "connected_clients", "used_memory_human",
                                  "used_memory_peak_human"}
    assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", body["server_utc_time"])


def test_headers_forbid_framing_and_inline_script(web, r):
    resp = web.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "HttpOnly" in resp.headers["Set-Cookie"] and "SameSite=Strict" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize("days", ["7", "30", "90", "180", "999", "x"])
def test_history_days(web, r, days):
    webdata.populate(r, hostile=False)
    html = web.get(f"/?days={days}").get_data(as_text=True)
    shown = days if days in ("7", "30", "90", "180") else "30"
    assert f"<b>{shown} days</b>" in html
    assert html.count('<rect class="processed"') == int(shown)


def test_hostile_payloads_render_escaped(web, r):
    webdata.populate(r)
    now = time.time()
    for i, case in enumerate(hostile.cases(7)):
        r.zadd(keys.RETRY, {case.raw: now + i})
        r.zadd(keys.DEAD, {case.raw: now - i})
        r.zadd(keys.SCHEDULE, {case.raw: now + i})
        r.lpush("queue:default", case.raw)
    for path in ["/retries?per=100", "/morgue?per=100", "/scheduled?per=100", "/queues/default?per=100",
                 "/queues", "/busy", "/keys", "/retries?q=%3Cscript", "/morgue?q=T0", "/retries?q=%C3%A9"]:
        resp = web.get(path)
        assert resp.status_code == 200, path
        assert_safe(resp.get_data(as_text=True))
    for kind in ("retries", "morgue", "scheduled"):
        keys_seen = entry_keys(web, f"/{kind}?per=100")
        assert len(keys_seen) >= 40
        for key in keys_seen:
            resp = web.get(f"/{kind}/{key}")
            assert resp.status_code == 200, (kind, key)
            assert_safe(resp.get_data(as_text=True))


def test_xss_text_is_shown_as_text(web, r):
    webdata.populate(r)
    html = web.get("/retries").get_data(as_text=True)
    assert "&lt;script&gt;window.__xss=1" in html and "&#34;&gt;&lt;img src=x onerror=" in html
    html = web.get("/busy").get_data(as_text=True)
    assert "app &lt;i&gt;tag&lt;/i&gt;" in html and "&lt;script&gt;" in html


def test_non_utf8_names_round_trip(web, r):
    webdata.populate(r)
    odd = "q\udcff\udcfe<script>x</script>"
    assert decode_name(encode_name(odd)) == odd and decode_name(encode_name("~x")) == "~x"
    html = web.get("/queues").get_data(as_text=True)
    assert "q\\xff\\xfe&lt;script&gt;" in html
    link = re.search(r'href="(/queues/~x[0-9a-f]+)"', html).group(1)
    page = web.get(link)
    assert page.status_code == 200 and "odd-q" in page.get_data(as_text=True)
    keys_html = web.get("/keys").get_data(as_text=True)
    for href in re.findall(r'href="(/keys/show\?key=[^"]+)"', keys_html):
        assert web.get(href.replace("&amp;", "&")).status_code == 200, href
    assert "key\\xff&lt;script&gt;" in keys_html


def test_get_never_changes_state(web, r):
    webdata.populate(r)
    before = (r.zcard(keys.RETRY), r.zcard(keys.DEAD), r.llen("queue:default"))
    for path in ["/retries/all/retry", "/retries/all/delete", "/morgue/all/delete", "/queues/default"]:
        web.get(path)
    assert (r.zcard(keys.RETRY), r.zcard(keys.DEAD), r.llen("queue:default")) == before


def test_post_without_token_or_cross_site_is_refused(web, r):
    webdata.populate(r, hostile=False)
    good = token(web)
    cases = [({}, SAME), ({"authenticity_token": "forged"}, SAME),
             ({"authenticity_token": good}, {"Sec-Fetch-Site": "cross-site"}),
             ({"authenticity_token": good}, {"Sec-Fetch-Site": "same-site"}),
             ({"authenticity_token": good}, {"Origin": "https://evil.example"})]
    for data, headers in cases:
        resp = web.post("/retries/all/delete", data={**data, "confirm": "yes"}, headers=headers)
        assert resp.status_code == 403, (data, headers)
        assert "refused" in resp.get_data(as_text=True) or "CSRF" in resp.get_data(as_text=True)
    other = Client(create_app(web.application.url, secret_key="test-secret"))  # no session cookie
    assert other.post("/retries/all/delete", data={"authenticity_token": good, "confirm": "yes"},
                      headers=SAME).status_code == 403
    assert r.zcard(keys.RETRY) == 5
    ok = web.post("/retries/all/delete", data={"authenticity_token": good, "confirm": "yes"},
                  headers={"Origin": "http://localhost"})
    assert ok.status_code == 303 and r.zcard(keys.RETRY) == 0


def test_all_actions_ask_first(web, r):
    webdata.populate(r, hostile=False)
    resp = post(web, "/retries/all/retry")
    assert resp.status_code == 200 and "Are you sure?" in resp.get_data(as_text=True)
    assert 'href="/retries" id="cancel"' in resp.get_data(as_text=True)
    assert r.zcard(keys.RETRY) == 5


@pytest.mark.parametrize("kind,action,zset,moved_to", [
    ("retries", "retry", keys.RETRY, "queue"), ("retries", "delete", keys.RETRY, None),
    ("retries", "kill", keys.RETRY, keys.DEAD), ("morgue", "retry", keys.DEAD, "queue"),
    ("morgue", "delete", keys.DEAD, None)])
def test_all_actions(web, r, kind, action, zset, moved_to):
    webdata.populate(r, hostile=False)
    dead_before, queued_before = r.zcard(keys.DEAD), r.llen("queue:default")
    resp = post(web, f"/{kind}/all/{action}", {"confirm": "yes"})
    assert resp.status_code == 303
    assert r.zcard(zset) == 0
    if moved_to == "queue":
        assert r.llen("queue:default") == queued_before + 5
    elif moved_to == keys.DEAD:
        assert r.zcard(keys.DEAD) == dead_before + 5
    assert "job(s)" in web.get(resp.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize("kind,action,zset", [("retries", "retry", keys.RETRY), ("retries", "kill", keys.RETRY),
                                              ("retries", "delete", keys.RETRY), ("morgue", "retry", keys.DEAD),
                                              ("scheduled", "add_to_queue", keys.SCHEDULE),
                                              ("scheduled", "kill", keys.SCHEDULE),
                                              ("scheduled", "delete", keys.SCHEDULE)])
def test_checkbox_and_entry_actions(web, r, kind, action, zset):
    webdata.populate(r, hostile=False)
    chosen = entry_keys(web, f"/{kind}")[:2]
    assert post(web, f"/{kind}", {"action": action, "key": chosen}).status_code == 303
    assert r.zcard(zset) == 3
    one = entry_keys(web, f"/{kind}")[0]
    detail = web.get(f"/{kind}/{one}").get_data(as_text=True)
    assert f'value="{action}"' in detail
    assert post(web, f"/{kind}/{one}", {"action": action}).status_code == 303
    assert r.zcard(zset) == 2
    assert post(web, f"/{kind}/{one}", {"action": action}).status_code == 404  # gone now
    assert post(web, f"/{kind}", {"action": "explode", "key": chosen}).status_code == 400


def test_unreadable_entry_cannot_be_retried_but_stays(web, r):
    r.zadd(keys.RETRY, {b"not json": 1.0})
    key = entry_keys(web, "/retries")[0]
    resp = post(web, f"/retries/{key}", {"action": "retry"})
    assert resp.status_code == 409 and "delete or kill it" in resp.get_data(as_text=True)
    assert r.zrange(keys.RETRY, 0, -1) == [b"not json"]
    assert post(web, f"/retries/{key}", {"action": "kill"}).status_code == 303
    assert r.zrange(keys.DEAD, 0, -1) == [b"not json"]


def test_filter_matches_class_args_and_error(web, r, monkeypatch):
    now = time.time()
    r.zadd(keys.RETRY, {webdata.failed("a1", args=["needle-in-args"]): now,
                        webdata.failed("a2", cls="NeedleClass"): now + 1,
                        webdata.failed("a3", error_message="zürich failed"): now + 2,
                        webdata.failed("a4"): now + 3})
    assert len(entry_keys(web, "/retries?q=needle-in")) == 1
    assert len(entry_keys(web, "/retries?q=NeedleClass")) == 1
    assert len(entry_keys(web, "/retries?q=z%C3%BCrich")) == 1
    assert len(entry_keys(web, "/retries?q=a4")) == 0  # the jid is not searched
    r.zadd(keys.RETRY, {b'{"class":"Rails","args":["\\u003ci\\u003e"],"jid":"a5"}': now + 4})  # escaped <i>
    assert len(entry_keys(web, "/retries?q=%3Ci%3E")) == 1
    monkeypatch.setattr("sidepunch.web.jobsets.MAX_MATCHES", 2)
    html = web.get("/retries?q=boom").get_data(as_text=True)
    assert "first 2 matches" in html and len(entry_keys(web, "/retries?q=boom")) == 2


def test_queue_job_delete_and_queue_delete(web, r):
    webdata.populate(r)
    html = web.get("/queues/default").get_data(as_text=True)
    ident = re.search(r'name="id" value="(raw:[0-9a-f]+)"', html).group(1)
    size = r.llen("queue:default")
    assert post(web, "/queues/default", {"action": "delete", "id": ident}).status_code == 303
    assert r.llen("queue:default") == size - 1
    assert post(web, "/queues/default", {"action": "delete", "id": ident}).status_code == 404
    assert "Are you sure?" in post(web, "/queues/default", {"action": "delete_queue"}).get_data(as_text=True)
    assert post(web, "/queues/default", {"action": "delete_queue", "confirm": "yes"}).status_code == 303
    assert not r.exists("queue:default") and not r.sismember(keys.QUEUES, "default")


@pytest.mark.parametrize("action,signal", [("quiet", b"TSTP"), ("stop", b"TERM")])
def test_busy_signals(web, r, action, signal):
    webdata.populate(r, hostile=False)
    html = web.get("/busy").get_data(as_text=True)
    assert "web-host" in html and "w0001" in html
    assert post(web, "/busy", {"action": action, "identity": webdata.IDENTITY}).status_code == 303
    assert r.lrange(keys.signals(webdata.IDENTITY), 0, -1) == [signal]
    assert post(web, "/busy", {"action": action}).status_code == 303
    assert r.llen(keys.signals(webdata.IDENTITY)) == 2
    assert post(web, "/busy", {"action": action, "identity": "nobody"}).status_code == 404


def test_read_only_hides_and_refuses(redis_server, r):
    webdata.populate(r, hostile=False)
    web = Client(create_app(redis_server.url, read_only=True))
    for path in ["/retries", "/morgue", "/scheduled", "/queues", "/queues/default", "/busy",
                 "/retries/" + entry_keys(Client(create_app(redis_server.url)), "/retries")[0]]:
        html = web.get(path).get_data(as_text=True)
        assert '<form method="post"' not in html, path
    resp = web.post("/retries/all/delete", data={"confirm": "yes"}, headers=SAME)
    assert resp.status_code == 403 and r.zcard(keys.RETRY) == 5


def test_auth_callable(redis_server, r):
    web = Client(create_app(redis_server.url, auth=lambda request: request.headers.get("X-Admin") == "yes"))
    assert web.get("/").status_code == 403
    assert web.get("/", headers={"X-Admin": "yes"}).status_code == 200
    assert web.get("/static/app.js").status_code == 403


def test_basic_auth(redis_server, r):
    web = Client(create_app(redis_server.url, auth=basic_auth("admin", "s3cret")))
    resp = web.get("/")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
    assert web.get("/", auth=("admin", "wrong")).status_code == 401
    assert web.get("/", auth=("Admin", "s3cret")).status_code == 401
    assert web.get("/", auth=("admin", "s3cret")).status_code == 200


def test_secret_from_environment_keeps_sessions(redis_server, r, monkeypatch):
    monkeypatch.setenv("SIDEPUNCH_WEB_SECRET", "shared")
    first, second = create_app(redis_server.url), create_app(redis_server.url)
    web = Client(first)
    tok = token(web)
    web.application = second  # the same browser against another process with the same secret
    r.zadd(keys.RETRY, {webdata.failed("x"): 1})
    assert web.post("/retries/all/delete", data={"authenticity_token": tok, "confirm": "yes"},
                    headers=SAME).status_code == 303


def test_key_browser_pages_through_everything(web, r):
    r.mset({f"k:{i:03d}": i for i in range(130)})
    r.rpush("biglist", *range(60))
    seen, url = set(), "/keys"
    for _ in range(20):
        html = web.get(url).get_data(as_text=True)
        seen.update(re.findall(r"<code>(k:\d+)</code>", html))
        nxt = re.search(r'href="([^"]+)" rel="next"', html)
        if not nxt:
            break
        url = nxt.group(1).replace("&amp;", "&")
    assert len(seen) == 130
    html = web.get("/keys/show?key=biglist").get_data(as_text=True)
    assert "<td class=\"args\">24</td>" in html and "<td class=\"args\">25</td>" not in html
    assert "<td class=\"args\">25</td>" in web.get("/keys/show?key=biglist&page=2").get_data(as_text=True)
    assert web.get("/keys/show?key=missing").status_code == 404


def test_redis_down_is_a_503_with_the_url_masked(r):
    web = Client(create_app("redis://:hunter2@127.0.0.1:1/0"))
    resp = web.get("/")
    assert resp.status_code == 503 and "hunter2" not in resp.get_data(as_text=True)


def test_unknown_paths_are_404(web, r):
    assert web.get("/nope").status_code == 404
    assert web.get("/static/../web/app.py").status_code == 404
    assert web.get("/retries/not-a-key").status_code == 404


def asgi_get(app, path: str, root_path: str = "") -> tuple[int, bytes]:
    sent = []

    async def call():
        scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "raw_path": path.encode(),
                 "root_path": root_path, "scheme": "http", "query_string": b"",
                 "headers": [(b"host", b"localhost")], "server": ("localhost", 80), "client": ("127.0.0.1", 5000)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)
        await app(scope, receive, send)
    asyncio.run(call())
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_asgi_app_answers(redis_server, r):
    app = create_asgi_app(redis_server.url)
    status, body = asgi_get(app, "/stats")
    assert status == 200 and json.loads(body)["sidekiq"]["processed"] == 0
    status, body = asgi_get(app, "/admin/jobs/retries", root_path="/admin/jobs")  # mounted, as FastAPI does
    assert status == 200 and b'href="/admin/jobs/morgue"' in body


def test_mounted_under_a_prefix(redis_server, r):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Response
    outer = DispatcherMiddleware(Response("host app"), {"/admin/jobs": create_app(redis_server.url)})
    html = Client(outer).get("/admin/jobs/retries").get_data(as_text=True)
    assert 'href="/admin/jobs/static/app.css"' in html and 'href="/admin/jobs/morgue"' in html


def test_cli_bad_flags_exit_2_with_one_line():
    for args in (["--port", "70000"], ["--port", "x"], ["--bogus"]):
        proc = subprocess.run([*CLI, "web", *args],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_only_one_auth_variable_is_a_usage_error(monkeypatch):
    env = {"SIDEPUNCH_WEB_USERNAME": "admin", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([*CLI, "web", "--port", "1"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 2 and "SIDEPUNCH_WEB_PASSWORD" in proc.stderr


def test_cli_serves_with_basic_auth(redis_server, r, unused_port):
    env = {"SIDEPUNCH_WEB_USERNAME": "admin", "SIDEPUNCH_WEB_PASSWORD": "pw", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([*CLI, "web", "--port", str(unused_port),
                             "--redis-url", redis_server.url], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{unused_port}/stats"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        req = urllib.request.Request(url, headers={"Authorization": "Basic YWRtaW46cHc="})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200 and resp.headers["Server"].startswith("sidepunch")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def unused_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_with_a_non_utf8_identity_can_be_quieted(web, r):
    identity = b"host\xff<b>:1:abc"
    webdata.add_process(r, identity=identity.decode("utf-8", "surrogateescape"))
    html = web.get("/busy").get_data(as_text=True)
    assert "host\\xff&lt;b&gt;:1:abc" in html
    hidden = re.search(r'name="identity" value="(~x[0-9a-f]+)"', html).group(1)
    assert post(web, "/busy", {"action": "quiet", "identity": hidden}).status_code == 303
    assert r.lrange(b"host\xff<b>:1:abc-signals", 0, -1) == [b"TSTP"]


@pytest.mark.parametrize("bind,env,warned", [
    ("127.0.0.1", {}, False), ("::1", {}, False), ("localhost", {}, False), ("0.0.0.0", {}, True),
    ("0.0.0.0", {"SIDEPUNCH_WEB_USERNAME": "a", "SIDEPUNCH_WEB_PASSWORD": "b"}, False)])
def test_standalone_warns_when_open_beyond_loopback(redis_server, bind, env, warned):
    import io
    from sidepunch.web import serve
    err = io.StringIO()
    app = serve.build(redis_server.url, bind, False, env, err=err)
    assert ("without authentication" in err.getvalue()) is warned
    assert (app.auth is not None) is bool(env)
