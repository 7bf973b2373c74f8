"""`manage.py sidepunchd`: see sidepunchd.py."""
