"""Start the posassist agent installed next to this file (``lib``), with the arguments given.

Copied into the install folder by installer.py; ``posassist-agent.cmd``, the service host and the
"get help" shortcut run it with the till's Python 3.8+.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

from posassist.agent.__main__ import main  # after the path is set

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
