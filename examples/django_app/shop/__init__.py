"""The example Django project: a shop whose orders are processed by a sidepunch job after they commit."""
