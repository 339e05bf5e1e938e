"""Why a script was refused before it ran: a machine code and a reason in Chinese and English.

Merchants read Chinese first; the technician's console and the audit log keep both.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Refusal"]


@dataclass(frozen=True)
class Refusal:
    """A refusal; ``code`` is stable (for audit and tests), ``zh``/``en`` are for people.

    Attributes:
        code: e.g. ``invalid_params``, ``sale_open``, ``consent_denied``.
        zh: the reason in Chinese.
        en: the reason in English.
    """

    code: str
    zh: str
    en: str

    @property
    def text(self) -> str:
        """Both languages on one line, for ``ScriptFinished.detail``."""
        return f"{self.zh} / {self.en}"
