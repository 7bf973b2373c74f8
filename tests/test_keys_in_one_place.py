"""Every Redis key name is built in sidepunch/core/keys.py: read from the source with `ast`, no other module holds a
key literal (`queue:`, `stat:`, working lists, our `sidepunch:` keys, `:workers`, `-signals`) or passes a bare key
name (`queues`, `processes`, `dead`...) to a Redis command."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sidepunch"
KEYS_MODULE = PACKAGE / "core" / "keys.py"
PREFIXES = ("queue:", "stat:", "working:", "sidepunch:alive", "sidepunch:dead", "sidepunch:recovery")
SUFFIXES = (":workers", "-signals")
BARE = {"queues", "schedule", "retry", "dead", "processes"}
#: Redis commands whose first argument is a key (not `get`: dict.get("retry") reads a job's field).
COMMANDS = set("set mget mset incr incrby expire hset hget hmget hgetall hdel hscan_iter sadd srem smembers scard "
               "sismember lpush rpush lpop rpop lrange llen lindex lrem lmove blmove brpop zadd zrem zcard zrange "
               "zscore zrangebyscore zrevrangebyscore zscan_iter unlink delete exists watch transaction".split())
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != KEYS_MODULE)


def _text(node: ast.AST) -> str | None:
    """The literal text of a constant, or of an f-string with {} for each placeholder."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return node.value if isinstance(node.value, str) else node.value.decode("latin-1")
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, kinds) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def key_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    docs |= {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}  # seen as the f-string
    found = []
    for node in ast.walk(tree):
        text = _text(node)
        if text is not None and id(node) not in docs and (text.startswith(PREFIXES) or text.endswith(SUFFIXES)):
            found.append(f"{path.name}:{node.lineno} {text!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COMMANDS:
            first = _text(node.args[0]) if node.args else None
            if first in BARE:
                found.append(f"{path.name}:{node.lineno} {node.func.attr}({first!r}, ...)")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_keys_builds_a_key(path):
    assert key_literals(path) == []


def test_the_check_sees_the_forms_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('r.mset({f"stat:{s}": 0})\nr.llen(b"queue:" + name)\nr.scard("processes")\n'
                      'k = f"{identity}-signals"\nr.get(x)\n')
    assert len(key_literals(sample)) == 4
