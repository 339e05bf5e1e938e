"""Back-off after failed sign-ins, per (address, username): pure, the clock passed as ``now``.

A hard lock per account lets anyone lock anyone out (five wrong passwords from anywhere lock the
root admin). Here failures count per *address and username*: after ``max_failures`` in a row,
each further try from that address for that name waits a delay that doubles from ``base_delay``
up to ``max_delay``. A stranger slows only their own guessing; the admin signing in from another
address is not touched. While backed off, the handler refuses without looking at the password,
with the same answer and the same work as a wrong password (relay/handlers/api.py ``login``).

Tries are judged one budget at a time: a try counts against the budget from the moment it is
looked at (:meth:`LoginBackoff.judging`, which holds its place while scrypt runs), not when its
scrypt ends, so fifty guesses sent at once get the same ``max_failures`` looks as fifty sent one
after another.

State lives in the relay's memory (bounded, least recently used dropped first) and is forgotten
``forget_after`` seconds after the last failure or on restart; ``posassist-relay user unlock``
clears a name on every running relay (an audited ``user.unlock`` that relays follow).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LoginBackoff"]


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    #: No try is looked at before this time (epoch seconds).
    until: float


class LoginBackoff:
    """Failed sign-ins by (address, username), and the back-off they earn."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        forget_after: float = 3600.0,
        max_keys: int = 100_000,
    ) -> None:
        if max_failures < 1 or base_delay <= 0 or max_delay < base_delay or max_keys < 1:
            raise ValueError("bad back-off settings")
        self.max_failures = max_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        #: tries being judged now (their password under scrypt), per (address, username)
        self._judging: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def _entry(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry.last > max(
            self.forget_after, entry.until - entry.last
        ):
            del self._failures[key]
            return None
        return entry

    def blocked(self, address: str, username: str, now: float) -> bool:
        """Whether a try from ``address`` for ``username`` must be refused unlooked-at now."""
        entry = self._entry((address, username), now)
        return entry is not None and now < entry.until

    def begin(self, address: str, username: str, now: float) -> bool:
        """Whether a try from ``address`` for ``username`` may be looked at now; if so it holds
        a place in the budget until :meth:`end` (call it once the password is judged, then
        :meth:`failed` or :meth:`succeeded`). False: refuse it unlooked-at, as :meth:`blocked`.
        """
        key = (address, username)
        if self.blocked(address, username, now):
            return False
        entry = self._entry(key, now)
        judging = self._judging.get(key, 0)
        if judging and (0 if entry is None else entry.count) + judging >= self.max_failures:
            return False  # the budget is spent by tries still being judged
        self._judging[key] = judging + 1
        return True

    def end(self, address: str, username: str) -> None:
        """A try :meth:`begin` let in has been judged (or abandoned)."""
        key = (address, username)
        left = self._judging.get(key, 0) - 1
        if left > 0:
            self._judging[key] = left
        else:
            self._judging.pop(key, None)

    @contextmanager
    def judging(self, address: str, username: str, now: float) -> Iterator[bool]:
        """:meth:`begin` and, however the block ends, :meth:`end`: the one way a handler judges
        a password. Yields whether the try is looked at (False: backed off, judge nothing real);
        call :meth:`failed` or :meth:`succeeded` after the block.
        """
        looked_at = self.begin(address, username, now)
        try:
            yield looked_at
        finally:
            if looked_at:
                self.end(address, username)

    def retry_after(self, address: str, username: str, now: float) -> float:
        """Seconds until a try is looked at again (0 when it would be now)."""
        entry = self._entry((address, username), now)
        return 0.0 if entry is None else max(0.0, entry.until - now)

    def failed(self, address: str, username: str, now: float) -> None:
        """Count a failed try (a wrong password, or an unknown name: they look the same)."""
        key = (address, username)
        entry = self._entry(key, now)
        count = 1 if entry is None else entry.count + 1
        over = count - self.max_failures
        delay = 0.0 if over < 0 else min(self.max_delay, self.base_delay * 2.0 ** min(over, 62))
        self._failures[key] = _Failures(count=count, last=now, until=now + delay)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, address: str, username: str) -> None:
        """A right password from ``address``: its count for ``username`` starts again."""
        self._failures.pop((address, username), None)

    def failed_tries(self, now: float) -> dict[str, tuple[int, bool]]:
        """Per username with failures still remembered: the most failed tries in a row from one
        address, and whether that is ``max_failures`` or more, so that each further try from
        there waits out a back-off (what an admin's users list shows as "locked out (N failed
        tries)"; the relay's memory only, so since its start)."""
        tries: dict[str, int] = {}
        for (address, username), entry in list(self._failures.items()):
            if self._entry((address, username), now) is not None:
                tries[username] = max(tries.get(username, 0), entry.count)
        return {name: (count, count >= self.max_failures) for name, count in tries.items()}

    def unlock(self, username: str) -> int:
        """Forget every failure for ``username`` (an operator's unlock); how many addresses."""
        keys = [key for key in self._failures if key[1] == username]
        for key in keys:
            del self._failures[key]
        return len(keys)
