"""Framework integrations: `sidepunch.contrib.django` (a Django app), `sidepunch.contrib.flask` (a Flask
extension) and `sidepunch.contrib.fastapi` (a lifespan helper for FastAPI / Starlette).

Each needs its framework, installed by the extra of the same name (`pip install 'sidepunch[django]'`); nothing
else in sidepunch imports this package, so the core never loads a framework. Importing this package imports
no framework either: each integration loads its framework when it is imported itself.

May import: sidepunch.core, client, api and web (the dashboard); the Django management command that runs the
daemon also imports sidepunch.server.cli. Must not be imported by any other part of sidepunch.
"""
