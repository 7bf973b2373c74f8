"""The systemd unit and its environment file stay valid and consistent with the daemon.

`systemd-analyze verify` checks the unit as systemd would load it; the unit's timeouts are checked against
the daemon's own defaults so the stop ladder (worker --timeout < master --timeout + --grace < TimeoutStopSec)
cannot silently break; the example environment file may only name settings the daemon reads.
"""
from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidepunch.server.config import SETTINGS, build_config
from sidepunch.core.connection import SOCKET_TIMEOUT
from sidepunch.core.exitcodes import ExitCode
from sidepunch.server.heartbeat import BEAT_INTERVAL

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "sidepunchd.service"
ENV_EXAMPLE = ROOT / "systemd" / "sidepunchd.env.example"
README = ROOT / "README.md"
DEFAULTS = {s.name: s.default for s in SETTINGS}
KNOWN_VARIABLES = {s.env for s in SETTINGS if s.env} | {"REDIS_URL", "REDIS_PROVIDER"}


# -- helpers ---------------------------------------------------------------------------------------------------
def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; comments and blank lines skipped, continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"unparseable unit line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(key: str) -> str:
    values = service().get(key)
    assert values, f"{UNIT.name} sets no {key}="
    return values[-1]


SPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0,
              "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0,
              "hour": 3600.0, "hours": 3600.0}


def seconds(span: str) -> float:
    """A systemd time span ("45", "45s", "1min 30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*[a-z]*)+\s*", span), f"not a time span: {span!r}"
    return sum(float(n) * SPAN_UNITS[u] for n, u in parts)


def env_assignments(text: str, commented: bool = False) -> dict[str, str]:
    """VAR=value lines of an EnvironmentFile= (quotes removed); with `commented`, the `#VAR=value` ones."""
    pattern = r"#\s*([A-Z_][A-Z0-9_]*)=(?!\s)(.*)" if commented else r"([A-Za-z_][A-Za-z0-9_]*)=(.*)"
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(pattern, line.strip())
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            found[m.group(1)] = value
    return found


def installed_sidepunchd() -> str:
    """The sidepunchd of the interpreter running the tests (the venv's, in CI); not a pyenv shim."""
    beside = Path(sys.executable).parent / "sidepunchd"
    found = str(beside) if beside.exists() else shutil.which("sidepunchd")
    assert found, "sidepunchd is not installed (pip install -e .)"
    return found


def verify(unit_text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify` on a copy of the unit; (exit status, output lines about our unit)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); CI installs it")
    path = tmp_path / "sidepunchd.service"   # verify names the unit after the file
    path.write_text(unit_text)
    command = [analyze, "verify", "--man=no", "--recursive-errors=no", str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if "--recursive-errors" in proc.stderr and "unrecognized option" in proc.stderr:  # systemd < 250
        command.remove("--recursive-errors=no")
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    # Warnings about the host's own units (if any) are not ours to fix.
    ours = [line for line in lines if "sidepunchd" in line or str(tmp_path) in line]
    return proc.returncode, ours


def runnable_here(text: str, tmp_path: Path) -> str:
    """The unit with ExecStart= on the installed sidepunchd (verify checks the binary exists), the working
    directory on one that exists, and User=/Group= on root if the sidepunch user does not exist here."""
    text = re.sub(r"(?m)^ExecStart=\S+", lambda m: f"ExecStart={installed_sidepunchd()}", text)
    text = re.sub(r"(?m)^WorkingDirectory=.*", f"WorkingDirectory={tmp_path}", text)
    try:
        pwd.getpwnam("sidepunch")
    except KeyError:
        text = re.sub(r"(?m)^(User|Group)=.*", r"\1=root", text)
    return text


# -- systemd-analyze -------------------------------------------------------------------------------------------
def test_systemd_analyze_verify_is_clean(tmp_path):
    status, ours = verify(runnable_here(UNIT.read_text(), tmp_path), tmp_path)
    assert status == 0 and not ours, "\n".join(ours)


def test_verify_check_would_catch_a_bad_line(tmp_path):
    """verify exits 0 on unknown keys and bad values ("ignoring"), so the test above must read its output."""
    broken = runnable_here(UNIT.read_text(), tmp_path).replace("KillMode=mixed", "KillMode=mixd")
    _, ours = verify(broken + "\n[Service]\nWatchdogSecs=30\n", tmp_path)
    assert any("mixd" in line for line in ours) and any("WatchdogSecs" in line for line in ours), ours


# -- the settings that make the daemon behave ---------------------------------------------------------------------
def test_notify_and_kill_settings():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"             # only the master notifies
    assert one("KillMode") == "mixed"                # SIGTERM to the master alone; SIGKILL to all at the end
    assert one("KillSignal") in ("SIGTERM", "TERM")  # the master's graceful stop
    assert re.fullmatch(r"/(usr/)?bin/kill -(s )?(SIG)?HUP \$MAINPID", one("ExecReload"))
    assert one("Restart") == "on-failure"
    assert one("OOMPolicy") == "continue"            # an OOM-killed worker is replaced, not the whole unit stopped
    prevent = set(one("RestartPreventExitStatus").split())
    assert {str(int(ExitCode.USAGE)), str(int(ExitCode.BOOT_ERROR))} <= prevent
    assert str(int(ExitCode.CRASH)) not in prevent


def test_stop_timeout_ladder():
    """worker --timeout < master --timeout + --grace < TimeoutStopSec, with room for the master's requeueing."""
    master_deadline = DEFAULTS["timeout"] + DEFAULTS["grace"]
    assert DEFAULTS["timeout"] < master_deadline
    assert seconds(one("TimeoutStopSec")) >= master_deadline + 10


def test_watchdog_outlasts_heartbeats_and_a_redis_timeout():
    """The master pings every WatchdogSec/2 while workers heartbeat (every BEAT_INTERVAL); the slack of the
    other half must absorb a beat and a master loop blocked on one Redis call (SOCKET_TIMEOUT)."""
    watchdog = seconds(one("WatchdogSec"))
    assert watchdog / 2 > BEAT_INTERVAL + SOCKET_TIMEOUT
    assert watchdog <= 300  # still catches a wedged master


def test_user_environment_and_command():
    assert one("User") not in ("", "root", "0") and one("Group") not in ("", "root", "0")
    assert one("EnvironmentFile") == "-/etc/sidepunch/sidepunchd.env"
    assert "MALLOC_ARENA_MAX=2" in service()["Environment"]
    command = one("ExecStart").split()
    assert command[0].startswith("/") and command[0].endswith("/bin/sidepunchd")
    assert one("WorkingDirectory").startswith("/") and one("SyslogIdentifier") == "sidepunchd"
    assert parse_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_sandbox_keeps_what_the_daemon_needs():
    assert one("NoNewPrivileges") == "yes" and one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == ""
    families = one("RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)  # sd_notify and unix:// Redis; TCP Redis
    assert "~" not in one("RestrictAddressFamilies")


# -- the example environment file -------------------------------------------------------------------------------
def test_env_example_names_only_settings_the_daemon_reads():
    text = ENV_EXAMPLE.read_text()
    named = set(env_assignments(text)) | set(env_assignments(text, commented=True))
    assert named - KNOWN_VARIABLES == set(), "unknown variables in the example"
    assert {"REDIS_URL", "SIDEPUNCH_WORKERS", "SIDEPUNCH_THREADS", "SIDEPUNCH_QUEUES", "SIDEPUNCH_REQUIRE"} <= named
    # EnvironmentFile= expands nothing, and a "# comment" after a value would become part of it.
    for line in text.splitlines():
        if re.match(r"[A-Za-z_]\w*=", line):
            assert "$" not in line and " #" not in line, line


def test_env_example_values_are_valid_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray ./sidepunch.toml
    text = ENV_EXAMPLE.read_text()
    active = env_assignments(text)
    config = build_config([], active)
    assert config.workers == int(active["SIDEPUNCH_WORKERS"])
    assert [q.name for q in config.queues] == active["SIDEPUNCH_QUEUES"].split()
    assert config.require == tuple(active["SIDEPUNCH_REQUIRE"].split())
    assert config.redis_url == active["REDIS_URL"]
    # Every commented-out example is valid too once uncommented.
    build_config([], {**active, **env_assignments(text, commented=True)})


def test_env_example_reads_the_same_under_systemds_parser(tmp_path):
    """systemd's own environment-file parser (the environment.d generator shares it) agrees with ours."""
    generator = Path("/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator")
    if not os.access(generator, os.X_OK):
        pytest.skip("systemd's environment.d generator is not installed (apt-get install systemd)")
    (tmp_path / "environment.d").mkdir()
    shutil.copy(ENV_EXAMPLE, tmp_path / "environment.d" / "50-sidepunchd.conf")
    out = subprocess.run([str(generator)], env={"XDG_CONFIG_HOME": str(tmp_path)}, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    parsed = dict(shlex.split(line)[0].split("=", 1) for line in out.splitlines() if line.strip())
    ours = env_assignments(ENV_EXAMPLE.read_text())
    assert {k: parsed.get(k) for k in ours} == ours


# -- the README's instructions match the files ---------------------------------------------------------------
def test_readme_deployment_section_matches_the_unit():
    section = README.read_text().split("## Deployment with systemd", 1)[1].split("\n## ", 1)[0]
    for needle in ("systemd/sidepunchd.service", "systemd/sidepunchd.env.example", "/etc/sidepunch/sidepunchd.env",
                   "--kill-whom=main", "systemctl reload sidepunchd", "journalctl -u sidepunchd"):
        assert needle in section, needle
    assert one("ExecStart").split()[0] in section and one("WorkingDirectory") in section
    assert "useradd --system" in section and one("User") in section
