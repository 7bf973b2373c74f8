"""Generated hostile payloads and a census of where each one ended up, for the recovery and scheduler tests.

Every payload carries a unique tag (its bytes contain it, whatever else is wrong with them), so a test can
check that each one is in exactly one place: a queue, a working list, `schedule`, `retry`, `dead`, or `done`
(the list testjobs.Record appends its first argument to).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

RECORD = "testjobs.Record"


@dataclass(frozen=True)
class Case:
    tag: str
    kind: str
    raw: bytes
    readable: bool      # payload.decode accepts it
    runs: bool = False  # a readable Record job whose run appends its tag to `done`


def _job(tag: str, **fields) -> dict:
    return {"class": RECORD, "args": [tag], "jid": tag, **fields}


def _dumps(job: dict) -> bytes:
    return json.dumps(job, separators=(",", ":")).encode()


def _unreadable(tag: str, deep: int) -> dict[str, bytes]:
    t = tag.encode()
    good = _dumps(_job(tag))
    head = b'{"class":"testjobs.Record","args":["' + t + b'"'
    return {
        "not json": b"not json at all " + t,
        "truncated": head,
        "array": b'["' + t + b'",1]',
        "string": b'"' + t + b'"',
        "number with tag": t + b"12",
        "non-utf8 in args": head + b',"\xff\xfe\xc3"]}',
        "non-utf8 key": b'{"\xff' + t + b'":1,"class":"X","args":[]}',
        "NaN": head + b",NaN]}",
        "Infinity": head + b",Infinity]}",
        "-Infinity": head + b",-Infinity]}",
        "float overflow": head + b",1e999]}",
        "negative float overflow": head + b",-4.5e400]}",
        "lone high surrogate": head + b',"\\ud800"]}',
        "lone low surrogate": head + b',"x\\udfffy"]}',
        "reversed surrogates": head + b',"\\udc00\\ud800"]}',
        "surrogate in key": b'{"\\ud801' + t + b'":1,"class":"X","args":[]}',
        f"nested {deep} deep": head + b"," + b"[" * deep + b"]" * deep + b"]}",
        "nested 101 deep (limit + 1)": b'{"class":"X","args":["' + t + b'",' + b"[" * 99 + b"]" * 99 + b"]}",
        "huge int": head + b"," + b"7" * 5000 + b"]}",
        "no class": b'{"args":["' + t + b'"]}',
        "class not a string": b'{"class":5,"args":["' + t + b'"]}',
        "empty class": b'{"class":"","args":["' + t + b'"]}',
        "BOM": b"\xef\xbb\xbf" + good,
        "trailing garbage": good + b"}" + t,
        "two objects": good + good,
        "NUL bytes": b"\x00" + t + b"\x00",
        "single quotes": b"{'class':'testjobs.Record','args':['" + t + b"']}",
        "only whitespace around tag": b"   " + t + b"   ",
    }


ODD_COUNTS = ["3", -5, 1.5, True, None, [], {"n": 1}, int("9" * 4300), 2 ** 64, -(10 ** 30)]


def _readable(tag: str, odd_count) -> dict[str, tuple[bytes, bool]]:
    """kind -> (payload, whether running it appends the tag to `done`)."""
    huge_count = b'{"class":"testjobs.Record","args":["' + tag.encode() + b'"],"interrupted_count":' + \
        b"9" * 4300 + b"}"
    return {
        "plain": (_dumps(_job(tag)), True),
        f"interrupted_count {odd_count!r:.20}": (_dumps(_job(tag, interrupted_count=odd_count)), True),
        "interrupted_count of 4300 digits": (huge_count, True),
        "padded with whitespace": (b" \n\t " + json.dumps(_job(tag)).encode() + b" \r\n ", True),
        "escaped count key": (_dumps(_job(tag))[:-1] + b',"interrupted\\u005fcount":1}', True),
        "duplicate count keys": (_dumps(_job(tag))[:-1] + b',"interrupted_count":7,"interrupted_count":0}', True),
        "count inside args": (json.dumps({"class": RECORD, "args": [tag, {"interrupted_count": 99}]}).encode(),
                              True),
        "unicode and escapes": (json.dumps(_job(tag, note="zürich \u2028 \U0001F600 \"q\" \\"),
                                           ensure_ascii=False).encode(), True),
        "odd floats": (_dumps(_job(tag, big=1e300, small=-2.5e-300)), True),
        "depth exactly 100": (b'{"class":"testjobs.Record","args":["' + tag.encode() + b'",' + b"[" * 98 +
                              b"]" * 98 + b"]}", True),
        "queue field not a string": (_dumps(_job(tag, queue={"x": 1})), True),
        "unknown class": (_dumps({"class": "nowhere.Nothing", "args": [tag], "jid": tag}), False),
        "args not a list": (_dumps({"class": RECORD, "args": {"v": tag}, "jid": tag}), False),
        "error fields already": (_dumps(_job(tag, error_message=[1], error_class=None, failed_at="x")), True),
    }


def cases(seed: int, prefix: str = "T") -> list[Case]:
    """One payload of every kind; the seed picks the nesting depth, the odd count and the tags."""
    rng = random.Random(seed)
    deep = rng.choice([101, 150, 5000, 200_000])
    odd_count = rng.choice(ODD_COUNTS)
    out: list[Case] = []

    def tag() -> str:
        return f"{prefix}{len(out):04d}x{rng.randrange(10 ** 6):06d}"

    for kind in _unreadable("", deep):
        t = tag()
        out.append(Case(t, kind, _unreadable(t, deep)[kind], readable=False))
    for kind in _readable("", odd_count):
        t = tag()
        raw, runs = _readable(t, odd_count)[kind]
        out.append(Case(t, kind, raw, readable=True, runs=runs))
    return out


def census(r, tags) -> dict[str, list[str]]:
    """tag -> the places (key names) whose entries contain it, one item per entry."""
    found: dict[str, list[str]] = {t: [] for t in tags}
    needles = [(t, t.encode()) for t in tags]
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"list":
            entries = r.lrange(key, 0, -1)
        elif kind == b"zset":
            entries = r.zrange(key, 0, -1)
        else:
            continue
        name = key.decode(errors="backslashreplace")
        for entry in entries:
            for t, needle in needles:
                if needle in entry:
                    found[t].append(name)
    return found


def misplaced(r, tags, allowed=None) -> dict[str, list[str]]:
    """The tags that are not in exactly one place (or are in a place outside `allowed`)."""
    out = {}
    for t, places in census(r, tags).items():
        if len(places) != 1 or (allowed is not None and places[0] not in allowed):
            out[t] = places
    return out
