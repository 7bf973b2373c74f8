"""Unique locks as the admin sees them: sidepunch.api lists and deletes them, `sidepunch locks` shows them and
`sidepunch locks delete KEY` removes one, and the dashboard's job detail page names a scheduled job's lock.
Hostile lock keys and values are listed, never raised."""
import json
import re
import sys

import pytest

import sidepunch
from sidepunch import api
from sidepunch.core import keys
from conftest import APPS, ROOT

sys.path.insert(0, str(APPS))
import uniquejobs  # noqa: E402


def test_the_api_lists_locks_with_jid_class_and_ttl_and_deletes_one(r, client):
    jid = uniquejobs.Unique.set(client=client).perform_async(1)
    r.set(keys.UNIQUE_PREFIX + "junk", b"\xff not json")
    r.hset(keys.UNIQUE_PREFIX + "hash", "a", "b")
    r.set(keys.UNIQUE_PREFIX + "deep", "[" * 100_000)
    found = {lock.digest: lock for lock in api.unique_locks(r)}
    [mine] = [lock for lock in found.values() if lock.jid == jid]
    assert mine.job_class == "uniquejobs.Unique" and 55 < mine.ttl <= 60 and mine.kind == "string"
    assert found["junk"].jid is None and found["hash"].kind == "hash" and found["deep"].jid is None
    assert json.dumps([lock.to_dict() for lock in found.values()])
    assert len(api.unique_locks(r, limit=2)) == 2
    assert api.delete_unique_lock(r, mine.digest) and not api.delete_unique_lock(r, mine.key)
    assert uniquejobs.Unique.set(client=client).perform_async(1)  # a duplicate can be pushed now
    assert not api.delete_unique_lock(r, "../queue:default") and r.llen("queue:default") == 2
    with pytest.raises(TypeError):
        api.delete_unique_lock(r, None)


def test_unique_lock_of_names_the_lock_a_job_holds(r, client):
    jid = uniquejobs.Unique.set(client=client).perform_in(60, "x")
    payload = sidepunch.core.payload.decode(r.zrange("schedule", 0, 0)[0])
    lock = api.unique_lock_of(r, payload)
    assert lock.jid == jid and lock.key.startswith(keys.UNIQUE_PREFIX)
    assert api.unique_lock_of(r, {**payload, "jid": "other"}) is None
    assert api.unique_lock_of(r, {"class": "Plain", "args": []}) is None


def test_the_cli_lists_and_deletes_locks(cli, r, client):
    jid = uniquejobs.Unique.set(client=client).perform_async(1)
    r.set(keys.UNIQUE_PREFIX + "x\x1b[2J" + "y" * 300, "odd")
    status, out, _ = cli("locks")
    assert status == 0 and jid in out and "uniquejobs.Unique" in out and "\x1b" not in out
    [line] = [line for line in out.splitlines() if jid in line]
    digest = line.split()[0]
    assert len(digest) == 64 and cli("locks", "delete", digest)[0] == 0 and jid not in cli("locks")[1]
    jid = uniquejobs.Unique.set(client=client).perform_async(1)
    r.delete(keys.UNIQUE_PREFIX + "x\x1b[2J" + "y" * 300)
    status, out, _ = cli("locks", "list", "--json")
    [row] = json.loads(out)
    assert row["jid"] == jid and row["class"] == "uniquejobs.Unique"
    assert cli("locks", "delete")[0] == 2
    assert cli("locks", "delete", row["key"])[0] == 0 and not api.unique_locks(r)
    assert cli("locks", "delete", row["key"])[0] == 1
    status, out, _ = cli("locks")
    assert status == 0 and "no unique locks" in out


def test_the_job_detail_page_names_the_lock(redis_server, r, client):
    from werkzeug.test import Client
    from sidepunch.web import create_app
    web = Client(create_app(redis_server.url, secret_key="test-secret"))
    uniquejobs.Unique.set(client=client).perform_in(60, "<b>x</b>")
    client.push({"class": "Plain", "args": [], "at": 9e9})
    listing = web.get("/scheduled").get_data(as_text=True)
    entry_keys = re.findall(r'name="key" value="([^"]+)"', listing)
    pages = [web.get(f"/scheduled/{key}").get_data(as_text=True) for key in entry_keys]
    [lock] = api.unique_locks(r)
    assert sum(lock.key in page and 'id="unique-lock"' in page for page in pages) == 1
    assert sum('id="unique-lock"' in page for page in pages) == 1 and all("<b>x</b>" not in p for p in pages)


def test_the_docs_example_runs_as_written(redis_server, r, monkeypatch):
    text = (ROOT / "docs" / "features" / "unique.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("REDIS_PROVIDER", raising=False)
    try:
        exec(compile(code, "docs/features/unique.md", "exec"), {"__name__": "unique_docs_example"})
    finally:
        sidepunch.configure(redis=r)
    assert r.llen("queue:default") == 3 and len(api.unique_locks(r)) == 3
