"""The FastAPI example's jobs; `sidepunchd -r fastapi_app.jobs` (from examples/) runs them."""
from __future__ import annotations

import asyncio

import sidepunch


class BuildReport(sidepunch.Job):
    """An async job: the worker awaits it on its event loop, next to its other async jobs."""

    queue = "reports"
    keep_result = 3600  # the result stays readable for an hour: sidepunch.api.result(jid)

    async def perform(self, account_id: int, month: str) -> dict:
        await asyncio.sleep(0)  # a real job awaits its database or HTTP calls here
        return {"account": account_id, "month": month, "rows": account_id * 10}
