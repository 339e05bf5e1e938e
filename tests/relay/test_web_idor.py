"""Another store's ids on every web console route that takes one, for a technician scoped to
Main St: each answers 404 exactly as an unknown id does (or the API route's own refusal for the
forms it hands on), the refusal is audited, and nothing was asked of the till or changed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession, CookieJar

from posassist.protocol import messages as m
from posassist.relay.storage import DeviceStatus
from tests.relay.harness import Agent, Relay, start_relay
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def test_another_stores_ids_answer_like_unknown_ones_and_change_nothing(
    relay: Relay,
) -> None:
    theirs, key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, theirs, key) as agent:
        await agent.reply(
            m.AlertRaised(
                id=1,
                device_id=theirs,
                alert_key="k",
                check_name="printer.paper",
                severity="warning",
                state="firing",
                summary="纸将用尽",
                observed_at=relay.clock(),
            )
        )
        assert (await agent.next()) == [m.AlertAcknowledged(id=1, duplicate=False)]
    (alert,) = await relay.state.storage.run_read(
        lambda conn: conn.exec_driver_sql("SELECT id FROM alerts").all()
    )
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        admin = Browser(relay.http, http)
        await admin.sign_in("admin")
        status, _, response = await admin.post(
            f"/devices/{theirs}/diagnose", {"csrf": await admin.csrf()}
        )
        assert status == 303  # offline: a failed job of theirs, to probe for
        their_job = response.headers["Location"].rsplit("/", 1)[1]

    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        tech = Browser(relay.http, http)
        await tech.sign_in("tech")
        csrf = await tech.csrf()
        before = len([r async for r in relay.state.storage.records()])
        unknown_device, unknown_job = "dev_" + "0" * 20, "job_" + "0" * 20
        for theirs_path, unknown_path, method in (
            (f"/devices/{theirs}", f"/devices/{unknown_device}", "GET"),
            (f"/devices/{theirs}/run", f"/devices/{unknown_device}/run", "GET"),
            (f"/devices/{theirs}/run", f"/devices/{unknown_device}/run", "POST"),
            (f"/devices/{theirs}/diagnose", f"/devices/{unknown_device}/diagnose", "POST"),
            (f"/jobs/{their_job}", f"/jobs/{unknown_job}", "GET"),
            (f"/jobs/{their_job}/progress", f"/jobs/{unknown_job}/progress", "GET"),
            (f"/jobs/{their_job}/restore", f"/jobs/{unknown_job}/restore", "POST"),
            (f"/alerts/{alert[0]}/ack", "/alerts/alr_unknown/ack", "POST"),
        ):
            answers = []
            for path in (theirs_path, unknown_path):
                if method == "GET":
                    status, page, _ = await tech.get(path)
                else:
                    status, page, _ = await tech.post(
                        path, {"csrf": csrf, "script": "x", "version": "1.0.0"}
                    )
                answers.append((status, re.sub(r"dev_\w+|job_\w+|alr_\w+", "ID", page)))
            assert answers[0] == answers[1], theirs_path  # no existence leak
            assert answers[0][0] == 404, theirs_path
        after = [r async for r in relay.state.storage.records()][before:]
        refused = {(r.action, r.target) for r in after if str(r.outcome) == "refused"}
        assert ("device.read", f"device:{theirs}") in refused
        assert ("script.run", f"device:{theirs}") in refused
        assert ("diag.request", f"device:{theirs}") in refused
        assert ("job.read", f"job:{their_job}") in refused
        assert not [r for r in after if str(r.outcome) == "ok"]  # nothing done for them
    assert (await relay.state.storage.get_device(theirs)).status is DeviceStatus.ACTIVE
