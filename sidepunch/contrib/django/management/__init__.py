"""Django management commands of sidepunch.contrib.django (found by Django in this package)."""
