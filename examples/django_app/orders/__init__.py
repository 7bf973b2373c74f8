"""The orders app: an Order model, a view that creates one, and jobs.py, which `manage.py sidepunchd` loads."""
