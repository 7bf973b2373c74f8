"""Payload encoding and decoding, and the checks on what the client writes (validate.py); no Redis."""
import json
import math
import re
import sys

import pytest

from sidepunch.core.payload import MAX_DEPTH, PayloadError, decode, depth, encode, new_jid, ruby_float
from sidepunch.client.validate import check_json_native, check_queue_name, normalize, unfit


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


# --- the client's limits -----------------------------------------------------------------------------------

def nest(levels, leaf=1):
    """`levels` lists around `leaf`, built without recursion."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels, ok", [(1, True), (97, True), (98, True), (99, False), (150, False),
                                        (100_000, False)])
def test_argument_nesting_limit_is_decodes_limit(levels, ok):
    """args is level 2, so an argument may hold MAX_DEPTH - 2 levels; exactly what decode accepts."""
    args = ["x", nest(levels)]
    raw = b'{"class":"A","args":["x",' + b"[" * levels + b"1" + b"]" * levels + b"]}"
    if ok:
        check_json_native(args)
        assert json.loads(encode(decode(raw))) == {"class": "A", "args": args}
        return
    with pytest.raises(ValueError) as err:
        check_json_native(args)
    assert str(err.value).startswith("args[1][0][0]") and f"at most {MAX_DEPTH} levels" in str(err.value)
    assert "more)" in str(err.value) and len(str(err.value)) < 300  # the path is abbreviated
    with pytest.raises(PayloadError, match="deeper than"):
        decode(raw)


def test_other_fields_have_one_more_level_than_arguments():
    job, _ = normalize({"class": "X", "args": [], "custom": nest(99)}, {"queue": "q"}, "X")
    assert depth(job) == MAX_DEPTH and decode(encode(job)) == job
    with pytest.raises(ValueError, match=r"^custom\[0\]\[0\].* is nested 101 levels deep"):
        normalize({"class": "X", "args": [], "custom": nest(100)}, {"queue": "q"}, "X")


def test_recursive_structures_are_named_not_recursed():
    loop = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match=r"args\[0\] contains itself \(at args\[0\]\[1\]\)"):
        check_json_native([loop])
    d = {"a": []}
    d["a"].append({"back": d})
    with pytest.raises(ValueError, match=r"args\[2\] contains itself \(at args\[2\]\['a'\]\[0\]\['back'\]\)"):
        check_json_native([1, 2, d])


@pytest.mark.parametrize("value", [10 ** 4300, -(10 ** 4300), 10 ** 100_000, 2 ** 20_000],
                         ids=["1e4300", "-1e4300", "1e100000", "2**20000"])
def test_ints_json_cannot_write_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^args\[0\]\['n'\] is an int of about \d+ digits; json writes at most "
                                         r"4300"):
        check_json_native([{"n": value}])


def test_ints_up_to_the_limit_pass_and_follow_the_process_setting():
    biggest = 10 ** 4300 - 1   # 4300 digits: json writes it, Ruby reads it as a Bignum, decode reads it back
    job, _ = normalize({"class": "X", "args": [biggest, -biggest, 2 ** 64]}, {"queue": "q"}, "X")
    assert decode(encode(job))["args"] == [biggest, -biggest, 2 ** 64]
    saved = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(1000)
        check_json_native([10 ** 999])
        with pytest.raises(ValueError, match="at most 1000"):
            check_json_native([10 ** 1000])
        sys.set_int_max_str_digits(0)  # no limit: json writes any int
        check_json_native([10 ** 5000])
    finally:
        sys.set_int_max_str_digits(saved)


@pytest.mark.parametrize("args, where", [
    (["\ud800"], r"args\[0\] holds a lone surrogate '\\ud800' at index 0"),
    (["ok", {"k": ["a\udcffb"]}], r"args\[1\]\['k'\]\[0\] holds a lone surrogate '\\udcff' at index 1"),
    ([{"\udc80": 1}], r"args\[0\] has a key '\\udc80' that holds a lone surrogate"),
])
def test_unfit_names_lone_surrogates(args, where):
    check_json_native(args)  # the fast check leaves strings to the UTF-8 encoding ...
    with pytest.raises(UnicodeEncodeError):
        encode({"args": args})
    assert re.match(where, str(unfit(args)))  # ... and this says where it failed


@pytest.mark.parametrize("bad, kind, words", [
    ({(1, 2): "a"}, TypeError, "args[0] has a key of type tuple"), ({None: 1}, TypeError, "key None"),
    (-math.inf, TypeError, "-inf"), (__import__("decimal").Decimal(1), TypeError, "decimal.Decimal"),
])
def test_more_non_json_values_are_named(bad, kind, words):
    with pytest.raises(kind) as err:
        check_json_native([bad])
    assert words in str(err.value)


def test_foreign_reprs_never_run():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("repr ran")

        @property
        def __class__(self):
            raise RuntimeError("__class__ ran")

    with pytest.raises(TypeError, match=r"args\[0\] is a .*Hostile, which is not JSON-native"):
        check_json_native([Hostile()])
    with pytest.raises(TypeError, match="must be a str"):
        check_queue_name(Hostile())


@pytest.mark.parametrize("name", ["default", "mail-high", "a b", "critical:eu", "é", "队列", "🚀" * 63,
                                  "x" * 255,
                                  "é" * 127, "a\u00a0b", "zero\u200dwidth"])
def test_fetchable_queue_names_pass(name):
    assert check_queue_name(name) == name


@pytest.mark.parametrize("name, kind, words", [
    ("", ValueError, "is empty"), ("a,b", ValueError, "comma"), (",", ValueError, "comma"),
    (" a", ValueError, "whitespace"), ("a\n", ValueError, "whitespace"), ("a\u3000", ValueError, "whitespace"),
    ("a\x00b", ValueError, "control character"), ("a\tb", ValueError, "control character"),
    ("a\x7fb", ValueError, "control character"), ("a\x85b", ValueError, "control character"),
    ("a\u2028b", ValueError, "line separator"), ("a\ud800b", ValueError, "lone surrogate"),
    ("x" * 256, ValueError, "at most 255"), ("é" * 128, ValueError, "256 bytes"),
    ("x" * 10 ** 6, ValueError, "at most 255"),
    (5, TypeError, "must be a str, got 5"), (None, TypeError, "got None"), (b"q", TypeError, "bytes"),
])
def test_unfetchable_queue_names_are_refused_by_name(name, kind, words):
    with pytest.raises(kind) as err:
        check_queue_name(name, "retry_queue")
    assert str(err.value).startswith("retry_queue") and words in str(err.value)


def test_a_str_enum_queue_is_its_value():
    import enum

    class Q(str, enum.Enum):
        MAIL = "mail"

    job, _ = normalize({"class": "X", "args": [], "queue": Q.MAIL}, {}, "X")
    assert type(job["queue"]) is str and job["queue"] == "mail"


@pytest.mark.parametrize("at, kind, words", [
    (True, TypeError, "got True"), (None, TypeError, "got None"), ("5", TypeError, "got '5'"),
    (math.nan, TypeError, "finite"), (10 ** 400, ValueError, "not a finite float"),
    (__import__("decimal").Decimal("sNaN"), ValueError, "not a finite float"),
])
def test_at_must_be_a_finite_number(at, kind, words):
    with pytest.raises(kind) as err:
        normalize({"class": "X", "args": [], "at": at}, {"queue": "q"}, "X")
    assert "'at'" in str(err.value) and words in str(err.value)


def test_at_takes_any_real_number_as_float():
    from fractions import Fraction
    for at in (5, 2.5, Fraction(7, 2), __import__("decimal").Decimal("1.5")):
        job, _ = normalize({"class": "X", "args": [], "at": at}, {"queue": "q"}, "X")
        assert type(job["at"]) is float and job["at"] == float(at)


@pytest.mark.parametrize("item, kind, words", [
    ({"jid": 5}, TypeError, "'jid' must be a non-empty str, got 5"), ({"jid": ""}, TypeError, "'jid'"),
    ({"tags": ""}, TypeError, "'tags' must be a list"), ({"tags": 0}, TypeError, "'tags'"),
    ({"retry_queue": "a,b"}, ValueError, "retry_queue 'a,b' holds a comma"),
    ({"queue": None}, TypeError, "queue must be a str"), ({1: "x"}, TypeError, "the job has a key 1"),
    ({"retry": 10 ** 5000}, ValueError, "retry is an int"),
    ({"x y": [{1}]}, TypeError, "['x y'][0] is a builtins.set"),
])
def test_every_field_is_checked_by_name(item, kind, words):
    with pytest.raises(kind) as err:
        normalize({"class": "X", "args": [], **item}, {"queue": "q"}, "X")
    assert words in str(err.value)


def test_sidekiq_falsy_options_are_kept_or_filled_as_sidekiq_does():
    job, _ = normalize({"class": "X", "args": [], "jid": None, "created_at": None, "tags": None,
                        "retry_queue": False}, {"queue": "q"}, "X", now=7.0)
    assert len(job["jid"]) == 24 and job["created_at"] == 7.0 and job["tags"] is None


def test_unfit_paths_keep_their_ends():
    value = nest(150, leaf={"deep key": 1})
    message = str(unfit({"args": [value]}, "", 1))
    assert message.startswith("args[0][0][0][0][0][0]…(") and "levels deep" in message
    assert str(unfit({"we ird": [b""]}, "", 1)).startswith("['we ird'][0] is a builtins.bytes")


def _reference_parse(text):
    """What parse answered before its fast path: the strict decoder's decode, value or error message."""
    from sidepunch.core import payload
    try:
        return "ok", payload._DECODER.decode(text)
    except RecursionError:
        return "error", f"job is nested deeper than {MAX_DEPTH} levels"
    except ValueError as exc:
        return "error", f"job is not valid JSON ({exc})"


def test_decode_answers_as_the_strict_decoder_does_for_any_text():
    """parse skips the decoder's whitespace scans for text that has no whitespace around its value; for
    every kind of text (padded, trailing data, truncated, constants, overflowing floats, deep, not an object)
    the value, or the error and its message, is what the strict decoder alone gives."""
    import random
    from sidepunch.core.payload import parse
    good = '{"class":"C","args":[1,2.5,"x",{"k":[null,true]}],"jid":"abc","created_at":1796163579.5204866}'
    texts = [good, " " + good, good + " ", "\n" + good + "\t", good + "x", good + "{}", good[:-1], good[1:], "",
             " ", "[]", "1", '"s"', "null", '{"class":"C","a":NaN}', '{"class":"C","a":-Infinity}',
             '{"class":"C","a":1e999}', '{"class":"C","a":1e308}', '{"class":"C","a":-1' + "0" * 400 + '.5}',
             "[" * 5000 + "]" * 5000, '{"a":' * 101 + "1" + "}" * 101, '{"class":"C"} {"class":"D"}',
             '{"class":"C","a":"\\ud800"}', '{"class":"C","a":"\\ud83d\\ude00"}', '{"class":"C",}', "\ufeff" + good]
    rng = random.Random(12)
    for _ in range(300):  # damaged copies of a good payload: cut, a byte changed, whitespace put in
        cut = list(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(cut) + 1)
            cut.insert(at, rng.choice(' \n\t{}[],:"e1-.aN'))
            if rng.random() < 0.5 and cut:
                del cut[rng.randrange(len(cut))]
        texts.append("".join(cut))
    for text in texts:
        try:
            got = "ok", parse(text, "job")
        except PayloadError as exc:
            got = "error", str(exc)
        want = _reference_parse(text)
        if want[0] == "ok" and got[0] == "error":  # refused after decoding (depth, surrogates): both paths do
            continue
        assert got == want, text
