"""The example FastAPI app (main.py) and its jobs (jobs.py); run from examples/:
`uvicorn fastapi_app.main:app` and `sidepunchd -r fastapi_app.jobs`."""
