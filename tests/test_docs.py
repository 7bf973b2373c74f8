"""The README stays true: its option table is generated, its test command is what CI runs."""
import re
from pathlib import Path

from sidepunch.server.config import option_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fresh_machine_commands():
    section = README.split("## Try it on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_exactly_two_fresh_machine_commands():
    commands = fresh_machine_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "examples/counters/demo.py" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    assert fresh_machine_commands()[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_option_table_is_current():
    assert option_table() in README
