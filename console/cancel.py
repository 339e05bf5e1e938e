"""``posassist cancel JOB``: stop a running script (``POST /v1/jobs/{id}/cancel``,
docs/protocol.md#cancel).

The relay checks role and scope, asks the till and waits for it to confirm; this prints what the
till did (its words pass through :func:`printable`: a till is never trusted with a terminal), or
why the cancel was refused, in English and Chinese.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

from posassist.client import http
from posassist.protocol.errors import BadArgument

from .render import printable

if TYPE_CHECKING:
    import argparse

__all__ = ["COMMANDS", "add_parsers", "command"]

COMMANDS = ("cancel",)
#: The relay waits up to 30 s for the till (relay/handlers/cancel.py); a margin on top.
CANCEL_WAIT = 45.0
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: The relay's refusal (its error class) → what to tell the technician in Chinese.
_REFUSED_ZH = {
    "NotFound": "没有此任务, 或它不在您的权限范围内",
    "ScopeError": "您的角色不能取消脚本",
    "JobFinished": "任务已结束, 无需取消",
    "NotCancellable": "只能取消正在运行的脚本",
    "NotRunning": "设备上没有在运行此脚本: 它已在取消前结束",
    "AgentTooOld": "收银台代理版本过旧, 无法取消, 请先升级代理",
    "OfflineError": "设备离线, 无法取消",
    "CancelUnanswered": "设备未及时确认取消, 请稍后查看任务结果",
}


def add_parsers(commands: Any) -> None:
    c = commands.add_parser(
        "cancel", help="stop a running script (the job id `posassist run` printed)"
    )
    c.add_argument("job", help="the job id, e.g. job_0123456789abcdef0123")
    c.add_argument("--json", action="store_true", help="the relay's answer as JSON")


def command(args: argparse.Namespace, session: dict[str, str]) -> int:
    job_id = args.job
    if not _JOB_ID.fullmatch(job_id):
        raise BadArgument(f"{job_id[:80]!r} is not a job id (e.g. job_0123…) / 不是任务编号")
    try:
        answer = asyncio.run(
            http.fetch(
                "POST",
                http.http_url(session["relay"]) + f"/v1/jobs/{job_id}/cancel",
                json_body={},
                token=session["token"],
                pin=session.get("tls_pin"),
                ca_file=session.get("tls_ca"),
                timeout=CANCEL_WAIT,
            )
        ).raise_for_status()
    except http.HttpStatusError as exc:
        exc.detail_zh = _REFUSED_ZH.get(exc.error, exc.detail_zh)
        raise
    body = answer.json()
    if args.json:
        print(json.dumps(body, ensure_ascii=False, sort_keys=True))
        return 0
    print(
        printable(
            f"job {body.get('job_id')} cancelled on device {body.get('device_id')} / 任务已取消",
            multiline=False,
        )
    )
    detail = body.get("detail")
    if isinstance(detail, str) and detail:
        print("  " + printable(detail, multiline=False))
    backup = body.get("backup_id")
    if isinstance(backup, str):
        print(
            printable(
                f"  backup {backup} is kept: `posassist restore {body.get('device_id')} {backup}`"
                " puts it back again / 备份仍保留, 可再次恢复",
                multiline=False,
            )
        )
    return 0
