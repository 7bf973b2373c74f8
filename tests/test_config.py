"""Settings: precedence, validation, file loading, generated docs, and structured sections (shown with a
section that only this test registers)."""
import dataclasses
import typing
from dataclasses import dataclass, field

import pytest

from sidepunch.server.config import (SETTINGS, Config, ConfigError, QueueSpec, build_config, option,
                                     option_table, section)
from sidepunch.server.settings import sections_of


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


# ------------------------------------------------------------------ the fields are the one declaration

def test_every_field_has_its_real_type_and_a_declaration():
    hints = typing.get_type_hints(Config)
    assert hints["workers"] is int and hints["timeout"] is float and hints["verbose"] is bool
    assert hints["queues"] == tuple[QueueSpec, ...] and hints["require"] == tuple[str, ...]
    assert hints["pidfile"] == str | None and hints["redis_url"] is str
    assert typing.get_args(hints["fetch"]) == ("reliable", "basic")
    fields = [f for f in dataclasses.fields(Config) if "section" not in f.metadata]
    assert [s.name for s in SETTINGS] == [f.name for f in fields]
    assert all("option" in f.metadata for f in fields)


def test_a_config_built_directly_has_the_documented_defaults():
    direct, built = Config(), build_config([], {})
    assert direct == built


def test_periodic_is_the_one_structured_section(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[periodic]]\nname = "x"\n')
    assert list(sections_of(Config)) == ["periodic"]  # its entries are tested in test_periodic*.py
    with pytest.raises(ConfigError, match=r"\[\[periodic\]\] entry 1: missing key 'cron'"):
        build_config(["-C", str(f)], {})


# ------------------------------------------------------------------ a structured section, registered by a test

@dataclass(frozen=True)
class Thing:
    """An entry of the test-only [[thing]] section: two required keys and three with defaults."""

    name: str
    every: float = field(metadata=option(help="seconds between runs", limits=(1, 86400)))
    args: tuple[str, ...] = ()
    queue: QueueSpec = QueueSpec("default")
    enabled: bool = True

    def __post_init__(self) -> None:  # checks of keys against each other come from the entry class itself
        if self.name.startswith("-"):
            raise ValueError(f"name must not start with '-', got {self.name!r}")


def _names_unique(things: tuple[Thing, ...]) -> None:
    names = [t.name for t in things]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"the name {name!r} is used twice")


@dataclass(frozen=True)
class WithThings(Config):
    thing: tuple[Thing, ...] = field(default=(), metadata=section(check=_names_unique))


def build_things(tmp_path, text, name="sidepunch.toml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return build_config(["-C", str(path)], {}, schema=WithThings)


def test_a_registered_section_is_read_into_typed_frozen_entries(tmp_path):
    config = build_things(tmp_path, 'threads = 4\n[[thing]]\nname = "a"\nevery = 5\n'
                                    '[[thing]]\nname = "b"\nevery = 2.5\nargs = ["x", "y"]\nqueue = "low,3"\n'
                                    'enabled = false\n')
    assert config.threads == 4 and sections_of(WithThings).keys() == {"periodic", "thing"}
    assert config.thing == (Thing("a", 5.0), Thing("b", 2.5, ("x", "y"), QueueSpec("low", 3), False))
    assert type(config.thing[0].every) is float and isinstance(config.thing, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.thing[0].name = "c"  # type: ignore[misc]
    assert build_things(tmp_path, "threads = 4\n").thing == ()
    pyproject = '[tool.sidepunch]\nthreads = 2\n[[tool.sidepunch.thing]]\nname = "p"\nevery = 60\n'
    assert build_things(tmp_path, pyproject, "pyproject.toml").thing == (Thing("p", 60.0),)


def test_a_section_is_declared_by_its_type():
    @dataclass(frozen=True)
    class Untyped(Config):
        thing: tuple = field(default=(), metadata=section())

    @dataclass(frozen=True)
    class Nested:
        table: dict[str, int]

    @dataclass(frozen=True)
    class Unreadable(Config):
        thing: tuple[Thing, ...] = field(default=(), metadata=section())
        other: tuple[Nested, ...] = field(default=(), metadata=section())

    assert sections_of(WithThings)["thing"].entry is Thing
    with pytest.raises(TypeError, match="tuple\\[Entry, ...\\]"):
        build_config([], {}, schema=Untyped)
    with pytest.raises(TypeError, match="no reader"):
        build_config([], {}, schema=Unreadable)


def test_a_section_comes_only_from_the_file(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_config(["--thing", "x"], {"SIDEPUNCH_THING": "x"}, schema=WithThings)
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


GOOD = 'name = "a"\nevery = 5\n'


@pytest.mark.parametrize("text, words", [
    ("thing = 3\n", "config file section thing: expected an array of tables ([[thing]]), got an integer"),
    ('[thing]\nname = "a"\n', "config file section thing: expected an array of tables ([[thing]]), got a table"),
    ("thing = [1, 2]\n", "got an integer"),
    ('thing = [{ name = "a", every = 5 }, "b"]\n', "got a string"),
    ("thing = []\n[[other]]\nx = 1\n", "unknown setting(s) 'other'"),
    (f"[[thing]]\n{GOOD}evry = 3\n", "section [[thing]] entry 1: unknown key(s) 'evry'"),
    (f"[[thing]]\n{GOOD}[thing.sub]\nx = 1\n", "entry 1: unknown key(s) 'sub'"),
    (f'[[thing]]\n{GOOD}"a\\nb" = 1\n', "unknown key(s) 'a\\nb'"),
    ('[[thing]]\nname = "a"\n', "entry 1: missing key 'every'"),
    (f'[[thing]]\n{GOOD}[[thing]]\nname = "b"\nevery = "5"\n', "entry 2 key every: expected a number"),
    (f"[[thing]]\n{GOOD}[[thing]]\nname = 'b'\nevery = 0\n", "entry 2 key every: must be at least 1"),
    ('[[thing]]\nname = "a"\nevery = nan\n', "key every: must be a finite number"),
    ('[[thing]]\nname = "a"\nevery = true\n', "key every: expected a number, got a boolean"),
    (f"[[thing]]\n{GOOD}args = [1]\n", "key args: expected a string or a list of them, got an integer"),
    (f"[[thing]]\n{GOOD}args = {{ a = 1 }}\n", "key args: expected a string or a list of them, got a table"),
    (f'[[thing]]\n{GOOD}queue = "low,x"\n', "key queue: queue weight must be a whole number"),
    (f'[[thing]]\n{GOOD}enabled = "yes"\n', "key enabled: expected true or false"),
    ("[[thing]]\nname = 3\nevery = 5\n", "key name: expected a string, got an integer"),
    ('[[thing]]\nname = "-a"\nevery = 5\n', "section [[thing]] entry 1: name must not start with '-'"),
    (f"[[thing]]\n{GOOD}[[thing]]\n{GOOD}", "config file section [[thing]]: the name 'a' is used twice"),
])
def test_a_bad_section_entry_is_one_line_naming_the_entry(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        build_things(tmp_path, text)
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)


@pytest.mark.parametrize("key", ["name", "every", "args", "queue", "enabled"])
def test_every_key_refuses_values_of_other_types_in_one_line(tmp_path, key):
    values = ["1979-05-27", "07:32:00", "{ a = 1 }", "[[1]]", "[{ a = 1 }]", '"x"', "3", "1.5", "true"]
    accepted = 0
    for value in values:
        rest = "".join(f"{k} = {v}\n" for k, v in (("name", '"a"'), ("every", "5")) if k != key)
        try:
            build_things(tmp_path, f"[[thing]]\n{rest}{key} = {value}\n")
            accepted += 1
        except ConfigError as err:
            assert "\n" not in str(err) and f"[[thing]] entry 1 key {key}:" in str(err), str(err)
    assert accepted <= 2  # the one or two values of the key's own type (args also takes a single string)


# ------------------------------------------------------------------ hostile nesting

@pytest.mark.parametrize("text", [
    "threads = " + "[" * 5000 + "]" * 5000 + "\n",
    "threads = " + "{ a = " * 5000 + "1" + " }" * 5000 + "\n",
    "tag." + "a." * 3000 + "b = 1\n",
    "[[thing]]\nname." + "a." * 3000 + "b = 1\nevery = 5\n",
    "[[thing]]\n" + "".join(f"k{n} = 1\n" for n in range(5000)),
    "".join(f"k{n} = 1\n" for n in range(5000)),
])
def test_deeply_nested_values_are_one_line(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        build_things(tmp_path, text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300, str(err.value)


@pytest.mark.parametrize("key", ["a." * 32 + "b", '"a" . ' * 32 + "b", "x = { " + "a." * 40 + "b",
                                 "[" + "a." * 40 + "b]\nx", "[[" + "a." * 40 + "b]]\nx"])
def test_a_dotted_key_of_too_many_parts_is_refused_before_parsing(tmp_path, key):
    """tomllib's time grows with the square of a key's parts, so a long one is refused unparsed, by line."""
    with pytest.raises(ConfigError, match="line 2 has a dotted key of more than 32 parts"):
        build_things(tmp_path, f"threads = 2\n{key} = 1\n")
    with pytest.raises(ConfigError, match="config file setting tag: expected a string, got a table"):
        build_things(tmp_path, "tag." + "a." * 30 + "b = 1\n")  # 32 parts: parsed, then refused by type
