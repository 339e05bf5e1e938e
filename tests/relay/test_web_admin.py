"""Administration from the web console over a real relay: every form goes through its API route's
own handler (same checks, same audit). Enrolment tokens (with a QR code that enrols a device),
store settings, users, device revocation; and each refusal: another tenant's store (as the API
answers it, nothing changed), a non-admin, a bad name or zone, a form without its CSRF token."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession, CookieJar

from posassist.protocol import messages as m
from posassist.relay.errors import NotFound
from posassist.relay.storage import DeviceStatus, Role, Scope, ScopeKind
from posassist.relay.storage.admin import AdminStore
from tests.relay.harness import _HASH, PASSWORD, Agent, Relay, start_relay, wait_until
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    storage = relay.state.storage
    now = relay.clock()
    other = await storage.create_organisation("Other Service Co", now=now)
    tea = await storage.create_merchant(other.id, "Tea Shop", now=now)
    relay.tokens["other_store"] = (await storage.create_store(tea.id, "Tea Shop 1", now=now)).id
    await storage.create_user(
        "other.admin", _HASH, Role.ADMIN, Scope(ScopeKind.ORGANISATION, other.id), now=now
    )
    yield relay
    await relay.server.close()


@pytest.fixture
async def browser(relay: Relay) -> AsyncIterator[Browser]:
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        yield Browser(relay.http, http)


async def _actions(relay: Relay) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (r.actor, r.action, str(r.outcome), dict(r.detail))
        async for r in relay.state.storage.records()
    ]


@pytest.mark.parametrize("hours", ["nan", "inf", "-inf", "1e400", "0", "-2"])
async def test_an_enrolment_form_with_hours_out_of_range_is_refused(
    relay: Relay, browser: Browser, hours: str
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    before = await AdminStore(relay.state.storage).list_enrolments(Scope.root())
    status, page, _ = await browser.post(
        "/admin/enrolments", {"csrf": csrf, "store_id": relay.store, "hours": hours}
    )
    assert status == 400, page
    assert "有效期必须在" in page
    assert await AdminStore(relay.state.storage).list_enrolments(Scope.root()) == before


async def test_an_enrolment_token_made_in_the_browser_enrols_a_till(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    status, page, _ = await browser.post(
        "/admin/enrolments", {"csrf": csrf, "store_id": relay.store, "hours": "2"}
    )
    assert status == 201
    token = re.search(r'<pre class="token">([^<]+)</pre>', page)
    assert token is not None
    qr = re.search(r'<img class="qr" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert qr is not None
    assert base64.b64decode(qr.group(1)).startswith(b"<?xml")
    device_id, key = await relay.enrol(token.group(1))  # the token works, once
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-MAIN-1"}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    await wait_until(lambda: not relay.state.presence and not relay.state.writing)
    await relay.state.storage.update_store(relay.store, now=relay.clock(), timezone="Asia/Shanghai")
    _, page, _ = await browser.get("/admin")
    (row,) = re.findall(r'<tr class="token-used">(.*?)</tr>', page, re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[0].startswith("Main St<")  # the store by name, its merchant beneath
    assert cells[1:3] == ["已使用", "admin"]  # the status in words; who made it
    _, listed = await relay.get("/v1/enrolments", relay.tokens["admin"])
    enrolments: Any = listed["enrolments"]
    (made,) = enrolments
    shanghai = datetime.fromtimestamp(made["created_at"], ZoneInfo("Asia/Shanghai"))
    assert cells[3].startswith(shanghai.strftime("%Y-%m-%d %H:%M (")), cells[3]  # store's clock
    assert "后)" in cells[4]  # expires in two hours
    assert '>Main St / TILL-MAIN-1</a><div class="muted id"' in cells[5]  # the till by name
    assert not any(c.startswith(("sto_", "dev_", "enr_")) for c in cells)  # no id as main text
    made = [a for a in await _actions(relay) if a[1] == "enrolment.create"]
    assert made[-1][:3] == ("user:admin", "enrolment.create", "ok")


async def test_an_unused_token_is_revoked_from_the_list_after_a_confirmation(
    relay: Relay, browser: Browser
) -> None:
    await relay.invite()
    await browser.sign_in("admin")
    _, page, _ = await browser.get("/admin")
    action = re.search(r'action="(/admin/enrolments/[^/"]+/revoke)"', page)
    assert action is not None
    records = len(await _actions(relay))
    status, page, _ = await browser.post(action.group(1), {"csrf": await browser.csrf()})
    assert status == 200  # the confirmation step: nothing revoked, nothing audited yet
    assert "撤销此登记码?" in page
    assert 'name="confirm" value="yes"' in page
    assert f'action="{action.group(1)}"' in page
    _, listed = await relay.get("/v1/enrolments", relay.tokens["admin"])
    enrolments: Any = listed["enrolments"]
    assert [e["status"] for e in enrolments] == ["unused"]
    assert len(await _actions(relay)) == records
    status, _, response = await browser.post(
        action.group(1), {"csrf": await browser.csrf(), "confirm": "yes"}
    )
    assert (status, response.headers["Location"]) == (303, "/admin?done=token_revoked")
    _, page, _ = await browser.get(response.headers["Location"])
    assert '<p class="flash" role="status">✔ 已撤销登记码</p>' in page
    assert "已撤销" in page
    _, page, _ = await browser.get("/admin?done=%3Cscript%3E")
    assert 'class="flash"' not in page  # only the known results, in words


async def test_store_settings_change_and_a_bad_zone_changes_nothing(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    _, page, _ = await browser.get("/admin")
    assert re.search(r'name="timezone" value="[^"]+" maxlength="64" list="zones"', page)
    zones = re.findall(r'<option value="([^"]+)">', page.split('<datalist id="zones">')[1])
    assert zones[0] == "Asia/Shanghai"  # first, then every IANA name
    assert "Europe/Berlin" in zones
    form = {"csrf": csrf, "name": "Main St 主街", "timezone": "Asia/Urumqi"}
    status, _, _ = await browser.post(f"/admin/stores/{relay.store}", form)
    assert status == 303
    store = await relay.state.storage.get_store(relay.store)
    assert (store.name, store.timezone) == ("Main St 主街", "Asia/Urumqi")
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"name": "Main\u202eSt"},
    ):
        status, page, _ = await browser.post(f"/admin/stores/{relay.store}", {"csrf": csrf, **bad})
        assert status == 400, bad
        assert "<html" in page  # a page in words, not JSON
        assert 'class="failed"' in page  # /admin again: the refusal above the forms
        assert f'id="store-{relay.store}"' in page
        store = await relay.state.storage.get_store(relay.store)
        assert (store.name, store.timezone) == ("Main St 主街", "Asia/Urumqi")


def _week(**days: tuple[str, ...]) -> dict[str, str]:
    """The per-day hours form: every day 09:00-21:00 unless ``days`` says otherwise (a day's
    tuple: ``("closed",)`` or open/close pairs)."""
    form = {"hours_form": "1"}
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        given = days.get(day, ("09:00", "21:00"))
        if given == ("closed",):
            form[f"closed_{day}"] = "on"
            continue
        for i in range(0, len(given), 2):
            form[f"open_{day}_{i // 2}"], form[f"close_{day}_{i // 2}"] = given[i : i + 2]
    return form


async def test_store_hours_are_set_day_by_day_and_bad_hours_change_nothing(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    _, page, _ = await browser.get("/admin")
    assert 'name="hours" value="{' not in page  # no JSON box
    assert 'name="open_mon_0" value=' in page
    assert 'type="time"' not in page  # 24-hour text, not the locale's AM/PM
    week = _week(
        sun=("closed",),
        wed=("09:00", "12:00", "13:00", "21:00"),  # a lunch break
        sat=("10:00", "00:00"),  # open to midnight
    )
    form = {"csrf": csrf, **week, "closed_dates": "2026-12-25, 2027-01-01"}
    status, _, _ = await browser.post(f"/admin/stores/{relay.store}", form)
    assert status == 303
    store = await relay.state.storage.get_store(relay.store)
    expected = {
        "weekly": {
            **{d: [["09:00", "21:00"]] for d in ("mon", "tue", "thu", "fri")},
            "wed": [["09:00", "12:00"], ["13:00", "21:00"]],
            "sat": [["10:00", "24:00"]],
        },
        "closed": ["2026-12-25", "2027-01-01"],
    }
    assert dict(store.hours) == expected
    _, page, _ = await browser.get("/admin")  # the form shows what is kept, the break too
    assert 'name="closed_sun" checked' in page
    assert 'name="open_wed_1" value="13:00"' in page
    assert 'name="close_sat_0" value="00:00"' in page
    assert 'value="2026-12-25, 2027-01-01"' in page
    records = len([r async for r in relay.state.storage.records()])
    for bad in (
        _week(mon=("21:00", "09:00")),  # closes before it opens
        _week(tue=("09:00", "")),  # half an interval
        _week(wed=("", "")),  # neither open nor ticked closed
        _week(thu=("09:00", "14:00", "13:00", "21:00")),  # overlapping
        _week(**dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), ("closed",))),
        {**_week(), "closed_dates": "25/12/2026"},
        {**_week(), "open_fri_0": "9 am"},
        {"hours_form": "1", "always_open": "on", "closed_dates": "2026-13-01"},
    ):
        status, page, _ = await browser.post(f"/admin/stores/{relay.store}", {"csrf": csrf, **bad})
        assert status == 400, bad
        assert "营业时间无效: 每天须先开门后关门" in page, bad
        assert dict((await relay.state.storage.get_store(relay.store)).hours) == expected, bad
    assert len([r async for r in relay.state.storage.records()]) == records  # no store.update
    always = {"csrf": csrf, "hours_form": "1", "always_open": "on", "closed_dates": ""}
    status, _, _ = await browser.post(f"/admin/stores/{relay.store}", always)
    assert status == 303
    assert dict((await relay.state.storage.get_store(relay.store)).hours) == {}


async def test_another_tenants_store_is_refused_as_the_api_refuses_it(
    relay: Relay, browser: Browser
) -> None:
    other_store = relay.tokens["other_store"]
    await browser.sign_in("other.admin")
    csrf = await browser.csrf("/admin")
    _, page, _ = await browser.get("/admin")
    assert "Main St" not in page  # not listed
    status, _, _ = await browser.post(
        f"/admin/stores/{relay.store}", {"csrf": csrf, "name": "taken over"}
    )
    assert status == 403  # as PATCH /v1/stores/{id} answers (docs/api.md)
    assert (await relay.state.storage.get_store(relay.store)).name == "Main St"
    status, _, _ = await browser.post(
        "/admin/enrolments", {"csrf": csrf, "store_id": relay.store, "hours": "1"}
    )
    assert status == 403
    tech = await relay.state.storage.get_user("tech")
    status, _, _ = await browser.post(
        f"/admin/users/{tech.id}/disable", {"csrf": csrf, "confirm": "yes"}
    )
    assert status == 404  # the routes of issue 15: 404, as for an unknown id
    assert (await relay.state.storage.get_user("tech")).password_hash == _HASH
    refused = [a for a in await _actions(relay) if a[0] == "user:other.admin" and a[2] == "refused"]
    assert {a[1] for a in refused} >= {"store.update", "enrolment.create", "user.disable"}
    # and its own store it may change
    status, _, _ = await browser.post(
        f"/admin/stores/{other_store}", {"csrf": csrf, "timezone": "Asia/Taipei"}
    )
    assert status == 303


async def test_users_are_created_disabled_and_a_non_admin_sees_no_administration(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    new = {
        "csrf": csrf,
        "username": "li.tech",
        "password": "a long enough password",
        "role": "technician",
        "scope_kind": "store",
        "scope_id": relay.store,
    }
    status, _, _ = await browser.post("/admin/users", new)
    assert status == 303
    status, _, _ = await browser.post("/admin/users", {**new, "username": "<script>x</script>"})
    assert status == 400
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        li = Browser(relay.http, http)
        assert (await li.sign_in("li.tech", "a long enough password"))[0] == 303
        assert (await li.get("/fleet"))[0] == 200
        assert (await li.get("/admin"))[0] == 404  # technicians have no administration
        victim = await relay.state.storage.get_user("viewer")
        status, _, _ = await li.post(f"/admin/users/{victim.id}/disable", {"csrf": await li.csrf()})
        assert status == 404  # no confirmation page for a non-admin
        status, _, _ = await li.post(
            f"/admin/users/{victim.id}/disable", {"csrf": await li.csrf(), "confirm": "yes"}
        )
        assert status == 403
        li_user = await relay.state.storage.get_user("li.tech")
        status, _, _ = await browser.post(
            f"/admin/users/{li_user.id}/disable", {"csrf": csrf, "confirm": "yes"}
        )
        assert status == 303
        assert (await li.get("/fleet"))[0] == 303  # their session ended with it
    assert (await relay.state.storage.get_user("viewer")).password_hash == _HASH
    users = {a[3].get("role") for a in await _actions(relay) if a[1] == "user.create"}
    assert "technician" in users


async def test_an_admin_form_without_its_token_changes_nothing(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    tech = await relay.state.storage.get_user("tech")
    for path, form in (
        (f"/admin/users/{tech.id}/disable", {}),
        ("/admin/enrolments", {"store_id": relay.store, "hours": "1"}),
        (f"/admin/stores/{relay.store}", {"name": "changed"}),
    ):
        status, _, _ = await browser.post(path, {"csrf": "forged", **form})
        assert status == 403, path
    assert (await relay.state.storage.get_user("tech")).password_hash == _HASH
    assert (await relay.state.storage.get_store(relay.store)).name == "Main St"
    assert not [a for a in await _actions(relay) if a[1] == "enrolment.create"]


async def test_a_device_is_revoked_from_its_page(relay: Relay, browser: Browser) -> None:
    device_id, _ = await relay.enrol()
    await browser.sign_in("tech")
    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert "注销此设备" not in page  # technicians may not
    status, _, _ = await browser.post(
        f"/admin/devices/{device_id}/revoke", {"csrf": await browser.csrf(), "confirm": "yes"}
    )
    assert status == 403
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.ACTIVE
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        admin = Browser(relay.http, http)
        await admin.sign_in("admin", PASSWORD)
        csrf = await admin.csrf(f"/devices/{device_id}")
        status, page, _ = await admin.post(f"/admin/devices/{device_id}/revoke", {"csrf": csrf})
        assert status == 200  # asked first
        assert "注销此设备?" in page
        assert f'<a class="button secondary" href="/devices/{device_id}">取消</a>' in page
        assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.ACTIVE
        assert ("user:admin", "device.revoke") not in [a[:2] for a in await _actions(relay)]
        status, _, response = await admin.post(
            f"/admin/devices/{device_id}/revoke", {"csrf": csrf, "confirm": "yes"}
        )
        assert status == 303
        assert response.headers["Location"] == f"/devices/{device_id}?done=device_revoked"
        _, page, _ = await admin.get(response.headers["Location"])
        assert "设备已注销" in page
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.REVOKED


async def test_a_revoked_device_is_deleted_from_its_page_with_its_csrf_token(
    relay: Relay, browser: Browser
) -> None:
    device_id, _ = await relay.enrol()
    await browser.sign_in("admin")
    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert f"/admin/devices/{device_id}/delete" not in page  # active: revoke first
    status, _, _ = await browser.post(
        f"/admin/devices/{device_id}/delete", {"csrf": await browser.csrf(), "confirm": "yes"}
    )
    assert status == 409  # the API's refusal, nothing changed
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.ACTIVE
    await relay.state.storage.revoke_device(device_id, now=relay.clock())
    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert f"/admin/devices/{device_id}/delete" in page
    assert "删除此设备" in page
    status, _, _ = await browser.post(
        f"/admin/devices/{device_id}/delete", {"csrf": "forged", "confirm": "yes"}
    )
    assert status == 403
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.REVOKED
    csrf = await browser.csrf(f"/devices/{device_id}")
    status, page, _ = await browser.post(f"/admin/devices/{device_id}/delete", {"csrf": csrf})
    assert (status, "删除此设备?") == (200, page.split("<h1>")[1].split("</h1>")[0])
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.REVOKED
    status, _, response = await browser.post(
        f"/admin/devices/{device_id}/delete", {"csrf": csrf, "confirm": "yes"}
    )
    assert (status, response.headers["Location"]) == (303, "/fleet?done=device_deleted")
    with pytest.raises(NotFound):
        await relay.state.storage.get_device(device_id)
    assert ("user:admin", "device.delete", "ok") in [a[:3] for a in await _actions(relay)]


async def test_a_second_merchant_or_store_of_one_name_is_refused_and_a_made_one_says_so(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    made = {"csrf": csrf, "organisation_id": relay.org, "name": "Tea House 茶馆"}
    status, _, response = await browser.post("/admin/merchants", made)
    assert (status, response.headers["Location"]) == (303, "/admin?done=merchant_made")
    _, page, _ = await browser.get(response.headers["Location"])
    assert "✔ 已创建商户" in page

    async def ids(kind: ScopeKind, parent: str) -> list[str]:
        nodes = await AdminStore(relay.state.storage).list_nodes(kind, Scope.root(), parent=parent)
        return [n.id for n in nodes]

    merchants = await ids(ScopeKind.MERCHANT, relay.org)
    assert len(merchants) == 2
    for again in ("Tea House 茶馆", " tea house 茶馆 "):  # the same name, case and spaces aside
        status, page, _ = await browser.post("/admin/merchants", {**made, "name": again})
        assert status == 409, again
        assert "此处已有同名项" in page  # /admin again, the refusal above its forms
        assert "没有做任何更改" in page
        assert 'action="/admin/merchants"' in page
    assert await ids(ScopeKind.MERCHANT, relay.org) == merchants
    store = {"csrf": csrf, "merchant_id": relay.merchant, "name": "main st"}  # "Main St" exists
    status, page, _ = await browser.post("/admin/stores", store)
    assert status == 409
    assert len(await ids(ScopeKind.STORE, relay.merchant)) == 2  # Main St and Harbour
    # the same name under another parent is fine
    tea = next(m for m in merchants if m != relay.merchant)
    status, _, _ = await browser.post("/admin/stores", {**store, "merchant_id": tea})
    assert status == 303
    status, body = await relay.post(
        "/v1/organisations", {"name": "ACME POS Service"}, relay.tokens["admin"]
    )
    assert (status, body["error"]) == (409, "NameTaken")  # the API refuses it the same way
    refused = [a for a in await _actions(relay) if a[2] == "refused"]
    assert [(a[1], a[3]["reason"]) for a in refused] == [
        ("merchant.create", "name taken"),
        ("merchant.create", "name taken"),
        ("store.create", "name taken"),
        ("organisation.create", "name taken"),
    ]


async def test_the_tree_is_made_renamed_and_deleted_in_the_browser_and_each_change_audited(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    admin = AdminStore(relay.state.storage)

    async def named(kind: ScopeKind, name: str) -> str:
        nodes = await admin.list_nodes(kind, Scope.root())
        return next(n.id for n in nodes if n.name == name)

    status, _, response = await browser.post("/admin/organisations", {"csrf": csrf, "name": "Bo"})
    assert (status, response.headers["Location"]) == (303, "/admin?done=org_made")
    org = await named(ScopeKind.ORGANISATION, "Bo")
    status, _, response = await browser.post(
        f"/admin/organisations/{org}/rename", {"csrf": csrf, "name": "Bo Service 博"}
    )
    assert (status, response.headers["Location"]) == (303, "/admin?done=renamed")
    await browser.post("/admin/merchants", {"csrf": csrf, "organisation_id": org, "name": "Tea"})
    merchant = await named(ScopeKind.MERCHANT, "Tea")
    await browser.post(f"/admin/merchants/{merchant}/rename", {"csrf": csrf, "name": "Tea 茶"})
    await browser.post("/admin/stores", {"csrf": csrf, "merchant_id": merchant, "name": "One"})
    store = await named(ScopeKind.STORE, "One")
    _, page, _ = await browser.get("/admin")
    assert 'value="Bo Service 博"' in page
    assert 'value="Tea 茶"' in page
    for bad in ("", "x\u202ey"):  # refused on /admin itself, nothing renamed
        status, page, _ = await browser.post(
            f"/admin/merchants/{merchant}/rename", {"csrf": csrf, "name": bad}
        )
        assert status == 400, bad
        assert 'class="failed"' in page
    status, page, _ = await browser.post(
        f"/admin/organisations/{org}/delete", {"csrf": csrf, "what": "Bo Service 博"}
    )
    assert status == 200  # asked first, naming what goes
    assert "<strong>Bo Service 博</strong>" in page
    assert 'name="what"' not in page  # the name is shown, not sent on
    status, page, _ = await browser.post(
        f"/admin/organisations/{org}/delete", {"csrf": csrf, "confirm": "yes"}
    )
    assert status == 409  # it still holds a merchant: the API's NotEmpty, shown on /admin
    assert 'class="failed"' in page
    assert await named(ScopeKind.ORGANISATION, "Bo Service 博") == org
    for path in (
        f"/admin/stores/{store}",
        f"/admin/merchants/{merchant}",
        f"/admin/organisations/{org}",
    ):
        status, _, response = await browser.post(
            f"{path}/delete", {"csrf": csrf, "confirm": "yes", "what": "x"}
        )
        assert (status, response.headers["Location"]) == (303, "/admin?done=deleted"), path
    assert not [
        n for n in await admin.list_nodes(ScopeKind.ORGANISATION, Scope.root()) if n.id == org
    ]
    actions = [(a[1], a[2]) for a in await _actions(relay) if a[0] == "user:admin"]
    for action in (
        "organisation.create",
        "organisation.rename",
        "merchant.create",
        "merchant.rename",
        "store.create",
        "store.delete",
        "merchant.delete",
        "organisation.delete",
    ):
        assert (action, "ok") in actions, action
    assert ("organisation.delete", "refused") in actions


async def test_users_are_renamed_reset_and_deleted_and_one_changes_their_own_password(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("admin")
    csrf = await browser.csrf("/admin")
    tech = await relay.state.storage.get_user("tech")
    status, _, response = await browser.post(
        f"/admin/users/{tech.id}/rename", {"csrf": csrf, "username": "li.wei"}
    )
    assert (status, response.headers["Location"]) == (303, "/admin?done=renamed")
    status, page, _ = await browser.post(
        f"/admin/users/{tech.id}/password", {"csrf": csrf, "password": "short"}
    )
    assert status == 400
    assert "密码太短" in page
    assert (await relay.state.storage.get_user("li.wei")).password_hash == _HASH
    status, _, response = await browser.post(
        f"/admin/users/{tech.id}/password", {"csrf": csrf, "password": "a brand new password"}
    )
    assert (status, response.headers["Location"]) == (303, "/admin?done=password_reset")
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        li = Browser(relay.http, http)
        assert (await li.sign_in("li.wei", PASSWORD))[0] != 303  # the old one is gone
        assert (await li.sign_in("li.wei", "a brand new password"))[0] == 303
        li_csrf = await li.csrf("/account")
        elsewhere = Browser(relay.http, ClientSession(cookie_jar=CookieJar(unsafe=True)))
        assert (await elsewhere.sign_in("li.wei", "a brand new password"))[0] == 303
        for bad in (
            {"old_password": "wrong password", "new_password": "another new password"},
            {"old_password": "a brand new password", "new_password": "short"},
        ):
            status, page, _ = await li.post("/account/password", {"csrf": li_csrf, **bad})
            assert status in (400, 401), bad
            assert 'action="/account/password"' in page  # the form again, with why
            assert "没有做任何更改" in page
        status, _, response = await li.post(
            "/account/password",
            {
                "csrf": li_csrf,
                "old_password": "a brand new password",
                "new_password": "my very own password",
            },
        )
        assert (status, response.headers["Location"]) == (303, "/account?done=password_changed")
        _, page, _ = await li.get(response.headers["Location"])
        assert "你的密码已修改" in page  # this session stays signed in
        assert (await elsewhere.get("/fleet"))[0] == 303  # the other one has ended
        await elsewhere.http.close()
    status, page, _ = await browser.post(f"/admin/users/{tech.id}/delete", {"csrf": csrf})
    assert (status, "删除此用户?" in page) == (200, True)
    await relay.state.storage.get_user("li.wei")  # still there
    status, _, _ = await browser.post(
        f"/admin/users/{tech.id}/delete", {"csrf": csrf, "confirm": "yes"}
    )
    assert status == 303
    with pytest.raises(NotFound):
        await relay.state.storage.get_user("li.wei")
    actions = [(a[0], a[1], a[2]) for a in await _actions(relay)]
    for expected in (
        ("user:admin", "user.rename", "ok"),
        ("user:admin", "user.password_reset", "ok"),
        ("user:li.wei", "user.password_change", "refused"),
        ("user:li.wei", "user.password_change", "ok"),
        ("user:admin", "user.delete", "ok"),
    ):
        assert expected in actions, expected


async def test_a_user_backed_off_after_failed_sign_ins_shows_as_locked_out_and_is_unlocked(
    relay: Relay, browser: Browser
) -> None:
    backoff = relay.state.login_backoff
    for _ in range(backoff.max_failures):
        status, _ = await relay.post("/v1/login", {"username": "tech", "password": "wrong guess"})
        assert status == 401
    await browser.sign_in("admin")
    _, page, _ = await browser.get("/admin")
    (row,) = [r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if "<td>tech</td>" in r]
    assert f'<span class="locked-out">已锁定 ({backoff.max_failures} 次登录失败)</span>' in row
    assert "/unlock" in row
    tech = await relay.state.storage.get_user("tech")
    status, _, response = await browser.post(
        f"/admin/users/{tech.id}/unlock", {"csrf": await browser.csrf("/admin")}
    )
    assert (status, response.headers["Location"]) == (303, "/admin?done=user_unlock")
    _, page, _ = await browser.get("/admin")
    (row,) = [r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if "<td>tech</td>" in r]
    assert "locked-out" not in row
    assert "/unlock" not in row
    assert ("user:admin", "user.unlock", "ok") in [a[:3] for a in await _actions(relay)]
