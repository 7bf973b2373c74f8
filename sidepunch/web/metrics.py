"""The dashboard's metrics pages: `/metrics` (every job class over a window) and `/metrics/CLASS` (one class:
totals, a time series and an execution-time histogram), both drawn on the server as SVG like the dashboard's.

Owns choosing the window from the query string and laying out the charts; the numbers come from
sidepunch.api.metrics. Class names are hostile text: they travel in URLs by render.encode_name and show
through render's escaping. Reads only; imports api (never server).
"""
from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Response

from ..api.metrics import WINDOWS, Metrics
from .render import decode_name

DEFAULT_HOURS = 1
#: The most classes the overview lists (the most total time first); the rest are counted in a line below.
MAX_ROWS = 1000


def window(ctx: Any) -> int:
    """The window in hours from `?hours=`; anything not offered falls back to one hour."""
    text = ctx.request.args.get("hours", "")
    return int(text) if text in {str(h) for h in WINDOWS} else DEFAULT_HOURS


def overview(ctx: Any) -> Response:
    hours = window(ctx)
    rows = Metrics(ctx.redis).classes(hours)
    peak = max([m.totals.total_ms for m in rows[:MAX_ROWS]] + [1])
    return ctx.render("metrics.html", tab="metrics", hours=hours, windows=WINDOWS, rows=rows[:MAX_ROWS],
                      hidden=max(len(rows) - MAX_ROWS, 0), peak=peak)


def job_class(ctx: Any, name: str) -> Response:
    hours = window(ctx)
    report = Metrics(ctx.redis).job_class(decode_name(name), hours)
    series_peak = max([max(t.processed, t.failed) for _, t in report.series] + [1])
    hist_peak = max([b.count for b in report.histogram] + [1])
    return ctx.render("metrics_class.html", tab="metrics", hours=hours, windows=WINDOWS, report=report,
                      series_peak=series_peak, hist_peak=hist_peak, name=name, now=time.time())


ROUTES = [("/metrics", "metrics", ["GET"], overview), ("/metrics/<path:name>", "metrics_class", ["GET"], job_class)]
