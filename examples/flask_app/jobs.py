"""The Flask example's jobs: `sidepunchd -r flask_app.jobs` (from examples/) runs them."""
from __future__ import annotations

import logging

import sidepunch

log = logging.getLogger(__name__)


class SendWelcome(sidepunch.Job):
    queue = "mail"

    def perform(self, email: str, template: str) -> str:
        # A real app calls its mail service here; the example logs and returns what it would send.
        log.info("sending %s to %s", template, email)
        return f"{template} -> {email}"
