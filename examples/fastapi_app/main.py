"""The example FastAPI app: a route enqueues a report with the async client; /sidepunch is the dashboard.

The lifespan configures sidepunch at startup and closes the client's connection at shutdown. REDIS_URL,
DASHBOARD_USER and DASHBOARD_PASSWORD come from the environment; without a password the dashboard is not
mounted at all.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from sidepunch import api
from sidepunch.contrib import fastapi as sp
from sidepunch.core.errors import ResultTimeout
from sidepunch.web import basic_auth

from .jobs import BuildReport


class ReportRequest(BaseModel):
    account_id: int
    month: str


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sp.lifespan(os.environ.get("REDIS_URL")):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/reports", status_code=202)
    async def request_report(body: ReportRequest) -> dict:
        jid = await BuildReport.aperform_async(body.account_id, body.month)  # never blocks the event loop
        return {"jid": jid}

    @app.get("/reports/{jid}")
    def report(jid: str) -> dict:  # a plain def: FastAPI runs it in a thread, so the sync admin API may block
        try:
            return {"jid": jid, "report": api.result(jid, timeout=0)}
        except ResultTimeout:
            raise HTTPException(404, "no report yet") from None

    password = os.environ.get("DASHBOARD_PASSWORD")
    if password:
        sp.mount_dashboard(app, "/sidepunch", redis_url=os.environ.get("REDIS_URL"),
                           auth=basic_auth(os.environ.get("DASHBOARD_USER", "admin"), password),
                           secret_key=os.environ.get("SIDEPUNCH_WEB_SECRET"))
    return app


app = create_app()
