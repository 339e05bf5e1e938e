"""A script's preconditions (no sale open, outside business hours, the POS or a process stopped).

:func:`evaluate` is pure and takes the facts and the time; :func:`gather_facts` does the I/O.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, FrozenSet, List, Optional, Sequence, Tuple

from posassist.agent.scripts.refusal import Refusal

if TYPE_CHECKING:
    from posassist.agent.profile import PosProfile
    from posassist.protocol.manifest import Precondition

__all__ = ["Facts", "evaluate", "gather_facts", "in_business_hours"]


@dataclass(frozen=True)
class Facts:
    """What the till looks like right now, as far as the preconditions need to know.

    Attributes:
        sale_known: whether a POS profile says how to tell an open sale (else we can't tell).
        sale_open: why a sale looks open (``"file …"`` / ``"process …"``), or None.
        processes: lower-cased names of the running processes (only when a precondition asks).
        pos_processes: the POS profile's process names (``[process] names``); empty without one.
    """

    sale_known: bool = False
    sale_open: Optional[str] = None
    processes: FrozenSet[str] = field(default_factory=frozenset)
    pos_processes: Tuple[str, ...] = ()


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_business_hours(open_at: str, close_at: str, local: datetime.time) -> bool:
    """Whether ``local`` lies in [open, close); a window may span midnight (18:00–02:00).

    ``open == close`` is read as "open around the clock", so an outside-hours script never runs:
    when in doubt, the till is busy.
    """
    start, end, now = _minutes(open_at), _minutes(close_at), local.hour * 60 + local.minute
    if start == end:
        return True
    if start < end:
        return start <= now < end
    return now >= start or now < end


def evaluate(
    preconditions: Sequence[Precondition],
    facts: Facts,
    now: float,
    tz: Optional[datetime.tzinfo] = None,
) -> List[Refusal]:
    """Every precondition that does not hold, as a refusal; empty when the script may run.

    Args:
        preconditions: from the manifest.
        facts: gathered just before (see :func:`gather_facts`).
        now: seconds since the epoch.
        tz: the store's time zone; None for the till's own local time.
    """
    failures: List[Refusal] = []
    for pre in preconditions:
        if pre.kind == "no_sale_open":
            if not facts.sale_known:
                failures.append(
                    Refusal(
                        "sale_unknown",
                        "无法确认是否有未结束的交易（未配置收银软件档案），为安全起见不运行;"
                        " 请在 settings.json 中设置 pos_profile 后重启收银助手服务",
                        "cannot tell whether a sale is open (no POS profile), so not running:"
                        " set pos_profile in settings.json (docs/agent.md), then restart the agent",
                    )
                )
            elif facts.sale_open is not None:
                failures.append(
                    Refusal(
                        "sale_open",
                        "当前有未结束的交易，请结账后再试",
                        f"a sale is open ({facts.sale_open}); try again after checkout",
                    )
                )
        elif pre.kind == "outside_hours":
            local = datetime.datetime.fromtimestamp(now, tz).time()
            if in_business_hours(pre.open_at, pre.close_at, local):
                failures.append(
                    Refusal(
                        "business_hours",
                        f"营业时间（{pre.open_at}–{pre.close_at}）内不运行此脚本",
                        f"not run during business hours ({pre.open_at}-{pre.close_at}, "
                        f"store time {local.strftime('%H:%M')})",
                    )
                )
        elif pre.kind == "pos_stopped":
            # Which POS runs here is the profile's to say, not the manifest's (a catalog script
            # serves every POS product): without a profile nobody can tell it is closed.
            running = [n for n in facts.pos_processes if n.lower() in facts.processes]
            if not facts.pos_processes:
                failures.append(
                    Refusal(
                        "pos_unknown",
                        "无法确认收银软件已关闭（未配置收银软件档案），为安全起见不运行;"
                        " 请在 settings.json 中设置 pos_profile 后重启收银助手服务",
                        "cannot tell whether the POS is closed (no POS profile naming its"
                        " processes), so not running: set pos_profile in settings.json"
                        " (docs/agent.md), then restart the agent",
                    )
                )
            elif running:
                failures.append(
                    Refusal(
                        "pos_running",
                        "收银软件（{}）仍在运行，请先退出收银软件".format(", ".join(running)),
                        "the POS ({}) is still running; close it first".format(", ".join(running)),
                    )
                )
        elif pre.kind == "process_stopped":
            if pre.process.lower() in facts.processes:
                failures.append(
                    Refusal(
                        "process_running",
                        f"进程 {pre.process} 仍在运行，请先关闭",
                        f"process {pre.process} is still running; close it first",
                    )
                )
        else:  # parse_manifest admits no other kind; refuse rather than skip a check
            failures.append(
                Refusal(
                    "unknown_precondition", "未知的前提条件", f"unknown precondition {pre.kind}"
                )
            )
    return failures


def gather_facts(preconditions: Sequence[Precondition], profile: Optional[PosProfile]) -> Facts:
    """Read what ``preconditions`` need (blocking: psutil walks; run it in a worker)."""
    from posassist.agent.collectors.pos import _process_table, sale_open

    kinds = {p.kind for p in preconditions}
    needs_table = bool({"process_stopped", "pos_stopped"} & kinds) or (
        "no_sale_open" in kinds and profile is not None and bool(profile.sale_open_process)
    )
    rows = _process_table() if needs_table else []
    return Facts(
        sale_known=profile is not None
        and bool(profile.sale_open_file or profile.sale_open_process),
        sale_open=sale_open(profile, rows) if "no_sale_open" in kinds else None,
        processes=frozenset(name.lower() for _, name, _ in rows if name),
        pos_processes=profile.process_names if profile is not None else (),
    )
