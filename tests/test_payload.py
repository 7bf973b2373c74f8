"""Payload encoding and validation (no Redis)."""
import json
import math
import re

import pytest

from sidepunch.payload import PayloadError, check_json_native, decode, encode, new_jid, normalize, ruby_float


def test_jid_is_24_lowercase_hex():
    jids = {new_jid() for _ in range(100)}
    assert len(jids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{24}", j) for j in jids)


@pytest.mark.parametrize("value, spelled", [
    (1.5, "1.5"), (1795380543.5563025, "1795380543.5563025"), (1e15, "1.0e+15"), (1.234e20, "1.234e+20"),
    (1e-05, "1.0e-05"), (-2.5e-07, "-2.5e-07"), (0.0001, "0.0001"), (123456789012345.6, "123456789012345.6"),
    (1234567890123456.0, "1.234567890123456e+15"), (0.0, "0.0"),
])
def test_floats_are_spelled_as_ruby_does(value, spelled):
    assert ruby_float(value) == spelled
    assert float(spelled) == value


def test_encode_matches_ruby_json_generate():
    job = {"args": ["é/<>&\u2028", 'q"\\', "\n\t\x01", 2 ** 70, 1e15, None, True], "k": {"a": 1.0}}
    assert encode(job) == ('{"args":["é/<>&\u2028","q\\"\\\\","\\n\\t\\u0001",1180591620717411303424,'
                           '1.0e+15,null,true],"k":{"a":1.0}}').encode()


@pytest.mark.parametrize("bad, word", [
    (__import__("datetime").datetime(2020, 1, 1), "datetime"), ({1, 2}, "set"), (b"x", "bytes"),
    (object(), "object"), ({1: "a"}, "key 1"), (math.nan, "nan"), (math.inf, "inf"), ((1, 2), "tuple"),
])
def test_non_json_arguments_are_rejected_by_name(bad, word):
    with pytest.raises(TypeError) as err:
        check_json_native(["ok", {"nested": [bad]}])
    assert "args[1]['nested'][0]" in str(err.value)
    assert word in str(err.value)


def test_normalize_follows_sidekiq_key_order():
    job, _ = normalize({"class": "X", "args": [1], "tags": ["a"], "queue": "low"},
                       {"retry": 3, "queue": "default", "backtrace": True}, "X", now=1.5)
    assert list(job) == ["retry", "queue", "backtrace", "class", "args", "tags", "jid", "created_at"]
    assert job["queue"] == "low" and job["created_at"] == 1.5


@pytest.mark.parametrize("item, message", [
    ({"class": "X", "args": "nope"}, "args must be a list"),
    ({"class": "X", "args": [], "at": "soon"}, "'at' must be a number"),
    ({"class": "X", "args": [], "tags": "a"}, "'tags' must be a list"),
])
def test_normalize_validates_like_sidekiq(item, message):
    with pytest.raises(TypeError, match=message):
        normalize(item, {"retry": True, "queue": "default"}, "X")


def test_empty_queue_is_refused():
    with pytest.raises(ValueError):
        normalize({"class": "X", "args": [], "queue": ""}, {"retry": True, "queue": "default"}, "X")


@pytest.mark.parametrize("raw, problem", [
    (b"{not json", "not valid JSON"), (b"[1,2]", "not an object"), (b'{"args":[]}', "no 'class'"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_decode_rejects_what_cannot_run(raw, problem):
    with pytest.raises(PayloadError, match=problem):
        decode(raw)


def test_decode_keeps_big_integers_and_unknown_keys():
    job = decode(b'{"class":"X","args":[123456789012345678901234567890],"custom":{"a":[1]}}')
    assert job["args"][0] == 123456789012345678901234567890
    assert json.loads(encode(job)) == job


@pytest.mark.parametrize("raw, why", [
    (b'{"class":"A","args":[NaN]}', "NaN"), (b'{"class":"A","args":[-Infinity]}', "Infinity"),
    (b'{"class":"A","args":[1e999]}', "overflows"), (b'{"class":"A","args":[-1' + b"0" * 400 + b'.5]}', "overflows"),
    (b'{"class":"A","args":["\\ud800"]}', "surrogate"), (b'{"class":"A","args":[{"\\uDC00x":1}]}', "surrogate"),
    (b'{"class":"A","args":' + b"[" * 100 + b"]" * 100 + b"}", "deeper than 100"),
    (b'{"class":"A","args":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deeper than 100"),
    (b'{"class":"A","args":[1' + b"0" * 5000 + b"]}", "not valid JSON"),
    (b'{"class":"A","args":["\xff"]}', "not valid JSON"), (b'{"class":"\xc3"}', "not valid JSON"),
])
def test_decode_refuses_what_cannot_be_written_back(raw, why):
    with pytest.raises(PayloadError, match=why):
        decode(raw)


@pytest.mark.parametrize("raw", [
    b'{"class":"A","args":["\\ud83d\\ude00","\\\\ud800"]}',         # a surrogate pair; an escaped backslash
    b'{"class":"A","args":' + b"[" * 99 + b"]" * 99 + b"}",          # exactly MAX_DEPTH levels
    b'{"class":"A","args":[' + b",".join([b'{"a":[1]}'] * 300) + b"]}",  # many brackets, shallow
    b'{"class":"A","args":[1.0e+300,-2.5e-07,' + b"9" * 4000 + b"]}",
])
def test_decode_accepts_every_writable_payload(raw):
    job = decode(raw)
    assert json.loads(encode(job)) == json.loads(raw)


def test_decoded_payloads_always_encode_again():
    """Property: whatever random JSON-ish bytes decode, encode can write back (the root of every re-encode)."""
    import random
    rng = random.Random(11)
    atoms = [b"NaN", b"Infinity", b"1e999", b"1e308", b'"\\ud800"', b'"\\ud83d\\ude00"', b'"\\\\u"', b"0", b"-0.0",
             b"true", b"null", b'"\xc3\xa9"', b'"\xff"', b"1" + b"0" * 350 + b".0", b"[]", b"{}"]

    def value(level):
        roll = rng.random()
        if level > 120 or roll < 0.4:
            return rng.choice(atoms)
        if roll < 0.7:
            return b"[" + b",".join(value(level + 1) for _ in range(rng.randrange(3))) + b"]"
        return b'{"k":' + value(level + 1) + b"}"
    accepted = 0
    for _ in range(3000):
        raw = b'{"class":"A","args":[' + value(2) + b"]}"
        try:
            job = decode(raw)
        except PayloadError:
            continue
        encode(job)
        accepted += 1
    assert 300 < accepted < 3000
