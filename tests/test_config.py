"""Settings: precedence, validation, file loading, generated docs."""
import pytest

from sidepunch.server.config import SETTINGS, ConfigError, QueueSpec, build_config, option_table


def test_defaults():
    c = build_config([], {})
    assert c.threads == 10 and c.timeout == 25.0 and c.fetch == "reliable"
    assert c.queues == (QueueSpec("default"),) and c.redis_url == "redis://localhost:6379/0"
    assert c.workers >= 1


def test_cli_beats_env_beats_file(tmp_path):
    f = tmp_path / "sp.toml"
    f.write_text('threads = 3\ntimeout = 7\nqueues = ["a", "b,2"]\nredis_url = "redis://file:1/0"\n')
    c = build_config(["-C", str(f)], {})
    assert c.threads == 3 and c.timeout == 7 and c.queues == (QueueSpec("a"), QueueSpec("b", 2))
    assert c.redis_url == "redis://file:1/0"
    c = build_config(["-C", str(f)], {"SIDEPUNCH_THREADS": "4", "REDIS_URL": "redis://env:2/0"})
    assert c.threads == 4 and c.redis_url == "redis://env:2/0"
    c = build_config(["-C", str(f), "-c", "5", "--redis-url", "redis://cli:3/0"],
                     {"SIDEPUNCH_THREADS": "4", "REDIS_URL": "redis://env:2/0"})
    assert c.threads == 5 and c.redis_url == "redis://cli:3/0"


def test_pyproject_section(tmp_path):
    f = tmp_path / "pyproject.toml"
    f.write_text('[project]\nname="x"\n[tool.sidepunch]\nworkers = 3\n')
    assert build_config(["--config", str(f)], {}).workers == 3


def test_redis_provider_names_the_variable():
    env = {"REDIS_PROVIDER": "MY_REDIS", "MY_REDIS": "redis://provided:9/1", "REDIS_URL": "redis://plain:1/0"}
    assert build_config([], env).redis_url == "redis://provided:9/1"


def test_queue_flags_parse_weights_and_order():
    c = build_config(["-q", "critical", "-q", "default,3", "-q", "low,1"], {})
    assert c.queues == (QueueSpec("critical"), QueueSpec("default", 3), QueueSpec("low", 1))


@pytest.mark.parametrize("argv, env, words", [
    (["-c", "0"], {}, "--threads: must be at least 1"),
    (["--fetch", "fast"], {}, "--fetch: must be one of reliable, basic"),
    (["-q", "a,x"], {}, "weight must be a whole number"),
    (["-q", "a", "-q", "a"], {}, "named twice"),
    ([], {"SIDEPUNCH_WORKERS": "many"}, "$SIDEPUNCH_WORKERS"),
    (["-C", "/nonexistent.toml"], {}, "does not exist"),
])
def test_bad_values_name_the_setting(argv, env, words):
    with pytest.raises(ConfigError) as err:
        build_config(argv, env)
    assert words in str(err.value)


def test_unknown_file_setting(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("treads = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config(["-C", str(f)], {})


def test_bad_flag_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_config(["--nope"], {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --nope" in err


def test_config_is_frozen():
    c = build_config([], {})
    with pytest.raises(Exception):
        c.threads = 3


def test_option_table_lists_every_setting():
    table = option_table()
    for s in SETTINGS:
        assert s.flags[-1] in table
