"""The technician's web console, served by the relay (issue 15; docs/console.md): server-rendered
pages (jinja2, autoescaped) with a vendored htmx, signed in with the API's users and tokens."""

from __future__ import annotations

from .pages import add_console_routes

__all__ = ["add_console_routes"]
