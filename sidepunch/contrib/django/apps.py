"""The Django app: `"sidepunch.contrib.django"` in INSTALLED_APPS configures sidepunch from settings.SIDEPUNCH.

`ready()` calls `sidepunch.configure(redis_url=..., middleware=[CloseOldConnections, *SIDEPUNCH["MIDDLEWARE"]])`
once Django has loaded every app. In a web process that sets the client every `perform_async` uses; under
`manage.py sidepunchd` it runs in the master before the workers fork, so each worker starts with the same client
and middleware (a Middleware registered this way runs its around_perform hooks in the worker too). It connects
to nothing: the client connects on its first push.

Imports django and sidepunch's client (through the package) and this app's conf and db modules.
"""
from __future__ import annotations

from django.apps import AppConfig

import sidepunch

from .conf import read_options
from .db import CloseOldConnections


class SidepunchConfig(AppConfig):
    name = "sidepunch.contrib.django"
    label = "sidepunch"
    verbose_name = "Sidepunch"

    def ready(self) -> None:
        options = read_options()
        sidepunch.configure(options.redis_url, middleware=[CloseOldConnections, *options.middleware])
