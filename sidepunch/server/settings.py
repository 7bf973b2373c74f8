"""How a setting is declared, read and checked: the machinery behind the fields of `config.Config`.

A setting is a field of a frozen dataclass. Its type says how a value is read (int, float, str, bool, a
Literal of choices, QueueSpec; `X | None` when it may be absent; `tuple[X, ...]` for a repeatable one) and
its metadata, made by `option`, carries the flags, environment variable, help text and inclusive range. A
structured section of the config file (an array of tables, `[[name]]`) is a field whose metadata is made
by `section`: a tuple of frozen dataclasses whose own fields are declared the same way, keys of an entry.
From these fields come the argparse parser, the README option table, and the checks of every value from
flags, environment and file. This module knows no particular setting and reads no environment; it must not
import the rest of the server (config.py imports it).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import reprlib
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from ..client.validate import check_queue_name
from ..core.urls import hide_urls


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where the value came from."""


#: Queue weights expand to a list of names (as Sidekiq does), so a weight is a small whole number.
MAX_WEIGHT = 1000
DAY = 86400


@dataclass(frozen=True)
class QueueSpec:
    name: str
    weight: int = 0


def show_value(value: Any) -> str:
    """A value quoted for an error message: one line, at most about 60 characters. A list or table from
    a file is shown a few levels deep only: dotted keys nest tables without bound, and repr would recurse."""
    shallow = reprlib.Repr()
    shallow.maxlevel = 3
    text = repr(value) if isinstance(value, (str, int, float)) else shallow.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show_names(names: Sequence[str], most: int = 5) -> str:
    """Names quoted for an error message; a file may hold thousands, the line shows the first few."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(map(show_value, names[:most])) + more


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_int(text: Any) -> int:
    """A whole number written in plain ASCII digits (int() also takes "1_000" and other scripts' digits)."""
    if type(text) is int:
        return text
    stripped = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", stripped):
        raise ValueError(f"expected a whole number, got {show_value(text)}")
    return int(stripped)


def _read_float(text: Any) -> float:
    if type(text) in (int, float):
        value = float(text)
    else:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {show_value(text)}") from None
    if not math.isfinite(value):  # nan compares false with any bound, so it must be caught by name
        raise ValueError(f"must be a finite number, got {show_value(text)}")
    return value


def parse_queue(text: str) -> QueueSpec:
    name, _, weight = text.strip().partition(",")
    name = check_queue_name(name.strip())  # the client's rule, so every queue fetched is one a client can fill
    if weight == "":
        return QueueSpec(name)
    if not re.fullmatch(r"[0-9]{1,30}", weight.strip()):
        raise ValueError(f"queue weight must be a whole number, got {show_value(weight)} in {show_value(text)}")
    value = int(weight)
    if value > MAX_WEIGHT:
        raise ValueError(f"queue weight must be at most {MAX_WEIGHT}, got {value} in {show_value(text)}")
    return QueueSpec(name, value)


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {show_value(text)}")


@dataclass(frozen=True)
class Kind:
    """How values of one field type are read from a flag or environment string, which TOML types a file may
    give for them, and how a default is shown in the docs."""

    name: str
    read: Callable[[Any], Any]
    toml_types: tuple[type, ...]
    described: str
    show: Callable[[Any], str] = str
    empty: str | None = None  # the error when a repeatable setting of this kind is given an empty list


KINDS: Mapping[type, Kind] = types.MappingProxyType({
    int: Kind("int", _read_int, (int,), "a whole number"),
    float: Kind("float", _read_float, (int, float), "a number"),
    str: Kind("str", str, (str,), "a string"),
    bool: Kind("bool", _bool, (bool,), "true or false"),
    list: Kind("array", list, (list,), "an array"),  # a section key holding JSON values (periodic args)
    QueueSpec: Kind("queue", parse_queue, (str,), "a string NAME or NAME,WEIGHT",
                    show=lambda q: f"{q.name},{q.weight}" if q.weight else q.name,
                    empty="names no queue; give at least one"),
})
_KIND_BY_NAME = types.MappingProxyType({kind.name: kind for kind in KINDS.values()})


@dataclass(frozen=True)
class _Declared:
    flags: tuple[str, ...]
    env: str | None
    help: str
    limits: tuple[float, float] | None


def option(*flags: str, help: str, env: str | None = None,
           limits: tuple[float, float] | None = None) -> Mapping[str, Any]:
    """The metadata of a setting's field: its flags (none for a key of a section entry), environment
    variable, help text and the inclusive range every numeric value must fall in, wherever it came from."""
    return types.MappingProxyType({"option": _Declared(flags, env, help, limits)})


@dataclass(frozen=True)
class Setting:
    """One setting, derived from a dataclass field: `kind` names its Kind ("int", "float", "str", "bool" or
    "queue"); `default` is a value, or a function called at build time (workers: the number of CPUs), or
    dataclasses.MISSING for a required key of a section entry."""

    name: str
    flags: tuple[str, ...]
    env: str | None
    kind: str
    default: Any
    help: str
    limits: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    many: bool = False      # repeatable flag; env and file give a list
    switch: bool = False    # a flag without a value

    @property
    def doc(self) -> str:
        """The help text with the allowed range, for --help and the README."""
        if self.limits is None:
            return self.help
        low, high = self.limits
        span = f" ({_duration(high)})" if self.kind == "float" and high >= 3600 else ""
        return f"{self.help}; allowed: {show_number(low)} to {show_number(high)}{span}"

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def read(self, raw: Any) -> Any:
        """One value (a flag or environment string, or a TOML value already type-checked) -> checked value."""
        value = _KIND_BY_NAME[self.kind].read(raw)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, got {show_value(value)}")
        if self.limits is not None:
            low, high = self.limits
            allowed = f"(allowed: {show_number(low)} to {show_number(high)})"
            if value < low:
                raise ValueError(f"must be at least {show_number(low)}, got {show_value(raw)} {allowed}")
            if value > high:
                raise ValueError(f"must be at most {show_number(high)}, got {show_value(raw)} {allowed}")
        return value

    def read_all(self, items: Sequence[Any], origin: str) -> Any:
        """The checked value of a setting given as `items` (one unless repeatable); ConfigError names `origin`."""
        try:
            values = [self.read(v) for v in items]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {one_line(exc)}") from None
        empty = _KIND_BY_NAME[self.kind].empty
        if self.many and empty and not values:
            raise ConfigError(f"{origin}: {empty}")
        return tuple(values) if self.many else values[0]

    def read_file(self, raw: Any, origin: str) -> Any:
        """A TOML value, type-checked then read; ConfigError names `origin`."""
        try:
            items = self.check_file_type(raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {one_line(exc)}") from None
        return self.read_all(items, origin)

    def check_file_type(self, raw: Any) -> list[Any]:
        """The TOML value as a list of items of the right type; ValueError names what was expected."""
        items = ([raw] if isinstance(raw, str) else raw) if self.many else [raw]
        kind = _KIND_BY_NAME[self.kind]
        wanted = kind.described + (" or a list of them" if self.many else "")
        if self.many and not isinstance(items, list):
            raise ValueError(f"expected {wanted}, got {toml_type(raw)}")
        for item in items:
            # bool is an int subclass in Python, but `threads = true` is a mistake, not 1.
            if isinstance(item, bool) != (bool in kind.toml_types) or not isinstance(item, kind.toml_types):
                raise ValueError(f"expected {wanted}, got {toml_type(item)} {show_value(item)}")
        return items

    def shown_default(self) -> str:
        """The default as the README shows it."""
        if callable(self.default):
            return "CPUs"
        if self.many:
            return ",".join(_KIND_BY_NAME[self.kind].show(v) for v in self.default)
        return str(self.default)


def show_number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def _duration(seconds: float) -> str:
    for unit, size in (("year", 365 * DAY), ("day", DAY), ("hour", 3600)):
        if seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} s"


def toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
             dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _kind_of(hint: Any, name: str) -> tuple[Kind, tuple[str, ...], bool]:
    """(kind, choices, repeatable) for a field's type: X, X | None, tuple[X, ...], Literal["a", "b"]."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    many = typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,)
    hint = typing.get_args(hint)[0] if many else hint
    choices: tuple[str, ...] = ()
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
    if hint not in KINDS:
        raise TypeError(f"setting {name}: no reader for type {hint!r}")
    return KINDS[hint], choices, many


def settings_of(schema: type) -> tuple[Setting, ...]:
    """The settings (or an entry's keys) that a dataclass declares, in field order; sections left out."""
    hints = typing.get_type_hints(schema)
    found = []
    for f in dataclasses.fields(schema):
        if "section" in f.metadata:
            continue
        declared = f.metadata.get("option", _Declared((), None, "", None))
        kind, choices, many = _kind_of(hints[f.name], f.name)
        default = f.default_factory if f.default is dataclasses.MISSING else f.default
        found.append(Setting(f.name, declared.flags, declared.env, kind.name, default, declared.help,
                             declared.limits, choices, many, switch=kind.name == "bool" and bool(declared.flags)))
    return tuple(found)


def resolve(s: Setting, cli: Mapping[str, Any], environ: Mapping[str, str], from_file: Mapping[str, Any]) -> Any:
    """The setting's value from the first layer that has one: flag, environment, file, default."""
    if s.name in cli:
        raw = cli[s.name]
        return s.read_all(raw if s.many else [raw], s.flags[-1])
    if s.env and environ.get(s.env, "") != "":
        raw = environ[s.env]
        return s.read_all(raw.split() if s.many else [raw], f"${s.env}")
    if s.name in from_file:
        return s.read_file(from_file[s.name], f"config file setting {s.name}")
    return s.default_value()


@dataclass(frozen=True)
class Section:
    """A structured section of the config file: an array of tables read into a tuple of `entry` (a frozen
    dataclass whose fields are the keys; a field without a default is a required key). `check` sees the
    whole tuple (names unique, say) and raises ValueError with a one-line reason."""

    entry: type
    check: Callable[[tuple[Any, ...]], None] | None = None

    def parse(self, name: str, raw: Any) -> tuple[Any, ...]:
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            shown = next((t for t in raw if not isinstance(t, dict)), raw) if isinstance(raw, list) else raw
            raise ConfigError(f"config file section {name}: expected an array of tables ([[{name}]]), "
                              f"got {toml_type(shown)}")
        keys = settings_of(self.entry)
        entries = tuple(self._entry(table, keys, f"config file section [[{name}]] entry {number}")
                        for number, table in enumerate(raw, 1))
        if self.check is not None:
            try:
                self.check(entries)
            except ValueError as exc:
                raise ConfigError(f"config file section [[{name}]]: {one_line(exc)}") from None
        return entries

    def _entry(self, table: Mapping[str, Any], keys: Sequence[Setting], origin: str) -> Any:
        unknown = sorted(set(table) - {k.name for k in keys})
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {show_names(unknown)}")
        values = {}
        for key in keys:
            if key.name in table:
                values[key.name] = key.read_file(table[key.name], f"{origin} key {key.name}")
            elif key.default is dataclasses.MISSING:
                raise ConfigError(f"{origin}: missing key {key.name!r}")
        try:
            return self.entry(**values)  # its __post_init__ may check keys against each other
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {one_line(exc)}") from None


def section(check: Callable[[tuple[Any, ...]], None] | None = None) -> Mapping[str, Any]:
    """The metadata of a section's field, typed tuple[Entry, ...] with default (); Entry is a frozen
    dataclass whose fields are the keys of each table. `check` sees all the entries (see Section)."""
    return types.MappingProxyType({"section": check})


def sections_of(schema: type) -> dict[str, Section]:
    """The registry of structured sections a config class declares: field name -> Section, the entry class
    taken from the field's type. Each entry's keys are checked here, so a key of a type without a reader
    fails every build (and so the tests), not only a build from a file that uses the section."""
    hints = typing.get_type_hints(schema)
    found = {}
    for f in dataclasses.fields(schema):
        if "section" in f.metadata:
            args = typing.get_args(hints[f.name])
            if typing.get_origin(hints[f.name]) is not tuple or args[1:] != (Ellipsis,) or f.default != ():
                raise TypeError(f"section {f.name}: declare it as tuple[Entry, ...] with default ()")
            settings_of(args[0])
            found[f.name] = Section(args[0], f.metadata["section"])
    return found


def make_parser(settings: Sequence[Setting], prog: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    for s in settings:
        if s.switch:
            parser.add_argument(*s.flags, dest=s.name, action="store_true", help=s.doc)
        elif s.flags:
            parser.add_argument(*s.flags, dest=s.name, action="append" if s.many else "store",
                                metavar=s.name.upper(), help=s.doc)
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line and exit status 2, without the usage block, and without echoing a Redis
    password that was given in the wrong place."""

    _argv: Sequence[str] = ()

    def parse_known_args(  # pyright: ignore[reportIncompatibleMethodOverride]
            self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        message = hide_urls(message, self._argv)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
