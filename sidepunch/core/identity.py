"""Process identity: `<hostname>:<pid>:<nonce>`, the name Sidekiq gives a process, and the only place one is built.

Owns picking the hostname as Sidekiq does ($DYNO, else the host's name), making it safe to use in an identity,
building an identity and parsing one back. Imports nothing of sidepunch's (this is core).

The identity is a key (the process hash) and a part of other keys (`<identity>:workers`, the working lists
`working:queue:<q>:<identity>.<thread>`, `sidepunch:alive:<identity>`). keys.parse_working takes the last three
':' parts of a working list as the identity, so a hostname holding ':' would be read back as another identity,
whose liveness key does not exist, and the orphan sweep would requeue the lists of a live process. Hence every
hostname goes through `safe_hostname` where an identity is built: ':' and whatever is not printable (controls,
whitespace, lone surrogates from an undecodable environment, which Redis could not be sent) become '_'.
"""
from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Mapping

#: Longest hostname kept, in characters (DNS names are at most 253; $DYNO could be anything).
MAX_HOSTNAME = 255
#: The hostname of an identity whose host has no usable name (an empty one could not be parsed back).
NO_HOSTNAME = "localhost"
NONCE_BYTES = 6  # Sidekiq's SecureRandom.hex(6)


@dataclass(frozen=True)
class Identity:
    hostname: str
    pid: int
    nonce: str

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}:{self.nonce}"


def safe_hostname(name: str) -> str:
    """`name` fit for an identity: ':' and non-printable characters (whitespace too) as '_', at most
    MAX_HOSTNAME characters, never empty. Idempotent."""
    cleaned = "".join(c if c.isprintable() and c not in ": " else "_" for c in name[:MAX_HOSTNAME])
    return cleaned or NO_HOSTNAME


def hostname(environ: Mapping[str, str] | None = None) -> str:
    """The safe hostname of this host: $DYNO (Heroku's dyno name) if set, else the system's, as Sidekiq picks
    it. `environ` defaults to os.environ (read at call time, never at import)."""
    env = os.environ if environ is None else environ
    return safe_hostname(env.get("DYNO") or socket.gethostname())


def new_nonce() -> str:
    """A random suffix, so a pid reused after a restart never names the old process."""
    return secrets.token_hex(NONCE_BYTES)


def make(host: str, pid: int, nonce: str) -> str:
    """`<host>:<pid>:<nonce>`, with the host made safe (see the module docstring)."""
    if ":" in nonce or not nonce:
        raise ValueError(f"a nonce is a non-empty word without ':', not {nonce!r}")
    return f"{safe_hostname(host)}:{int(pid)}:{nonce}"


def current(nonce: str, environ: Mapping[str, str] | None = None) -> str:
    """The identity of the calling process with `nonce`."""
    return make(hostname(environ), os.getpid(), nonce)


def parse(identity: str) -> Identity | None:
    """(hostname, pid, nonce) of an identity, or None if it is not of that shape. The pid and nonce are the
    last two ':' parts, so an identity written by another tool whose hostname holds ':' still parses."""
    host, sep1, rest = identity.rpartition(":")
    host, sep2, pid = host.rpartition(":")
    if not (sep1 and sep2 and host and rest) or not (pid.isascii() and pid.isdigit() and len(pid) <= 10):
        return None
    return Identity(host, int(pid), rest)
