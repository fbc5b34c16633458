"""Web admin console served by `safehold serve`: dashboard, runs, restore with safeguards.

Modules: store (accounts, sessions, audit log in SQLite), auth (login, CSRF, roles, rate limits),
jobs (the worker pool that runs actions with live logs), data (what the pages show, gathered from
whatever safehold features are installed), app (routes and templates), server (uvicorn + services).
"""
