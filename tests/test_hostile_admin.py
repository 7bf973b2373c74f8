"""Hostile data written straight into Redis, and hostile Redis URLs: the admin API and the `sidepunch`
command list and act on every entry, never print a traceback, always print strict JSON with `--json`, and
never show a password.

The data is generated: every field of a job payload crossed with every kind of bad value (NaN, Infinity,
1e300, strings for times, lone surrogates, escape sequences, nesting deeper than any parser likes), plus raw
members that are not JSON or not UTF-8, stored with extreme scores in every sorted set, in queues with
names that are not UTF-8, and in process records.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from sidepunch import api
from sidepunch.admin import command as admin
from sidepunch.core import keys
from sidepunch.core.connection import mask_url, parse_sentinel_url, scrub
from sidepunch.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent

FIELDS = ["jid", "class", "queue", "args", "enqueued_at", "created_at", "failed_at", "retried_at", "retry_count",
          "error_class", "error_message", "error_backtrace", "wrapped", "display_class", "encrypt", "tags", "at"]
BAD_VALUES = ["NaN", "Infinity", "-Infinity", "1e300", "-1e300", "1e400", "-5", '"yesterday"', "[]", "{}", "null",
              "true", "9" * 400, '"\\ud800"', '"\\udfff\\ud800x"', '"\\u001b[2J\\u0007"', '"\\u202eevil"',
              "[" * 150 + "]" * 150, '{"a":' * 120 + "1" + "}" * 120, '"' + "x" * 5000 + '"']
RAW_MEMBERS = [b"not json", b"\xff\xfe\x00", b"", b"[]", b"null", b'"str"', b'{"args":[]}', b"\xc3\x28",
               b"[" * 100_000 + b"]" * 100_000, b'{"class":"A","args":[' + b"1" * 5000 + b"]}",
               b'{"class":"A","args":' + b"[" * 950 + b"]" * 950 + b',"jid":"deep950"}',
               b'{"class":"A","args":["caf\xc3\xa9\xff"],"jid":"badbyte"}']
SCORES = [float("inf"), float("-inf"), 1e300, -1e300, 0.0, 1795380000.0]


def hostile_members() -> list[bytes]:
    """Every field of a sound job replaced in turn by every bad value, plus raw junk."""
    members = list(RAW_MEMBERS)
    for i, name in enumerate(FIELDS):
        for j, bad in enumerate(BAD_VALUES):
            job = {"class": "HostileJob", "args": [i, j], "jid": f"{i:02d}{j:02d}" + "0" * 20, "queue": "default",
                   "enqueued_at": 1795380000.0, "retry_count": 1, "error_class": "E", "error_message": "m"}
            text = json.dumps(job)
            if f'"{name}"' in text:
                text = re.sub(rf'"{name}": [^,}}]+', lambda m: f'"{name}": {bad}', text)
            else:
                text = text[:-1] + f', "{name}": {bad}}}'
            members.append(text.encode())
    return members




def strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def assert_clean_text(out: str) -> None:
    """Nothing from Redis reaches the terminal raw: no escape or control characters but newlines, no
    bidi overrides, no lone surrogates (stdout would have refused them anyway)."""
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", out), out[:500]


def fill_sets(r, members):
    for zset in (keys.RETRY, keys.SCHEDULE, keys.DEAD):
        r.zadd(zset, {m: SCORES[i % len(SCORES)] for i, m in enumerate(members)})


# ------------------------------------------------------------------------------------------ listings

def test_every_sorted_set_listing_shows_every_hostile_entry(cli, r):
    members = hostile_members()
    fill_sets(r, members)
    r.hset(keys.DEAD_REASONS, b"not json", b"unreadable \x1b[31m\xff")
    for command in ("retries", "scheduled", "dead"):
        status, out, _ = cli(command, "--limit", "1000")
        assert status == 0
        assert_clean_text(out)
        assert len(out.strip().splitlines()) == len(members) + 2  # the summary, the header, one row each
        status, out, _ = cli(command, "--limit", "1000", "--json")
        data = strict_json(out)
        assert status == 0 and len(data) == len(members)
        assert {e["id"] for e in data} == {api.JobRecord(m).id for m in members}
    dead = strict_json(cli("dead", "--limit", "1000", "--json")[1])
    assert [e["reason"] for e in dead if e.get("raw") == "not json"] == ["unreadable \x1b[31m\ufffd"]


def test_queue_listings_survive_hostile_names_and_jobs(cli, r):
    members = hostile_members()
    names = [b"\xff\xfe", b"esc\x1b[2Jape", "caf\u00e9".encode(), b"plain", b"\xed\xa0\x80"]
    for name in names:
        r.sadd(keys.QUEUES, name)
        r.lpush(b"queue:" + name, *members)
    r.sadd(keys.QUEUES, b"oddkey")
    r.set(b"queue:oddkey", b"a string, not a list")
    for argv in (("queues",), ("stats", "--days", "3")):
        for fmt in ((), ("--json",)):
            status, out, _ = cli(*argv, *fmt)
            assert status == 0
            strict_json(out) if fmt else assert_clean_text(out)
    listed = strict_json(cli("queues", "--json")[1])
    assert len(listed) == len(names) + 1 and {"\\xff\\xfe", "oddkey"} <= {q["name"] for q in listed}
    for name in names:
        shown = name.decode("utf-8", "surrogateescape")  # as Python decodes a command-line argument
        for order in ((), ("--oldest-first",)):
            status, out, _ = cli("jobs", shown, "--limit", "1000", *order)
            assert status == 0 and len(out.strip().splitlines()) == len(members) + 2
            assert_clean_text(out)
            status, out, _ = cli("jobs", shown, "--limit", "1000", "--json", *order)
            assert status == 0 and len(strict_json(out)) == len(members)


def test_process_listings_survive_hostile_records(cli, r):
    values = [b"nan", b"inf", b"-inf", b"1e300", b"-1e300", b"abc", b"9" * 5000, b"", b"\xff"]
    infos = [b"not json", b"\xff", b"[1]", b"[" * 100_000 + b"]" * 100_000, b'{"started_at": NaN}',
             b'{"started_at": 1e300, "pid": ' + b"9" * 400 + b', "hostname": ["x"], "queues": [[[[1]]], "\\ud800"]}',
             b'{"started_at": "yesterday", "concurrency": 1e300, "tag": {"a": 1}, "labels": "x"}',
             b'{"hostname": "h\\u001b[2J", "tag": "\\u202e", "queues": ' + b"[" * 900 + b"]" * 900 + b"}"]
    identities = []
    for i, info in enumerate(infos):
        identity = [b"\xff\xfe:1:aaaa", f"host{i}:{i}:bbbb".encode(), b"esc\x1b[31m:2:cccc"][i % 3] + bytes([48 + i])
        identities.append(identity)
        r.sadd(keys.PROCESSES, identity)
        v = values[i % len(values)]
        r.hset(identity, mapping={"info": info, "busy": v, "beat": v, "quiet": v, "rss": v, "rtt_us": v})
        r.hset(identity + b":workers", mapping={
            b"\xff" + bytes([i]): b'{"queue":"q","payload":"{\\"class\\":\\"A\\",\\"args\\":[NaN]}","run_at":1e300}',
            b"t2": b'{"queue":["x"],"payload":{"class":"B","args":[Infinity]},"run_at":' + b"9" * 400 + b"}",
            b"t3": b"not json", b"t4": b"[" * 100_000 + b"]" * 100_000, b"t5": b'{"payload": 5, "run_at": -1}'})
    for command in ("processes", "workers", "stats"):
        status, out, _ = cli(command)
        assert status == 0
        assert_clean_text(out)
        status, out, _ = cli(command, "--json")
        assert status == 0
        strict_json(out)
    assert len(strict_json(cli("processes", "--json")[1])) == len(infos)
    assert len(strict_json(cli("workers", "--json")[1])) == 5 * len(infos)
    status, out, _ = cli("quiet", "--all")
    assert status == 0 and len(out.strip().splitlines()) == len(infos)
    assert all(r.lrange(identity + b"-signals", 0, -1) == [b"TSTP"] for identity in identities)
    status, _, err = cli("stop", "\udcff\udcfe:1:aaaa")  # a prefix given as Python decodes a raw argv
    assert status == 1 and "matches 3 processes" in err


@pytest.mark.parametrize("value", [b"nan", b"1e300", b"-5", b"9" * 5000, b"\xff", b"inf"])
def test_stats_survive_hostile_counters(cli, r, value):
    r.set(keys.STAT_PROCESSED, value)
    r.set(keys.STAT_FAILED, value)
    r.set("stat:processed:" + __import__("datetime").date.today().isoformat(), value)
    for fmt in ((), ("--json",)):
        status, out, _ = cli("stats", "--days", "2", *fmt)
        assert status == 0
        strict_json(out) if fmt else assert_clean_text(out)


@pytest.mark.parametrize("days", ["1826", "99999999999999999999999", "-1", "nan", "1e3", "", "x"])
def test_stats_days_out_of_range_is_one_line(cli, days):
    status, out, err = cli("stats", "--days", days)
    assert status == 2 and out == "" and err.startswith("sidepunch stats: argument --days:")


def test_stats_days_at_the_limit_works(cli):
    status, out, _ = cli("stats", "--days", str(api.MAX_HISTORY_DAYS), "--json")
    assert status == 0 and len(strict_json(out)["history"]) == api.MAX_HISTORY_DAYS


def test_the_installed_command_survives_hostile_data_in_an_ascii_locale(redis_server, r):
    """The real console entry point, as a subprocess, with stdout that can only encode ASCII."""
    fill_sets(r, hostile_members())
    r.sadd(keys.QUEUES, b"\xff")
    r.lpush(b"queue:\xff", "caf\u00e9 \u202e".encode(), *RAW_MEMBERS)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii", REDIS_URL=redis_server.url)
    env.pop("REDIS_PROVIDER", None)
    for argv in (["dead", "--limit", "1000"], ["retries", "--json"], ["jobs", os.fsdecode(b"\xff")], ["queues"],
                 ["stats"], ["processes"], ["workers", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "sidepunch.admin.command", *argv], env=env, capture_output=True,
                              timeout=60)
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, (argv, proc.stderr[-500:])
        if "--json" in argv:
            strict_json(proc.stdout.decode("ascii"))


# ------------------------------------------------------------------------------------------ actions

def test_retry_all_processes_every_entry_and_leaves_what_cannot_be_enqueued(cli, r):
    members = hostile_members()
    r.zadd(keys.RETRY, {m: 1795380000.0 + i for i, m in enumerate(members)})
    records = [api.JobRecord(m) for m in members]
    stuck = {rec.id for rec in records if rec.problem}
    assert stuck and len(stuck) < len(members)
    status, out, err = cli("retry", "--all", "--json")
    report = strict_json(out)
    assert status == 1 and "cannot be enqueued and stay in the retry set" in err
    assert report["retried"] == len(members) - len(stuck) and {e["id"] for e in report["left"]} == stuck
    assert r.zcard(keys.RETRY) == len(stuck)
    assert sum(r.llen(k) for k in r.scan_iter(b"queue:*")) == len(members) - len(stuck)
    # Each entry left can be named and killed: it goes to the dead set with a reason that is shown.
    for ident in stuck:
        status, out, _ = cli("kill", ident)
        assert status == 0 and out.startswith(f"moved {ident} from the retry set to the dead set")
    assert r.zcard(keys.RETRY) == 0 and r.zcard(keys.DEAD) == len(stuck) == r.hlen(keys.DEAD_REASONS)
    dead = strict_json(cli("dead", "--json", "--limit", "1000")[1])
    assert all(e["reason"].startswith("killed from the retry set by an admin: ") for e in dead)
    status, out, _ = cli("dead", "--limit", "1000")
    assert status == 0 and out.count("killed from the retry set") == len(stuck)
    # Deleting dead entries removes their reasons; clearing removes the rest.
    some = sorted(stuck)[:3]
    for ident in some:
        assert cli("delete", ident)[0] == 0
    assert r.hlen(keys.DEAD_REASONS) == r.zcard(keys.DEAD) == len(stuck) - 3
    assert cli("clear", "dead")[0] == 0 and not r.exists(keys.DEAD_REASONS)


def test_single_entry_actions_name_entries_without_a_jid_by_raw_id(cli, r):
    r.zadd(keys.SCHEDULE, {b"\xff not json": 5.0, b'{"class":"A","args":[NaN],"jid":"j-nan"}': float("inf")})
    r.zadd(keys.DEAD, {b"[" * 100_000 + b"]" * 100_000: time.time()})  # recent: killing trims old ones
    junk, nan_job = (api.JobRecord(m) for m in (b"\xff not json", b'{"class":"A","args":[NaN],"jid":"j-nan"}'))
    deep = api.JobRecord(b"[" * 100_000 + b"]" * 100_000)
    status, out, _ = cli("scheduled")
    assert status == 0 and junk.raw_id in out and "j-nan" in out
    status, _, err = cli("retry", deep.raw_id)
    assert status == 1 and "unparseable" in err and r.zcard(keys.DEAD) == 1
    status, out, _ = cli("kill", junk.raw_id)
    assert status == 0 and r.zscore(keys.DEAD, b"\xff not json") is not None
    assert b"not valid JSON" in r.hget(keys.DEAD_REASONS, b"\xff not json")
    status, out, _ = cli("kill", nan_job.raw_id)  # NaN is refused at decode, so it has no jid to go by
    assert status == 0 and r.zcard(keys.SCHEDULE) == 0
    assert b"NaN is not a JSON number" in r.hget(keys.DEAD_REASONS, b'{"class":"A","args":[NaN],"jid":"j-nan"}')
    status, out, _ = cli("delete", deep.raw_id, "--json")
    assert status == 0 and strict_json(out)["from"] == ["dead"] and r.zcard(keys.DEAD) == 2
    status, _, err = cli("retry", "raw:0000000000000000")
    assert status == 1 and err.startswith("no job with jid 'raw:0000000000000000'")


def test_kill_moves_every_copy_of_a_jid(cli, r):
    copies = [json.dumps({"class": "A", "args": [i], "jid": "c" * 24}).encode() for i in range(3)]
    r.zadd(keys.RETRY, {copies[0]: 1, copies[1]: 2})
    r.zadd(keys.SCHEDULE, {copies[2]: 3})
    status, out, _ = cli("kill", "c" * 24, "--json")
    assert status == 0 and strict_json(out)["killed"] == 3 and r.zcard(keys.DEAD) == 3


def test_api_entries_carry_dead_reasons_and_bulk_results(r):
    r.zadd(keys.DEAD, {b"junk": 1, b'{"class":"A","args":[],"jid":"ok"}': 2})
    r.hset(keys.DEAD_REASONS, b"junk", "unreadable payload".encode())
    reasons = {e.raw_id: e.reason for e in api.DeadSet(r)}
    assert reasons == {api.JobRecord(b"junk").raw_id: "unreadable payload",
                       api.JobRecord(b'{"class":"A","args":[],"jid":"ok"}').raw_id: None}
    assert [e.reason for e in api.DeadSet(r).page()] == [None, "unreadable payload"]
    assert api.DeadSet(r).find(api.JobRecord(b"junk").raw_id)[0].reason == "unreadable payload"
    [ok] = api.DeadSet(r).find("ok")
    r.hset(keys.DEAD_REASONS, ok.value, "why")
    assert ok.retry() and not r.hexists(keys.DEAD_REASONS, ok.value)  # retried: the reason goes with it
    r.hset(keys.DEAD_REASONS, b"gone-member", "stale")
    assert api.DeadSet(r).prune_reasons() == 1 and r.hkeys(keys.DEAD_REASONS) == [b"junk"]
    r.zadd(keys.RETRY, {b"junk2": 1, b'{"class":"A","args":[]}': 2})
    result = api.RetrySet(r).retry_each()
    assert result.done == 1 and [(e.value, "unparseable" in why) for e, why in result.left] == [(b"junk2", True)]


# --------------------------------------------------------------------------------------- URL masking

SECRETS = ["s3cr3t-Pa55word", "p@ss:w/rd?#x&y=z", "p\u00e4ssw\u00f6rt-\u5bc6\u7801", "sp ace\ttab\nnl", "100%sure+plus"]
#: {h} and {h2} are host:port pairs; the CLI test points them at closed local ports.
FORMS = ["redis://:{s}@{h}/0", "redis://user:{s}@{h}/0", "rediss://:{s}@{h}", "rediss://default:{s}@{h}",
         "unix://:{s}@/tmp/redis.sock?db=1", "unix://user:{s}@/tmp/redis.sock", "redis://{h}/0?password={s}",
         "redis://{h}/0?db=1&PASSWORD={s}", "redis://{h}/0?Password={s}&password={s}", "redis://{h}/0?pass%77ord={s}",
         "redis://{h}/0?db=0;password={s}", "redis://{h}/0?ssl_password={s}", "redis://:{s}@[::1",
         "redis://:{s}@h:notaport/0", "redis://:{s}@{h}/0#frag", "redis://h:{s}/0", ":{s}@{h}",
         "redis://:{s}@{h},{h2}/0", "REDIS://:{s}@{h}/0"]
SENTINEL_FORMS = ["redis+sentinel://:{s}@{h},{h2}/mymaster/0", "redis+sentinel://{s}@{h}/mymaster",
                  "redis+sentinel://u:{s}@{h},[::1]:2,{h2}/svc", "redis+sentinel://{h}/mymaster?password={s}"]


def url_cases(forms=FORMS + SENTINEL_FORMS, h="h:6379", h2="h2:6380"):
    for form in forms:
        for secret in SECRETS:
            yield form.format(s=quote(secret, safe=""), h=h, h2=h2), secret       # written properly
            if "%" not in secret:
                yield form.format(s=secret, h=h, h2=h2), secret                   # written carelessly


def visible(secret: str, text: str) -> bool:
    return any(form in text for form in {secret, quote(secret, safe=""), quote(secret), secret.replace(" ", "+")})


def test_mask_url_never_shows_a_secret_in_any_form():
    count = 0
    for url, secret in url_cases():
        masked = mask_url(url)
        assert not visible(secret, masked), (url, masked)
        assert "\n" not in masked and "***" in masked
        count += 1
    assert count > 200
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("redis://u:pw@h:1/2?db=3") == "redis://u:***@h:1/2?db=3"
    assert mask_url("redis+sentinel://:pw@h1:1,h2:2/m") == "redis+sentinel://:***@h1:1,h2:2/m"


def test_scrub_hides_secrets_echoed_in_messages():
    url = "redis://:p%40ssw0rd@h/0?password=other-secret"
    text = scrub(f"failed for {url} with p@ssw0rd and other-secret", url)
    assert "p@ssw0rd" not in text and "p%40ssw0rd" not in text and "other-secret" not in text


def test_sentinel_urls_with_a_password_and_several_hosts_parse():
    assert parse_sentinel_url("redis+sentinel://:p%40ss@h1:26379,h2:26380,[::1]:26381/mymaster/2") == (
        [("h1", 26379), ("h2", 26380), ("::1", 26381)], "mymaster", 2, "p@ss")
    assert parse_sentinel_url("redis+sentinel://user:pw@h1:1/svc?password=")[3] == "pw"
    assert parse_sentinel_url("redis+sentinel://h1:1/svc?password=x")[3] == "x"
    for bad in ("redis+sentinel://:s3cret@h1:1,h2/svc", "redis+sentinel://:s3cret@h1:1/svc/x",
                "redis+sentinel://:s3cret@h1:99999/svc", "redis+sentinel://:s3cret@/svc",
                "redis+sentinel://:s3cret@h1:1/svc?timeout=3", "redis+sentinel://:s3cret@h1:1/svc/\u00b2",
                "redis+sentinel://:s3cret@h1:1"):
        with pytest.raises(ValueError) as err:
            parse_sentinel_url(bad)
        assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_sidepunch_never_shows_a_secret(cli):
    closed = f"127.0.0.1:{free_port()}"
    cases = list(url_cases(FORMS, h=closed, h2=closed))
    # Sentinel discovery retries each sentinel for seconds: one careless form and one proper one suffice.
    cases += [c for c in url_cases(SENTINEL_FORMS[:1], h=closed, h2=closed) if "p@ss" in c[1]]
    for url, secret in cases:
        status, out, err = cli("stats", url=url)
        assert status in (2, 3) and out == "", (url, err)
        assert not visible(secret, err), (url, err)
    status, _, err = cli("stats", "redis://:s3cretpw@h/0", url=None)  # the URL in the wrong place
    assert status == 2 and "s3cretpw" not in err


@pytest.mark.parametrize("form", ["redis://:{s}@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0?password={s}",
                                  "redis+sentinel://:{s}@127.0.0.1:{port},127.0.0.1:{port2}/mymaster"])
def test_sidepunchd_logs_no_secret_at_start_or_in_outage_lines(daemon, form):
    secret = "n0t-f0r-l0gs"
    url = form.format(s=secret, port=free_port(), port2=free_port())
    d = daemon("--workers", "1", "--threads", "1", url=url)
    d.wait_log("cannot reach Redis at", timeout=30)
    log = d.log()
    assert f"sidepunchd using Redis at {mask_url(url)}" in log and "***" in mask_url(url)
    assert secret not in log


def test_bad_redis_urls_are_one_line_in_sidepunch(cli):
    for url in ("redis://h/0?foo=bar", "redis://:s3cret@h:99999/0", "http://example.com", "redis://[::1"):
        status, out, err = cli("stats", url=url)
        assert status == 2 and out == "" and err.startswith("sidepunch: bad Redis URL") and "s3cret" not in err


def test_unexpected_errors_are_one_line(cli, r, monkeypatch):
    def explode(*args, **kwargs):
        raise ZeroDivisionError("boom\nsecond line")
    monkeypatch.setattr(api.Stats, "summary", explode)
    status, out, err = cli("stats")
    assert status == admin.Status.BUG and err.strip() == (
        "sidepunch stats: unexpected error (ZeroDivisionError: boom second line)")


@pytest.mark.parametrize("args_json", ["[" * 5000 + "]" * 5000, "[NaN]", '["\\ud800"]', "[1e400]", "\udcff"])
def test_enqueue_refuses_arguments_json_cannot_carry_in_one_line(cli, r, args_json):
    status, out, err = cli("enqueue", "A", args_json)
    assert status == 2 and out == "" and err.startswith("sidepunch enqueue: ")
    assert not r.exists("queue:default")
