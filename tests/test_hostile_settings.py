"""Hostile settings: every numeric setting has a finite documented range, checked for flags, environment and
config file alike; every bad value, file type, pidfile or logfile ends with exit 2 and one line.

The bulk runs `build_config` in-process over generated bad values; a representative subset runs the real
`sidepunchd` (python -m sidepunch.server.cli) as a subprocess, which must exit 2 before it forks anything.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidepunch.server.config import MAX_WEIGHT, SETTINGS, ConfigError, QueueSpec, build_config, make_parser, option_table
from sidepunch.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
NUMERIC = [s for s in SETTINGS if s.limits]
BY_NAME = {s.name: s for s in SETTINGS}


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def bad_strings(s) -> list[str]:
    """Values a flag or an environment variable might carry that the setting must refuse."""
    low, high = s.limits
    values = ["nan", "NaN", "-nan", "inf", "+inf", "-inf", "Infinity", "-Infinity", "1e309", "-1e309",
              "abc", "1,5", "0x10", "true", "[1]", _text(low - 1), _text(high + 1), _text(high * 10),
              "9" * 40, "9" * 5000, "-" + "9" * 40]
    if s.kind == "int":
        values += ["1.5", "2.0", "1e3", "1_000", "\u0661", "+", "--1"]
    else:
        values += [repr(low - 0.001), repr(high + 0.5), "1e300", "-1e300", "5s", "1..2"]
    return values


def bad_toml(s) -> list[str]:
    """TOML right-hand sides a config file might hold that the setting must refuse."""
    low, high = s.limits
    values = ["nan", "+nan", "-nan", "inf", "+inf", "-inf", _text(low - 1), _text(high + 1), "9" * 30,
              '"4"', '"nan"', "true", "false", "[1]", "[]", "{ a = 1 }", "1979-05-27", "1979-05-27T07:32:00Z",
              "07:32:00"]
    if s.kind == "int":
        values += ["1.5", "2.0", "1e3"]
    else:
        values += ["1e300", "-1e300", repr(high + 0.5)]
    return values


def one_line_error(argv, env, *names):
    with pytest.raises(ConfigError) as err:
        build_config(argv, env)
    message = str(err.value)
    assert "\n" not in message and any(name in message for name in names), message
    return message


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_every_bad_flag_and_environment_value_is_refused(setting):
    for value in bad_strings(setting):
        one_line_error([f"{setting.flags[-1]}={value}"], {}, setting.flags[-1])
        one_line_error([], {setting.env: value}, setting.env)


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_every_bad_config_file_value_is_refused(setting, tmp_path):
    path = tmp_path / "sidepunch.toml"
    for value in bad_toml(setting):
        path.write_text(f"{setting.name} = {value}\n")
        one_line_error(["-C", str(path)], {}, f"config file setting {setting.name}")


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_the_ends_of_every_range_are_accepted_and_documented(setting, tmp_path):
    low, high = setting.limits
    for value in (low, high):
        assert getattr(build_config([setting.flags[-1], _text(value)], {}), setting.name) == value
        assert getattr(build_config([], {setting.env: _text(value)}), setting.name) == value
        path = tmp_path / "sidepunch.toml"
        path.write_text(f"{setting.name} = {int(value) if setting.kind == 'int' else float(value)!r}\n")
        assert getattr(build_config(["-C", str(path)], {}), setting.name) == value
    assert math.isfinite(low) and math.isfinite(high) and low <= high
    shown = f"allowed: {low:,.0f} to {high:,.0f}"
    assert shown in setting.doc and shown in option_table()
    assert shown in " ".join(make_parser().format_help().split())


def test_every_default_is_inside_its_range():
    for s in NUMERIC:
        default = s.default() if callable(s.default) else s.default
        assert s.limits[0] <= default <= s.limits[1], s.name


@pytest.mark.parametrize("spec", ["default,1000000000", f"default,{MAX_WEIGHT + 1}", "default,-1", "default,nan",
                                  "default,inf", "default,1.5", "default,1e3", "default,", "default, ", ",3",
                                  "default,1,2", "default,\u0661"])
def test_bad_queue_weights_are_refused_everywhere(spec, tmp_path):
    if spec in ("default,", "default, "):
        assert build_config(["-q", spec], {}).queues == (QueueSpec("default"),)  # NAME, alone means no weight
        return
    one_line_error(["-q", spec], {}, "--queue")
    one_line_error([], {"SIDEPUNCH_QUEUES": f"low {spec}"}, "$SIDEPUNCH_QUEUES")
    path = tmp_path / "sidepunch.toml"
    path.write_text(f"queues = [{spec!r}]\n".replace("'", '"'))
    one_line_error(["-C", str(path)], {}, "config file setting queues")


def test_queue_weights_up_to_the_maximum_are_accepted():
    assert build_config(["-q", f"a,{MAX_WEIGHT}", "-q", "b,0"], {}).queues == (QueueSpec("a", MAX_WEIGHT),
                                                                             QueueSpec("b", 0))


def test_an_empty_queue_list_is_refused(tmp_path):
    one_line_error([], {"SIDEPUNCH_QUEUES": "   "}, "$SIDEPUNCH_QUEUES")
    path = tmp_path / "sidepunch.toml"
    path.write_text("queues = []\n")
    one_line_error(["-C", str(path)], {}, "config file setting queues")


# Every kind of setting against every TOML type it must not accept.
WRONG_TYPES = {
    "int": ['"4"', "true", "1.0", "[4]", "{ a = 4 }", "1979-05-27"],
    "float": ['"4"', "false", "[4.0]", "{ a = 4 }", "07:32:00"],
    "str": ["4", "4.5", "true", '["x"]', "{ a = 'x' }", "1979-05-27T07:32:00Z"],
    "bool": ['"true"', "1", "0", "[true]", "{ a = true }"],
    "queue": ["4", "[4]", '[["a"]]', "{ a = 'x' }", "true", '["a", 1]'],
}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name != "config"], ids=lambda s: s.name)
def test_a_config_file_value_of_the_wrong_type_is_one_line(setting, tmp_path):
    path = tmp_path / "sidepunch.toml"
    wrong = list(WRONG_TYPES[setting.kind])
    if setting.many and setting.kind == "str":
        wrong = ["4", "[4]", '[["x"]]', "{ a = 'x' }", "true", '["x", false]']
    for value in wrong:
        path.write_text(f"{setting.name} = {value}\n")
        one_line_error(["-C", str(path)], {}, f"config file setting {setting.name}")


@pytest.mark.parametrize("content, words", [
    (b"[tool]\nsidepunch = 3\n", "tool.sidepunch must be a table"),
    (b"tool = 3\n", "no [tool.sidepunch] table"),
    (b'[project]\nname = "x"\n', "no [tool.sidepunch] table"),
])
def test_a_pyproject_without_a_usable_section_is_one_line(content, words, tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_bytes(content)
    assert words in one_line_error(["-C", str(path)], {}, str(path))


@pytest.mark.parametrize("content", [b"\xff\xfe = 1\n", b"threads = 3\x00\n", b"threads = \n", b"[[[\n"])
def test_an_unreadable_config_file_is_one_line(content, tmp_path):
    path = tmp_path / "sidepunch.toml"
    path.write_bytes(content)
    one_line_error(["-C", str(path)], {}, str(path))


def test_config_paths_that_cannot_be_opened_are_one_line(tmp_path):
    one_line_error(["-C", str(tmp_path)], {}, str(tmp_path))  # a directory
    one_line_error(["-C", "bad\x00path.toml"], {}, "bad")
    one_line_error([], {"SIDEPUNCH_CONFIG": str(tmp_path / "missing.toml")}, "does not exist")


# ------------------------------------------------------------------------------- the real sidepunchd

def run_daemon(args, env=None, cwd=None, timeout=30):
    """Run sidepunchd to completion; a daemon that did start (a missed check) is killed with its group."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for name in [k for k in full_env if k.startswith("SIDEPUNCH_")] + ["REDIS_PROVIDER"]:
        full_env.pop(name, None)
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "sidepunch.server.cli", *args], env=full_env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"sidepunchd {args} started instead of refusing its settings")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def assert_refused(args, words, env=None, cwd=None):
    status, out, err = run_daemon(args, env, cwd)
    assert status == 2 and out == "", (status, out, err)
    assert err.count("\n") == 1 and err.startswith("sidepunchd: error:") and words in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def toml(tmp_path):
    def write(text):
        path = tmp_path / "sidepunch.toml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return str(path)
    return write


def test_sidepunchd_refuses_bad_numbers_from_flags_environment_and_file(toml):
    assert_refused(["--timeout", "nan"], "--timeout")
    assert_refused(["-q", "default,1000000000"], "--queue")
    assert_refused(["--workers", "100000"], "--workers")
    assert_refused([], "$SIDEPUNCH_GRACE", env={"SIDEPUNCH_GRACE": "inf"})
    assert_refused([], "$SIDEPUNCH_THREADS", env={"SIDEPUNCH_THREADS": "9" * 5000})
    assert_refused(["-C", toml("worker_timeout = -inf\n")], "worker_timeout")
    assert_refused(["-C", toml("dead_timeout = 1e300\n")], "dead_timeout")


def test_sidepunchd_refuses_config_file_values_of_the_wrong_type(toml):
    for text, name in (('threads = "x"\n', "threads"), ("workers = true\n", "workers"),
                       ("[threads]\nx = 1\n", "threads"), ('tag = ["x"]\n', "tag"), ("queues = [1]\n", "queues"),
                       ('verbose = "yes"\n', "verbose"), ("require = 3\n", "require")):
        assert_refused(["-C", toml(text)], f"config file setting {name}")
    assert_refused(["-C", toml(b"\xff = 1\n")], "config file")


def test_sidepunchd_refuses_deep_nesting_and_long_dotted_keys_in_one_line(toml):
    assert_refused(["-C", toml("threads = " + "[" * 100_000 + "]" * 100_000 + "\n")], "nest too deeply")
    assert_refused(["-C", toml("threads = " + "{a=" * 100_000 + "1" + "}" * 100_000 + "\n")], "nest too deeply")
    assert_refused(["-C", toml("tag." + "a." * 300 + "b = 1\n")], "dotted key")
    assert_refused(["-C", toml("tag." + "a." * 450_000 + "b = 1\n")], "dotted key")  # minutes for tomllib
    assert_refused(["-C", toml("tag." + "a." * 20 + "b = 1\n")], "config file setting tag")
    assert_refused(["-C", toml("".join(f"k{n} = 1\n" for n in range(50_000)))], "and 49995 more")


def test_sidepunchd_refuses_a_pidfile_or_logfile_it_cannot_write(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    assert_refused(["--pidfile", str(missing / "x.pid")], "--pidfile")
    assert_refused(["--logfile", str(missing / "x.log")], "--logfile")
    assert_refused(["--logfile", str(tmp_path)], "--logfile")
    assert_refused([], "--pidfile", env={"SIDEPUNCH_PIDFILE": str(tmp_path)})
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_refused(["--pidfile", str(locked / "x.pid")], "--pidfile")


def test_sidepunchd_refuses_unusable_redis_urls_in_one_line():
    err = assert_refused(["--redis-url", "redis+sentinel://:s3cretpw@h1:26379,h2:notaport/mymaster"], "bad Redis URL")
    assert "s3cretpw" not in err
    err = assert_refused(["--redis-url", "redis://h/0?PASSWORD=s3cretpw"], "unknown option 'PASSWORD'")
    assert "s3cretpw" not in err
    err = assert_refused(["--redis-url", "redis://:s3cret/pw@h/0"], "bad Redis URL")
    assert "s3cret" not in err
    err = assert_refused(["redis://:s3cretpw@h/0"], "unrecognized arguments")  # the URL in the wrong place
    assert "s3cretpw" not in err


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_logfile_takes_text_that_utf8_cannot_encode(tmp_path, log_format, capsys):
    """Job data may carry lone surrogates into a log line; the file handler must not turn it into a
    "--- Logging error ---" traceback."""
    import logging
    from sidepunch.server.logs import setup_logging
    path = tmp_path / "sidepunchd.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(build_config(["--logfile", str(path), "--log-format", log_format], {}), {})
        logging.getLogger("sidepunch.test").error("job class %s", "A\ud800\udcff")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
    assert "A\\ud800\\udcff" in path.read_text() and "Logging error" not in capsys.readouterr().err


def test_a_config_file_that_never_ends_is_refused():
    one_line_error(["-C", "/dev/zero"], {}, "/dev/zero")
