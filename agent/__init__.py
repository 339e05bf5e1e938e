"""posassist agent: the small service on a store's cashier PC (Python 3.8+, Windows 7 tills too)."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
