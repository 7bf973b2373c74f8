"""One rule for queue names, shared by the client (validate.check_queue_name) and the daemon's -q parsing."""
import random
import unicodedata

import pytest

from sidepunch.server.config import ConfigError, QueueSpec, build_config, parse_queue
from sidepunch.client.validate import MAX_QUEUE_BYTES, check_queue_name


@pytest.mark.parametrize("text, spec", [
    ("critical", QueueSpec("critical")), ("low,3", QueueSpec("low", 3)), (" low , 3 ", QueueSpec("low", 3)),
    ("my queue,2", QueueSpec("my queue", 2)), ("é,10", QueueSpec("é", 10)), ("a,", QueueSpec("a")),
])
def test_parse_queue_reads_name_and_weight(text, spec):
    assert parse_queue(text) == spec


@pytest.mark.parametrize("text, words", [
    ("", "is empty"), (",3", "is empty"), ("a\x00", "control character"), ("a\x1bb,2", "control character"),
    ("a\ud800", "lone surrogate"), ("a\u2029b", "paragraph separator"), ("x" * 300, "at most 255"),
])
def test_parse_queue_refuses_what_no_client_can_fill(text, words):
    with pytest.raises(ValueError) as err:
        parse_queue(text)
    assert words in str(err.value)


@pytest.mark.parametrize("argv, env, words", [
    (["-q", "a\x01b"], {}, "--queue: queue 'a\\x01b' holds a control character"),
    ([], {"SIDEPUNCH_QUEUES": "ok ,3"}, "$SIDEPUNCH_QUEUES: queue '' is empty"),
])
def test_bad_queues_are_one_line_config_errors(argv, env, words):
    with pytest.raises(ConfigError) as err:
        build_config(argv, env)
    assert words in str(err.value) and "\n" not in str(err.value)


def forbidden(name):
    """An independent statement of the rule, to check check_queue_name against."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return True
    return (not 0 < size <= MAX_QUEUE_BYTES or "," in name or name != name.strip()
            or any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name))


def test_client_and_daemon_agree_on_every_name():
    """Property: a name the client takes is one `-q NAME` and `-q NAME,WEIGHT` fetch unchanged; a name it
    refuses is refused by the daemon too (or, padded with spaces, read as the trimmed name)."""
    rng = random.Random(9)
    alphabet = ["a", "Z", "0", "-", "_", ":", ".", "/", " ", ",", "\t", "\n", "\x00", "\x7f", "\x85", "\u00a0",
                "\u2028", "\u3000", "\u200d", "é", "队", "🚀", "\ud800", "\udcff", "\ue000", "\U000e0001"]
    accepted = 0
    for _ in range(4000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 5, 20, 64, 70, 200, 300])))
        try:
            assert check_queue_name(name) == name
        except ValueError as exc:
            assert forbidden(name), name
            assert str(exc).startswith("queue ")
            trimmed = name.split(",")[0].strip()
            try:
                assert parse_queue(name).name == trimmed != name
            except ValueError:
                pass
            continue
        assert not forbidden(name), name
        assert parse_queue(name) == QueueSpec(name) and parse_queue(f"{name},5") == QueueSpec(name, 5)
        accepted += 1
    assert 100 < accepted < 3900
