"""posassist store agent: diagnostics, health checks and vetted scripts on the cashier PC.

Must import on Python 3.8 (Windows 7 tills): no 3.9+ syntax or stdlib anywhere under agent/.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"
