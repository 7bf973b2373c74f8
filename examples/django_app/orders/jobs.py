"""The shop's jobs; `python manage.py sidepunchd` loads this module in every worker (no -r needed)."""
import os

import sidepunch

from .models import Order


class ProcessOrder(sidepunch.Job):
    queue = "orders"
    retry = 3

    def perform(self, order_id: int) -> None:
        # Enqueued with on_commit: the row is there, committed, before this job can run.
        order = Order.objects.get(pk=order_id)
        order.status = "processed"
        order.processed_by = os.getpid()
        order.save(update_fields=["status", "processed_by"])
