"""A diagnostics snapshot as the merchant reads it: findings in words ("打印机缺纸"), worst first,
and the bounded form a help request carries (the ``agent.facts`` limits), never the raw report.

Pure, Python 3.8: it takes findings (agent/findings.py ``evaluate``) and returns data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from posassist.client.render import HEADINGS
from posassist.protocol.messages import MAX_FACT_ITEMS, MAX_FACT_TEXT

if TYPE_CHECKING:
    from ..findings import Finding

__all__ = ["summarise"]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FACT_TEXT else text[: MAX_FACT_TEXT - 1] + "…"


def _subject(finding: Finding, language: int) -> str:
    """What the finding is about, in words: a section that could not be read is named as a
    person would ("打印队列"), never by its identifier (``print_queue``)."""
    subject = finding.subject
    if finding.code == "collector.unreadable" and subject in HEADINGS:
        return HEADINGS[subject].split(" / ")[language]
    return subject


def _titled(title: str, subject: str) -> str:
    return _clip(title + (f" ({subject})" if subject else ""))


def summarise(findings: Sequence[Finding]) -> Dict[str, Any]:
    """``findings``: worst first, each code, severity and zh/en words; at most MAX_FACT_ITEMS
    (``findings_omitted`` counts the rest). ``facts``: the same, for ``help.requested``."""
    ordered = sorted(findings, key=lambda f: -f.severity.rank)
    rows: List[Dict[str, Any]] = []
    for finding in ordered[:MAX_FACT_ITEMS]:
        advice = finding.advice
        rows.append(
            {
                "code": finding.code,
                "severity": finding.severity.value,
                "zh": _titled(advice.title_zh, _subject(finding, 0)),
                "en": _titled(advice.title_en, _subject(finding, 1)),
            }
        )
    omitted = max(0, len(ordered) - MAX_FACT_ITEMS)
    facts: Dict[str, Any] = {"findings": rows, "findings_omitted": omitted}
    return {"findings": rows, "facts": facts}
