"""One valid instance of every message type, for round trips and property tests."""

from __future__ import annotations

from posassist.protocol import messages as m

NONCE = bytes(range(32))
SIGNATURE = bytes(range(64))

SAMPLES: list[m.Message] = [
    m.Hello(role="agent", versions=(1,), software="posassist-agent/0.1"),
    m.Welcome(version=1, relay_id="relay-1", software="posassist-relay/0.1"),
    m.AuthChallenge(nonce=NONCE),
    m.AuthResponse(device_id="dev-1", signature=SIGNATURE),
    m.TokenAuth(token="tok-abc"),
    m.AuthAccepted(principal="dev-1", heartbeat_interval=20.0),
    m.AuthRefused(code="unknown_device"),
    m.Heartbeat(seq=3, sent_at=1700000000.5),
    m.HeartbeatAck(seq=3, sent_at=1700000000.5, received_at=1700000000.6),
    m.ErrorReply(id=7, code="offline", message="device is offline / 设备离线"),
    m.DiagnosticsRequest(id=1, device_id="dev-1", collectors=("system", "printer"), timeout=5.0),
    m.DiagnosticsReport(
        id=1,
        device_id="dev-1",
        collected_at=1700000000.0,
        sections={"printer": {"ok": True, "status": {"paper": "near_end"}, "raw": b"\x12"}},
    ),
    m.ScriptRunRequest(
        id=2,
        device_id="dev-1",
        script="printer-test-receipt",
        version="1.0.0",
        params={"port": "/dev/ttyS0", "copies": 1, "cut": True, "delay": 0.5},
    ),
    m.ScriptRunRequest(
        id=8, device_id="dev-1", script="pos-service-restart", version="2.1.0", job_id="job-7"
    ),
    m.ScriptStarted(id=2, job_id="job-1", started_at=1700000001.0),
    m.ScriptOutput(id=2, job_id="job-1", seq=0, stream="stdout", data=b"ok\n"),
    m.ScriptRestoreRequest(id=3, device_id="dev-1", backup_id="bk-1"),
    m.ScriptRestoreRequest(id=9, device_id="dev-1", backup_id="bk-1", job_id="job-8"),
    m.ScriptProgress(
        id=2,
        job_id="job-1",
        step="backup_made",
        at=1700000001.5,
        detail={"backup_id": "bk-1", "files": 1},
    ),
    m.ScriptFinished(
        id=2, job_id="job-1", status="succeeded", finished_at=1700000002.0, exit_code=0
    ),
    m.DeviceFacts(
        facts={
            "hostname": "TILL-01",
            "os": "Windows",
            "os_release": "7",
            "python": "3.8.10",
            "agent_version": "0.1.0",
            "pos_profile": "windows-sqlexpress",
            # arrays decode as tuples (docs/protocol.md#framing)
            "printers": ({"name": "收银小票", "target": "COM3", "model": "Epson TM-T20III"},),
            "serial_ports": ({"device": "COM3", "usb_id": "04b8:0e28"},),
            "bits": 32,
            "uptime_s": 1.5,
            "sale_open": None,
            "frozen": False,
            "tags": ("front", 2),
            "cpu": {"logical": 2},
        }
    ),
    m.AlertRaised(
        id=4,
        device_id="dev-1",
        alert_key="dev-1/printer.paper",
        check_name="printer.paper",
        severity="warning",
        state="firing",
        summary="纸将用尽 / paper near end",
        observed_at=1700000003.0,
        details={"port": "/dev/ttyS0"},
    ),
    m.AlertAcknowledged(id=4, duplicate=True),
    m.PolicyUpdated(
        version=7,
        policy={"version": 7, "checks": {"disk": {"thresholds": {"free_pct": 5}}}},
        hours={"timezone": "Asia/Shanghai", "closed": ("2026-02-17",)},
    ),
    m.HelpRequested(
        id=5,
        device_id="dev-1",
        category="printer",
        description="打印机不出纸\n从早上开始",
        contact="+86 138 0013 8000",
        language="zh-CN",
        diagnostics={
            "collected_at": 1700000003.5,
            "findings": (
                {"code": "printer.paper_out", "severity": "critical", "zh": "打印机缺纸"},
            ),
        },
    ),
    m.TicketOpened(
        id=5,
        ticket_id="t-1",
        support_code="K7Q2-XM9P",
        status="new",
        created_at=1700000004.0,
        response_due=1700001804.0,
    ),
    m.TicketUpdated(
        ticket_id="t-1",
        support_code="K7Q2-XM9P",
        status="in_progress",
        message_zh="技术员已接单",
        message_en="A technician took your ticket",
        updated_at=1700000004.0,
        technician="li.wei",
        response_due=1700001804.0,
        resolve_due=1700014404.0,
    ),
    m.TicketQuery(id=11),
    m.TicketList(
        id=11,
        tickets=(
            {
                "ticket_id": "t-1",
                "support_code": "K7Q2-XM9P",
                "status": "resolved",
                "message_zh": "已解决",
                "message_en": "Resolved",
                "updated_at": 1700000009.0,
                "technician": "li.wei",
                "response_due": None,
                "resolve_due": None,
            },
        ),
    ),
    m.TicketRate(id=12, ticket_id="t-1", rating=5, comment="很快 / quick"),
    m.TicketRated(id=12),
    m.TicketReply(id=13, ticket_id="t-1", text="纸已装好 / paper loaded"),
    m.TicketReplied(id=13),
    m.DeviceHandover(id=14, device_id="dev_0123456789abcdef0123"),
    m.DeviceHandedOver(id=14, handed_over_at=1700000100.25),
    m.ConsentRequest(
        id=6,
        device_id="dev-1",
        script="pos-service-restart",
        title_zh="重启收银服务",
        title_en="Restart the POS service",
        changes_zh="收银软件将关闭约 30 秒",
        changes_en="The POS application closes for about 30 seconds",
        expected_duration=30.0,
        timeout=120.0,
    ),
    m.ConsentAnswer(id=6, granted=True, answered_by="merchant"),
    m.JobQuery(id=10, job_ids=("job-7", "job-8")),
    m.ScriptCancel(id=11, job_id="job-7"),
    m.JobResults(
        id=10,
        results=(
            {
                "job_id": "job-7",
                "status": "succeeded",
                "exit_code": 0,
                "finished_at": 1700000005.0,
                "backup_id": "bk-2",
                "detail": "",
            },
            {
                "job_id": "job-8",
                "status": "unknown",
                "exit_code": None,
                "finished_at": None,
                "backup_id": None,
                "detail": "",
            },
        ),
    ),
]
