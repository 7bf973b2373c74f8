"""Redis URLs as text: which one to use, and hiding their credentials.

Owns resolving the URL (flag, then REDIS_PROVIDER / REDIS_URL as Sidekiq reads them, then the default), parsing
a redis+sentinel:// URL, and masking passwords for logs and error messages (`mask_url`, `scrub`, `hide_urls`).
Connects to nothing and imports nothing of sidepunch's; connection.py builds clients from these URLs and
re-exports these names.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence
from urllib.parse import parse_qsl, unquote, unquote_plus

DEFAULT_URL = "redis://localhost:6379/0"


def resolve_url(explicit: str | None, environ: Mapping[str, str], fallback: str | None = None) -> str:
    """The flag wins; else the variable REDIS_PROVIDER names; else REDIS_URL; else `fallback` (a config file's
    value) or localhost."""
    if explicit:
        return explicit
    provider = environ.get("REDIS_PROVIDER")
    if provider:
        if "://" in provider:
            raise ValueError("REDIS_PROVIDER must name an environment variable that holds the URL, "
                             "not hold a URL itself")
        if environ.get(provider):
            return environ[provider]
    return environ.get("REDIS_URL") or fallback or DEFAULT_URL


def mask_url(url: str) -> str:
    """The URL with every credential replaced by ***, for logs and error messages; never raises.

    Masks the password of the userinfo (the whole userinfo of a redis+sentinel URL, which reads a lone
    word there as the password), the value of any query or fragment option whose name says it is a secret
    (password=, in any case or percent-encoding, however often repeated) and a port that is not a number (a
    password with a '/', '?' or '#' in it, unencoded, ends up there). It works on the raw text rather than
    trusting urlsplit, which gives up on some malformed URLs and splits others where a person would not.
    Control characters are escaped so the result is always one line.
    """
    out, last = [], 0
    for begin, end in _secret_spans(url):
        out.append(url[last:begin] + "***")
        last = end
    return _escape_controls("".join(out) + url[last:])


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?password=...]
    -> (sentinels, service, db, password).

    The password is percent-decoded, as redis-py decodes it in a redis:// URL. ValueError (its message
    masked) for anything else: no service, a host without a port, a db that is not a number.
    """
    def bad(problem: str) -> ValueError:
        return ValueError(f"bad Redis URL {mask_url(url)}: {problem}")

    rest, _, _ = url[len("redis+sentinel://"):].partition("#")
    password = None
    start = _query_start(rest)
    rest, query = (rest[:start], rest[start + 1:]) if start >= 0 else (rest, "")
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[-1]) or None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "password":
            raise bad(f"unknown option {_show_name(name)} (a redis+sentinel URL takes only password=)")
        password = value or password
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise bad("expected redis+sentinel://host:port[,host:port]/service[/db]")
    sentinels = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]:port
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad(f"sentinel address {_show_name(mask_url(hostport))} needs host:port (port 1 to 65535)")
        sentinels.append((host, int(port)))
    if len(parts) > 1 and not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) < 6):
        raise bad(f"the database {_show_name(parts[1])} is not a number")
    return sentinels, unquote(parts[0]), int(parts[1]) if len(parts) > 1 else 0, password


# ------------------------------------------------------------------------------ masking credentials

#: Option names that carry a secret (password=, ssl_password=, sentinel_password=, token=, ...).
_SECRET_OPTION = re.compile(r"pass|secret|token|auth|cred", re.IGNORECASE)
#: The '?' that starts the query: the first one followed by "name=", so one inside a password is skipped.
_QUERY_START = re.compile(r"\?(?=[\w.%+~-]*=)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _query_start(rest: str) -> int:
    match = _QUERY_START.search(rest)
    return match.start() if match else -1


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """(start, end) of every credential in `url`, sorted and merged."""
    sep = url.find("://")
    base = sep + 3 if sep >= 0 else 0
    rest = url[base:]
    query = _query_start(rest)
    authority_end = query if query >= 0 else len(rest)
    spans: list[tuple[int, int]] = []
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        colon = rest.find(":", 0, at)
        if colon >= 0:
            spans.append((base + colon + 1, base + at))
        elif url.startswith("redis+sentinel://"):
            spans.append((base, base + at))
    host_start = at + 1 if at >= 0 else 0
    spans += [(base + b, base + e) for b, e in _odd_ports(rest, host_start)]
    spans += [(base + b, base + e) for b, e in _secret_options(rest, host_start)]
    return _merge(spans)


def _odd_ports(rest: str, host_start: int) -> list[tuple[int, int]]:
    """Ports that are not numbers: what is left of a password holding '/', '?' or '#' unencoded."""
    ends = [i for i in (rest.find(c, host_start) for c in "/?#") if i >= 0]
    hosts_end = min(ends, default=len(rest))
    spans, offset = [], host_start
    for hostport in rest[host_start:hosts_end].split(","):
        colon = hostport.rfind(":")
        port = hostport[colon + 1:] if colon >= 0 and not hostport.endswith("]") else ""
        if port and not (port.isascii() and port.isdigit()):
            spans.append((offset + colon + 1, offset + len(hostport)))
        offset += len(hostport) + 1
    return spans


def _secret_options(rest: str, start: int) -> list[tuple[int, int]]:
    """Values of secret-named options anywhere after the authority, up to the next '&' or '#' (where
    parse_qs ends a value). Options are looked for after every '?', '&', ';' and '#', even inside another
    option's value, so `db=0;password=x` hides x too."""
    spans = []
    for match in re.finditer(r"[?&;#]([^=&;#?]*)=", rest[start:]):
        if _SECRET_OPTION.search(unquote_plus(match.group(1))):
            value_start = start + match.end()
            ends = [i for i in (rest.find("&", value_start), rest.find("#", value_start)) if i >= 0]
            spans.append((value_start, min(ends, default=len(rest))))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return merged


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _show_name(text: str) -> str:
    shown = repr(_escape_controls(text))
    return shown if len(shown) <= 60 else shown[:57] + "..."


def url_secrets(url: str) -> list[str]:
    """The credentials in `url` as written and percent-decoded, longest first (for `scrub`)."""
    found = set()
    for begin, end in _secret_spans(url):
        raw = url[begin:end]
        found.update({raw, unquote(raw), unquote_plus(raw)})
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (say an exception's message about `url`) with the URL masked and its credentials replaced by
    ***, so it can be shown. Secrets of one or two characters are left: replacing those would garble
    every word, and they are not worth much."""
    text = text.replace(url, mask_url(url)) if url else text
    for secret in url_secrets(url):
        if len(secret) > 2:
            text = text.replace(secret, "***")
    return text


def hide_urls(text: str, candidates: Sequence[str] = ()) -> str:
    """`text` with every URL in it masked: first the `candidates` (say the command line, whose URL may hold
    spaces), then anything that looks like scheme://..."""
    for candidate in sorted((c for c in candidates if "://" in c), key=len, reverse=True):
        text = scrub(text, candidate)
    return re.sub(r"\S*://\S*", lambda m: mask_url(m.group()), text)
