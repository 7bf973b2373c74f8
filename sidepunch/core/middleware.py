"""Middleware chains for the client (around every push) and the server (around every perform).

A client middleware is `mw(job: dict, call_next) -> result`; it may change the job dict before calling
`call_next(job)`, or return None without calling it to stop the push. A server middleware is
`mw(instance, job: dict, queue: str, call_next) -> None` and must call `call_next()` for the job to run.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

ClientMiddleware = Callable[[dict, Callable[[dict], Any]], Any]
ServerMiddleware = Callable[[Any, dict, str, Callable[[], Any]], Any]


def run_client_chain(chain: Sequence[ClientMiddleware], job: dict, final: Callable[[dict], Any]) -> Any:
    def step(index: int, current: dict) -> Any:
        if index == len(chain):
            return final(current)
        return chain[index](current, lambda nxt: step(index + 1, nxt))
    return step(0, job)


def run_server_chain(chain: Sequence[ServerMiddleware], instance: Any, job: dict, queue: str,
                     final: Callable[[], Any]) -> Any:
    def step(index: int) -> Any:
        if index == len(chain):
            return final()
        return chain[index](instance, job, queue, lambda: step(index + 1))
    return step(0)
