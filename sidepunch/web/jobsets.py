"""The dashboard's pages over Sidekiq's sorted sets: `/retries`, `/scheduled`, `/morgue` and one entry of each.

Owns listing a set (paged, by score either way) or filtering it (`q`: a substring of the class, the
arguments, the error or the dead reason; read with ZSCAN, never ZRANGE of everything; at most MAX_MATCHES
matches, sorted by score), and its actions: per entry or per checked box Retry now / Add to queue, Delete,
Kill; Retry all / Delete all / Kill all after a confirmation page. Every move is a sidepunch.api call
(SortedEntry, JobSet, AdminOps), so it is conditional on the exact member bytes read. An entry's KEY in URLs is
Sidekiq's `<score>-<jid>`, with the `raw:` id for an entry that has no plain jid.
Imports core and api (never server).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from .. import api
from ..api.ops import AdminOps
from ..api.records import name_key
from ..api.unique import unique_lock_of
from ..core.payload import PayloadError
from .pages import page_args
from .render import compact

MAX_MATCHES = 1000
KINDS: dict[str, tuple[type[api.JobSet], str]] = {
    "retries": (api.RetrySet, "Retries"), "scheduled": (api.ScheduledSet, "Scheduled"), "morgue": (api.DeadSet, "Dead")}
#: Per entry (and per checked box) actions of each set, in button order.
ACTIONS = {"retries": ("retry", "delete", "kill"), "scheduled": ("add_to_queue", "delete", "kill"),
           "morgue": ("retry", "delete")}
#: Whole-set actions of each set.
ALL_ACTIONS = {"retries": ("retry", "delete", "kill"), "scheduled": ("delete",), "morgue": ("retry", "delete")}
LABELS = {"retry": "Retry now", "add_to_queue": "Add to queue", "delete": "Delete", "kill": "Kill"}
_KEY = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)-(.+)", re.ASCII)
#: Needle characters every JSON writer leaves as they are and that are not glob characters: such a needle can
#: be looked for in the raw bytes by Redis (ZSCAN MATCH); any other is tested on every entry parsed.
#: (Not `<>&'`: some JSON writers, Rails' among them, escape those as \u003c and so on.)
_PLAIN = re.compile(r"[A-Za-z0-9_.:@+=~ ,;!#$%()-]+", re.ASCII)


def entry_key(entry: api.SortedEntry) -> str:
    return f"{entry.score!r}-{entry.id}"


def _jobset(ctx: Any, kind: str) -> api.JobSet:
    return KINDS[kind][0](ctx.redis)


def _find(jobset: api.JobSet, key: str) -> list[api.SortedEntry]:
    match = _KEY.fullmatch(key)
    if match is None:
        return []
    try:
        score = float(match.group(1))
    except (ValueError, OverflowError):
        return []
    return [e for e in jobset.fetch(score) if e.id == match.group(2)]


def _hit(entry: api.SortedEntry, needle: str) -> bool:
    if not entry.ok:
        return needle in entry.text()
    fields = (entry.display_class, compact(entry.display_args, 10**9), entry.error_class or "",
              entry.error_message or "", entry.reason or "")
    return any(needle in text for text in fields)


def search(jobset: api.JobSet, needle: str, newest_first: bool) -> tuple[list[api.SortedEntry], bool]:
    """Entries matching `needle`, sorted by score, and whether the search stopped at MAX_MATCHES."""
    pattern = None
    if _PLAIN.fullmatch(needle):
        pattern = b"*" + name_key(needle) + b"*"
    found: list[api.SortedEntry] = []
    for member, score in jobset.redis.zscan_iter(jobset.name, match=pattern, count=1000):
        # _entries builds what the set's own reads build (a dead entry with its reason).
        entry = jobset._entries([(member, score)])[0]
        if _hit(entry, needle):
            found.append(entry)
            if len(found) >= MAX_MATCHES:
                break
    found.sort(key=lambda e: e.score, reverse=newest_first)
    return found, len(found) >= MAX_MATCHES


def listing(ctx: Any, kind: str) -> Response:
    jobset = _jobset(ctx, kind)
    page, size = page_args(ctx)
    order = ctx.request.args.get("order")
    newest = jobset.newest_first if order not in ("asc", "desc") else order == "desc"
    needle = ctx.request.args.get("q", "")[:200]
    capped = False
    if needle:
        matches, capped = search(jobset, needle, newest)
        total, entries = len(matches), matches[(page - 1) * size:page * size]
    else:
        total, entries = jobset.size, jobset.page(page, size, newest_first=newest)
    return ctx.render("jobset.html", tab="jobset:" + kind, kind=kind, title=KINDS[kind][1], entries=entries,
                      total=total, page=page, per=size, pages=max((total + size - 1) // size, 1),
                      order="desc" if newest else "asc", q=needle, capped=capped, key_of=entry_key,
                      actions=ACTIONS[kind], all_actions=ALL_ACTIONS[kind], labels=LABELS,
                      max_matches=MAX_MATCHES)


def _act(entry: api.SortedEntry, action: str) -> bool:
    moves: dict[str, Callable[[], bool]] = {"retry": entry.retry, "add_to_queue": entry.add_to_queue,
                                            "delete": entry.delete, "kill": entry.kill}
    return moves[action]()


NOTICE_OF = {"retry": "retried", "add_to_queue": "retried", "delete": "deleted", "kill": "killed"}


def bulk(ctx: Any, kind: str) -> Response:
    """The checked boxes of a listing, one action for all."""
    action = ctx.request.form.get("action", "")
    if action not in ACTIONS[kind]:
        return ctx.fail(f"unknown action {action!r} for {kind}", 400)
    jobset = _jobset(ctx, kind)
    done, left = 0, []
    for key in ctx.request.form.getlist("key")[:1000]:
        for entry in _find(jobset, key):
            try:
                done += _act(entry, action)
            except PayloadError as exc:
                left.append(str(exc))
    if left:
        return ctx.fail(f"{done} done; {len(left)} left where they are: " + "; ".join(left[:5]), 409)
    return ctx.redirect("jobset:" + kind, notice=NOTICE_OF[action], n=done)


def everything(ctx: Any, kind: str, action: str) -> Response:
    """Retry all / Delete all / Kill all, after a confirmation page."""
    if action not in ALL_ACTIONS[kind]:
        raise NotFound()
    title = KINDS[kind][1]
    if ctx.request.form.get("confirm") != "yes":
        return ctx.render("confirm.html", tab="jobset:" + kind,
                          what=f"{LABELS[action].replace(' now', '')} all {jobset_size(ctx, kind):,} in {title}?",
                          action_url=ctx.url("jobset_all", kind=kind, action=action), fields={},
                          back=ctx.url("jobset:" + kind))
    jobset, ops = _jobset(ctx, kind), AdminOps(ctx.redis)
    if action == "delete":
        return ctx.redirect("jobset:" + kind, notice="deleted", n=ops.clear(jobset.name).removed)
    if action == "kill":
        return ctx.redirect("jobset:" + kind, notice="killed", n=jobset.kill_all())
    result = jobset.retry_each()
    if result.left:
        return ctx.redirect("jobset:" + kind, notice="left", n=len(result.left))
    return ctx.redirect("jobset:" + kind, notice="retried", n=result.done)


def jobset_size(ctx: Any, kind: str) -> int:
    return _jobset(ctx, kind).size


def entry(ctx: Any, kind: str, key: str) -> Response:
    entries = _find(_jobset(ctx, kind), key)
    if not entries:
        return ctx.fail(f"no such entry in {KINDS[kind][1]} (it may have moved meanwhile)", 404)
    found = entries[0]
    # a rate-limited job waits in the schedule: say which limiters it waits on
    limiters = api.LimitSet(ctx.redis).waiting_on(found.jid) if kind == "scheduled" and found.jid else []
    lock = unique_lock_of(ctx.redis, found.item) if found.ok else None  # a unique job's lock
    return ctx.render("entry.html", tab="jobset:" + kind, kind=kind, title=KINDS[kind][1], entry=found,
                      key=key, actions=ACTIONS[kind], labels=LABELS, limiters=limiters, lock=lock)


def entry_post(ctx: Any, kind: str, key: str) -> Response:
    action = ctx.request.form.get("action", "")
    if action not in ACTIONS[kind]:
        return ctx.fail(f"unknown action {action!r} for {kind}", 400)
    entries = _find(_jobset(ctx, kind), key)
    if not entries:
        return ctx.fail(f"no such entry in {KINDS[kind][1]} (it may have moved meanwhile)", 404)
    done = sum(_act(e, action) for e in entries)
    return ctx.redirect("jobset:" + kind, notice=NOTICE_OF[action], n=done)


def _bind(handler: Callable[..., Response], kind: str) -> Callable[..., Response]:
    return lambda ctx, **values: handler(ctx, kind, **values)


ROUTES: list[tuple[str, str, list[str], Callable[..., Response]]] = []
for _kind in KINDS:
    ROUTES += [(f"/{_kind}", f"jobset:{_kind}", ["GET"], _bind(listing, _kind)),
               (f"/{_kind}", f"jobset_bulk:{_kind}", ["POST"], _bind(bulk, _kind)),
               (f"/{_kind}/<key>", f"entry:{_kind}", ["GET"], _bind(entry, _kind)),
               (f"/{_kind}/<key>", f"entry_post:{_kind}", ["POST"], _bind(entry_post, _kind))]
ROUTES.append(("/<any(retries,scheduled,morgue):kind>/all/<action>", "jobset_all", ["POST"], everything))
