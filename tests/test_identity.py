"""Process identities (sidepunch/core/identity.py): hostile hostnames never make an identity that the working-list
parser, the orphan sweep or Redis would read as another one."""
from __future__ import annotations

import random
import string

import pytest

from sidepunch.core import identity, keys
from sidepunch.server.recovery import OrphanSweeper, RecoveryPolicy
from conftest import wait_for

HOSTILE = ["a:b", "evil:1:deadbeef", ":", "::::", "", " ", "host\nname", "h\x1b[2Jx", "\udcff\udcfe", "bidi\u202e",
           "tab\there", "x" * 5000, "web.1", "ünïcødé", "a:b.3", "host.7:12", "日本:語", "\x00", "\u2028"]


def random_hostnames(seed: int, n: int = 200) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.printable + ":::..\x00\x1b\u202e\udcff\u2028 é"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("host", HOSTILE + random_hostnames(1))
def test_an_identity_parses_back_to_itself_whatever_the_hostname(host):
    made = identity.make(host, 4242, "0a1b2c3d4e5f")
    parsed = identity.parse(made)
    assert parsed is not None and str(parsed) == made and parsed.pid == 4242 and parsed.nonce == "0a1b2c3d4e5f"
    assert ":" not in parsed.hostname and parsed.hostname and parsed.hostname.isprintable() and " " not in made
    assert len(parsed.hostname) <= identity.MAX_HOSTNAME
    made.encode("utf-8")  # Redis gets it as UTF-8: no lone surrogate survives
    # keys.parse_working (the orphan sweep's reader) gives back this exact identity, queue names with ':' too
    for queue in ("default", "a:b", "x.y"):
        for key in (keys.working(queue, made, 7), keys.working(queue, made, 7).encode()):
            back = keys.parse_working(key)
            assert back is not None and back[1] == (made if isinstance(key, str) else made.encode())
            assert back[0] == (queue if isinstance(key, str) else queue.encode())


@pytest.mark.parametrize("host", HOSTILE)
def test_safe_hostname_is_idempotent_and_keeps_plain_names(host):
    once = identity.safe_hostname(host)
    assert identity.safe_hostname(once) == once
    assert identity.safe_hostname("web-1.example.com") == "web-1.example.com"


def test_hostname_prefers_dyno_as_sidekiq_and_sanitises_it():
    assert identity.hostname({"DYNO": "web.1"}) == "web.1"
    assert identity.hostname({"DYNO": "web:1"}) == "web_1"
    assert identity.hostname({"DYNO": ""}) == identity.safe_hostname(__import__("socket").gethostname())
    assert identity.hostname({}) == identity.hostname({"DYNO": ""})


@pytest.mark.parametrize("text", ["", "nohost", "a:b", ":1:x", "h::x", "h:1:", "h:x:y", "h:-1:x", "h:1e3:x",
                                  "h:١٢:x", "h:" + "9" * 30 + ":x"])
def test_parse_refuses_what_is_not_an_identity(text):
    assert identity.parse(text) is None


def test_parse_reads_foreign_identities_with_colons_in_the_hostname():
    parsed = identity.parse("fe80::1:4242:abcdef")
    assert parsed == identity.Identity("fe80::1", 4242, "abcdef")


@pytest.mark.parametrize("nonce", ["", "a:b"])
def test_make_refuses_a_nonce_that_would_break_parsing(nonce):
    with pytest.raises(ValueError):
        identity.make("host", 1, nonce)


def test_nonces_are_fresh_hex():
    nonces = {identity.new_nonce() for _ in range(50)}
    assert len(nonces) == 50 and all(len(n) == 2 * identity.NONCE_BYTES and int(n, 16) >= 0 for n in nonces)


def test_a_daemon_on_a_hostile_hostname_keeps_its_running_job_through_an_orphan_sweep(daemon, r, client):
    """DYNO with ':' used to give working lists the sweep read as another, dead, identity's, so a sweep by any
    master requeued the job a live worker was running."""
    d = daemon("--workers", "1", "--threads", "1", "-r", "testjobs",
               env={"DYNO": "evil:1:deadbeef\x1b host"})
    d.wait_children(1)
    client.push({"class": "testjobs.Sleep", "args": ["slow", 3]})
    wait_for(lambda: r.lrange("started", 0, -1) == [b"slow"], 15, message="the job to start")
    [member] = r.smembers(keys.PROCESSES)
    parsed = identity.parse(member.decode())
    assert parsed is not None and parsed.hostname == "evil_1_deadbeef__host" and parsed.pid == d.children()[0].pid
    [working] = [k for k in r.keys(b"working:queue:*") if r.llen(k)]
    assert keys.parse_working(working) == (b"default", member)
    policy = RecoveryPolicy(max_interruptions=3, dead_max_jobs=100, dead_timeout=1e9)
    wait_for(lambda: not r.exists(keys.RECOVERY_LOCK), 15, message="the daemon's own sweep to end")
    found = OrphanSweeper(r, policy).sweep()
    assert found.requeued + found.killed == 0 and r.llen("queue:default") == 0 and r.llen(working) == 1
    wait_for(lambda: r.lrange("done", 0, -1) == [b"slow"], 15, message="the job to finish")
    assert r.llen("queue:default") == 0 and r.zcard(keys.DEAD) == 0 and r.zcard(keys.RETRY) == 0
