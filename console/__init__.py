"""posassist console: the technician's command line."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
