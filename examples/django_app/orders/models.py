"""An order, created by the view and marked processed by the ProcessOrder job."""
from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="new")
    processed_by = models.IntegerField(null=True)  # the pid of the worker process that ran the job
