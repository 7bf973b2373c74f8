"""Sidepunch for Django: add `"sidepunch.contrib.django"` to INSTALLED_APPS.

- settings.SIDEPUNCH configures the client when Django starts (conf.py, apps.py);
- `on_commit(MyJob).perform_async(...)` pushes when the transaction commits (commit.py);
- `python manage.py sidepunchd [sidepunchd options]` runs the daemon with every installed app's `jobs` module
  loaded (management/commands/sidepunchd.py);
- `dashboard_path("sidepunch/")` in urls.py serves the dashboard to staff users (dashboard.py, imported from
  there: it needs Django's auth, which is ready only once the apps are).

Importing this package imports django.db but no model, so it is safe in settings and in INSTALLED_APPS.
"""
from .commit import CommitClient, on_commit

__all__ = ["CommitClient", "on_commit"]
