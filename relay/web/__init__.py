"""The technician's web console, served by the relay (issue 15; docs/console.md): server-rendered
pages (jinja2, autoescaped) with a vendored htmx, signed in with the API's users and tokens. The
routes are set up at start (routes.py); the pages load with the first request."""

from __future__ import annotations

from .routes import add_console_routes

__all__ = ["add_console_routes"]
