"""posassist relay: authenticates agents and technicians and routes between them (aiohttp)."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
