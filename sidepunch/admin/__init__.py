"""The `sidepunch` command: a shell over sidepunch.api.

Imports core, client and api; nothing imports it.
"""
from .command import Status, main

__all__ = ["Status", "main"]
