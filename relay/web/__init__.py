"""The technician's web console, served by the relay (issue 15; docs/console.md): server-rendered
pages (jinja2, autoescaped) with a vendored htmx, signed in with the API's users and tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .admin import add_admin_pages
from .jobs import add_job_pages
from .pages import add_pages

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["add_console_routes"]


def add_console_routes(app: web.Application) -> None:
    """Every page of the web console and its security headers (docs/api.md lists the routes)."""
    add_pages(app)
    add_job_pages(app)
    add_admin_pages(app)
