"""``posassist-scripts``: the approvers' offline tool for the signed script repository.

The TUF-signed repository arrives with the vetted-scripts issue; until then this says so.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print(
        "posassist-scripts: the signed script repository is not built yet "
        "(see the vetted-scripts issue); nothing was done.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
