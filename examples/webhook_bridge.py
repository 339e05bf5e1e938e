"""posassist alert and ticket webhooks → a WeChat Work (企业微信) group robot (docs/webhooks.md).

    export POSASSIST_WEBHOOK_SECRET=whsec_…
    export ROBOT_URL='https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…'
    python examples/webhook_bridge.py 8080

DingTalk's robot takes the same body; for Slack post ``{"text": line}`` instead. Standard
library only; put it behind your HTTPS reverse proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("POSASSIST_WEBHOOK_SECRET", "")
ROBOT_URL = os.environ.get("ROBOT_URL", "")
WORDS = {
    "alert.opened": "告警",
    "alert.reopened": "再次告警",
    "alert.updated": "告警加重",
    "alert.resolved": "已恢复",
    "alert.escalated": "自动修复无效, 已升级",
    "ticket.opened": "新工单",
    "ticket.sla_breached": "工单超时",
}


def verified(headers: object, body: bytes) -> bool:
    stamp = headers.get("X-Posassist-Timestamp", "")  # type: ignore[attr-defined]
    given = headers.get("X-Posassist-Signature", "")  # type: ignore[attr-defined]
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
    return bool(SECRET) and fresh and hmac.compare_digest("sha256=" + mac, given)


TICKET_WORDS = {
    "printer": "打印机",
    "cash_drawer": "钱箱",
    "scanner": "扫码枪",
    "pos_software": "收银软件",
    "network": "网络",
    "other": "其他",
    "agent": "收银机求助",
    "phone": "电话",
    "response": "响应超时",
    "resolution": "解决超时",
}


def line(note: dict) -> str:  # type: ignore[type-arg]
    text = f"[{WORDS.get(note['type'], note['type'])}] "
    if "ticket" in note:  # someone asked for help, or a promise was missed
        ticket = note["ticket"]
        how = note.get("which") or ticket["channel"]
        text += f"{ticket['support_code']} {TICKET_WORDS.get(ticket['category'], '')} "
        text += f"{ticket['description'][:200]} ({note.get('merchant_name', '')} "
        text += f"{ticket.get('store_name') or ticket['store_id']}, {TICKET_WORDS.get(how, how)})"
    else:
        alert = note["alert"]
        text += f"{alert['severity']} {alert['check']} {alert['summary']} "
        text += f"(门店 store {alert['store_id']}, 设备 device {alert['device_id']})"
    return "".join(c for c in text if c.isprintable())[:1000]


class Bridge(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(min(int(self.headers.get("Content-Length", 0)), 1 << 20))
        if not verified(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        robot = {"msgtype": "text", "text": {"content": line(json.loads(body))}}
        request = urllib.request.Request(
            ROBOT_URL, json.dumps(robot).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5):  # the operator's robot
            pass
        self.send_response(204)  # any 2xx: delivered; anything else: the relay retries
        self.end_headers()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Bridge).serve_forever()
