"""The operator's half of the relay API (issue 15) over a real relay (aiohttp server, SQLite):
list, rename and delete the tenancy tree and users, passwords, disabling, unlocking, tokens,
enrolment tokens, job and audit history; and each bad input: another tenant's ids on every
route (404 like an unknown id, audited, nothing changed), paging out of range, control
characters and bidi overrides in names, deleting a store with devices, a disabled user's token,
a wrong old password (refused and counted towards the back-off)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession

from posassist.relay.passwords import hash_password, verify_password
from posassist.relay.storage import Role, Scope, ScopeKind
from tests.relay.harness import PASSWORD, Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

_HASH = hash_password(PASSWORD)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """The harness's tenant (admin at the root, tech and viewer in store Main St) and a second
    tenant, Other Service Co, whose admin ``other.admin`` is scoped to it."""
    relay = await start_relay(tmp_path)
    await add_other_tenant(relay)
    yield relay
    await relay.server.close()


async def add_other_tenant(relay: Relay) -> None:
    """Other Service Co (its store Tea Shop 1) with ``other.admin`` and ``tea.tech``, and
    ``org.admin`` over the harness's organisation, all signed in."""
    storage = relay.state.storage
    now = relay.clock()
    other_org = (await storage.create_organisation("Other Service Co", now=now)).id
    other_merchant = (await storage.create_merchant(other_org, "Tea Shop", now=now)).id
    other_store = (await storage.create_store(other_merchant, "Tea Shop 1", now=now)).id
    relay.tokens["other_org"] = other_org
    relay.tokens["other_merchant"] = other_merchant
    relay.tokens["other_store"] = other_store
    users = {
        "org.admin": (Role.ADMIN, Scope(ScopeKind.ORGANISATION, relay.org)),
        "other.admin": (Role.ADMIN, Scope(ScopeKind.ORGANISATION, other_org)),
        "tea.tech": (Role.TECHNICIAN, Scope(ScopeKind.STORE, other_store)),
    }
    for name, (role, scope) in users.items():
        await storage.create_user(name, _HASH, role, scope, now=now)
        await sign_in(relay, name)


async def sign_in(relay: Relay, name: str, password: str = PASSWORD) -> tuple[int, Any]:
    status, body = await relay.post("/v1/login", {"username": name, "password": password})
    if status == 200:
        relay.tokens[name] = str(body["token"])
    return status, body


async def call(
    relay: Relay, method: str, path: str, user: str, body: object = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {relay.tokens[user]}"}
    async with (
        ClientSession() as http,
        http.request(method, relay.http + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def audit(relay: Relay) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    return [
        (r.actor, r.action, str(r.outcome), r.target, dict(r.detail))
        async for r in relay.state.storage.records()
    ]


async def user_id(relay: Relay, name: str) -> str:
    return (await relay.state.storage.get_user(name)).id


# --- the tenancy tree ----------------------------------------------------------------------------


async def test_admin_lists_renames_and_deletes_the_tree_each_change_audited(relay: Relay) -> None:
    status, body = await call(relay, "GET", "/v1/organisations", "org.admin")
    assert status == 200
    assert [o["name"] for o in body["organisations"]] == ["Acme POS Service"]
    status, body = await call(relay, "GET", "/v1/stores", "org.admin")
    assert sorted(s["name"] for s in body["stores"]) == ["Harbour", "Main St"]
    status, body = await call(relay, "GET", "/v1/stores", "admin")  # root sees both tenants
    assert len(body["stores"]) == 3
    status, body = await call(relay, "GET", "/v1/stores", "tech")  # any role, own scope only
    assert [s["name"] for s in body["stores"]] == ["Main St"]

    status, body = await call(
        relay, "PATCH", f"/v1/merchants/{relay.merchant}", "org.admin", {"name": "面馆 Noodles"}
    )
    assert (status, body["name"]) == (200, "面馆 Noodles")
    status, body = await call(
        relay, "PATCH", f"/v1/stores/{relay.other_store}", "org.admin", {"name": "港口店"}
    )
    assert (status, body["name"]) == (200, "港口店")
    status, body = await call(relay, "DELETE", f"/v1/stores/{relay.other_store}", "org.admin")
    assert (status, body) == (200, {"id": relay.other_store, "deleted": True})
    status, body = await call(relay, "GET", "/v1/stores", "org.admin")
    assert [s["name"] for s in body["stores"]] == ["Main St"]
    records = await audit(relay)
    assert ("user:org.admin", "merchant.rename", "ok", f"merchant:{relay.merchant}") in [
        r[:4] for r in records
    ]
    assert ("user:org.admin", "store.delete", "ok", f"store:{relay.other_store}") in [
        r[:4] for r in records
    ]


async def test_deleting_a_store_with_devices_is_refused_and_nothing_is_lost(relay: Relay) -> None:
    device_id, _ = await relay.enrol()
    status, body = await call(relay, "DELETE", f"/v1/stores/{relay.store}", "admin")
    assert status == 409
    assert body["error"] == "NotEmpty"
    assert "devices" in body["message"]
    assert "设备" in body["message_zh"]
    assert (await relay.state.storage.get_store(relay.store)).name == "Main St"
    assert (await relay.state.storage.get_device(device_id)).store_id == relay.store
    # a merchant with stores, an organisation with merchants: refused the same way
    for path in (f"/v1/merchants/{relay.merchant}", f"/v1/organisations/{relay.org}"):
        status, body = await call(relay, "DELETE", path, "admin")
        assert (status, body["error"]) == (409, "NotEmpty")
    refused = [r for r in await audit(relay) if r[1] == "store.delete"]
    assert refused[-1][2] == "refused"
    assert refused[-1][4]["devices"] == 1


@pytest.mark.parametrize(
    "name",
    [
        "Main\x1b[31mSt",  # an escape sequence
        "Main\nSt",
        "\u202egnp.exe",  # RTL override
        "Main\u2066St",  # bidi isolate
        "",
        "x" * 1025,
    ],
)
async def test_renames_with_control_or_bidi_characters_are_refused_unchanged(
    relay: Relay, name: str
) -> None:
    for path in (f"/v1/stores/{relay.store}", f"/v1/merchants/{relay.merchant}"):
        status, body = await call(relay, "PATCH", path, "admin", {"name": name})
        assert status == 400, body
        assert body["error"] in ("BadName", "BadRequest")
    assert (await relay.state.storage.get_store(relay.store)).name == "Main St"
    status, body = await call(relay, "GET", "/v1/merchants", "admin")
    assert "Noodle House" in [m["name"] for m in body["merchants"]]
    assert not [r for r in await audit(relay) if r[1].endswith((".rename", ".update"))]


async def test_only_admins_change_the_tree(relay: Relay) -> None:
    status, body = await call(relay, "PATCH", f"/v1/stores/{relay.store}", "tech", {"name": "X"})
    assert (status, body["error"]) == (403, "ScopeError")
    status, _body = await call(relay, "DELETE", f"/v1/stores/{relay.other_store}", "viewer")
    assert status == 403
    assert (await relay.state.storage.get_store(relay.other_store)).name == "Harbour"


# --- another tenant's ids on every route ---------------------------------------------------------


async def _idor_routes(relay: Relay) -> list[tuple[str, str, object]]:
    device_id, _ = await relay.enrol()
    job = await relay.state.storage.create_job(device_id, "diag.request", "tech", now=relay.clock())
    status, created = await relay.post(
        "/v1/enrolments", {"store_id": relay.store}, relay.tokens["admin"]
    )
    assert status == 201
    tech = await user_id(relay, "tech")
    return [
        ("PATCH", f"/v1/organisations/{relay.org}", {"name": "Mine now"}),
        ("DELETE", f"/v1/organisations/{relay.org}", None),
        ("PATCH", f"/v1/merchants/{relay.merchant}", {"name": "Mine now"}),
        ("DELETE", f"/v1/merchants/{relay.merchant}", None),
        ("PATCH", f"/v1/stores/{relay.other_store}", {"name": "Mine now"}),
        ("DELETE", f"/v1/stores/{relay.other_store}", None),
        ("PATCH", f"/v1/users/{tech}", {"username": "mine"}),
        ("DELETE", f"/v1/users/{tech}", None),
        ("POST", f"/v1/users/{tech}/password", {"password": "0123456789abc"}),
        ("POST", f"/v1/users/{tech}/disable", None),
        ("POST", f"/v1/users/{tech}/enable", None),
        ("POST", f"/v1/users/{tech}/unlock", None),
        ("POST", f"/v1/users/{tech}/revoke-tokens", None),
        ("POST", f"/v1/enrolments/{created['id']}/revoke", None),
        ("GET", f"/v1/jobs?device_id={device_id}", None),
        ("GET", f"/v1/audit?target=store:{relay.store}", None),
        ("GET", f"/v1/audit?target=device:{job.device_id}", None),
        ("GET", "/v1/audit", None),
    ]


async def test_another_tenants_ids_answer_404_like_unknown_ones_audited_nothing_changed(
    relay: Relay,
) -> None:
    routes = await _idor_routes(relay)
    before = await relay.state.storage.get_user("tech")
    for method, path, body in routes:
        status, answer = await call(relay, method, path, "other.admin", body)
        # PATCH /v1/stores/{id} predates issue 15: it answers 403 for unknown and foreign alike
        expected = (
            (403, "ScopeError") if method == "PATCH" and "/stores/" in path else (404, "NotFound")
        )
        assert (status, answer["error"]) == expected, (method, path, answer)
        unknown = path.replace(relay.org, "org_00").replace(relay.merchant, "mer_00")
        unknown = unknown.replace(relay.other_store, "sto_00").replace(before.id, "usr_00")
        if unknown != path:  # an id that doesn't exist answers exactly the same
            assert await call(relay, method, unknown, "other.admin", body) == (status, answer)
    refusals = [
        r for r in await audit(relay) if r[0] == "user:other.admin" and r[1] != "user.login"
    ]
    assert len(refusals) >= len(routes)
    assert all(r[2] == "refused" and r[4]["reason"] == "out of scope" for r in refusals)
    # nothing changed
    after = await relay.state.storage.get_user("tech")
    assert after == before
    assert (await relay.state.storage.get_store(relay.other_store)).name == "Harbour"
    status, _ = await call(relay, "GET", "/v1/devices", "tech")
    assert status == 200  # the tech's token was not revoked
    status, body = await call(relay, "GET", "/v1/enrolments", "admin")
    assert [e["status"] for e in body["enrolments"]] == ["used", "unused"] or [
        e["status"] for e in body["enrolments"]
    ] == ["unused", "used"]


async def test_another_tenants_lists_are_empty_of_this_tenant(relay: Relay) -> None:
    await relay.enrol()
    for path, key in (
        ("/v1/organisations", "organisations"),
        ("/v1/merchants", "merchants"),
        ("/v1/stores", "stores"),
        ("/v1/jobs", "jobs"),
        ("/v1/enrolments", "enrolments"),
    ):
        status, body = await call(relay, "GET", path, "other.admin")
        assert status == 200
        assert relay.store not in str(body[key])
        assert relay.org not in str(body[key])
    status, body = await call(relay, "GET", "/v1/users", "other.admin")
    assert [u["username"] for u in body["users"]] == ["other.admin", "tea.tech"]


# --- users ---------------------------------------------------------------------------------------


async def test_a_disabled_users_existing_token_and_password_are_refused(relay: Relay) -> None:
    tech = await user_id(relay, "tech")
    status, _ = await call(relay, "GET", "/v1/devices", "tech")
    assert status == 200
    status, body = await call(relay, "POST", f"/v1/users/{tech}/disable", "admin")
    assert (status, body["disabled"]) == (200, True)
    status, body = await call(relay, "GET", "/v1/devices", "tech")
    assert (status, body["error"]) == (401, "TokenRevoked")
    status, body = await sign_in(relay, "tech")
    assert status == 401
    # a token issued behind the API's back (another relay) is refused too
    token = await relay.state.storage.issue_token(tech, now=relay.clock(), ttl=600)
    relay.tokens["tech"] = token
    status, body = await call(relay, "GET", "/v1/devices", "tech")
    assert (status, body["error"]) == (401, "TokenRevoked")
    status, body = await call(relay, "GET", "/v1/users", "admin")
    assert {u["username"]: u["disabled"] for u in body["users"]}["tech"] is True
    status, body = await call(relay, "POST", f"/v1/users/{tech}/enable", "admin")
    assert status == 200
    status, _ = await sign_in(relay, "tech")
    assert status == 200
    actions = [r[1] for r in await audit(relay) if r[0] == "user:admin"]
    assert "user.disable" in actions
    assert "user.enable" in actions


async def test_an_admin_may_not_disable_or_delete_themselves(relay: Relay) -> None:
    admin = await user_id(relay, "admin")
    for method, path in (("POST", f"/v1/users/{admin}/disable"), ("DELETE", f"/v1/users/{admin}")):
        status, _body = await call(relay, method, path, "admin")
        assert status == 400
    status, _ = await call(relay, "GET", "/v1/users", "admin")
    assert status == 200


async def test_own_password_change_needs_the_old_one_and_wrong_ones_count_to_the_backoff(
    relay: Relay,
) -> None:
    for _ in range(relay.state.login_backoff.max_failures):
        status, body = await call(
            relay,
            "POST",
            "/v1/password",
            "tech",
            {"old_password": "not the password", "new_password": "a new password 1"},
        )
        assert (status, body["error"]) == (401, "BadCredentials")
    # backed off now: even the right old password is refused, unlooked-at
    status, body = await call(
        relay,
        "POST",
        "/v1/password",
        "tech",
        {"old_password": PASSWORD, "new_password": "a new password 1"},
    )
    assert status == 401
    stored = await relay.state.storage.get_user("tech")
    assert verify_password(PASSWORD, stored.password_hash)  # unchanged
    refused = [r for r in await audit(relay) if r[1] == "user.password_change"]
    assert [r[4]["reason"] for r in refused][-2:] == ["bad password", "locked out"]
    # an admin unlocks; then the change goes through
    tech = await user_id(relay, "tech")
    status, _ = await call(relay, "POST", f"/v1/users/{tech}/unlock", "admin")
    assert status == 200
    status, _ = await call(
        relay,
        "POST",
        "/v1/password",
        "tech",
        {"old_password": PASSWORD, "new_password": "a new password 1"},
    )
    assert status == 200
    assert (await sign_in(relay, "tech", "a new password 1"))[0] == 200


async def test_changing_ones_password_signs_out_every_other_session_of_theirs(
    relay: Relay,
) -> None:
    kept = relay.tokens["tech"]
    await sign_in(relay, "tech")  # a second session: the one someone else may hold
    other = relay.tokens["tech"]
    relay.tokens["tech"] = kept
    status, body = await call(
        relay,
        "POST",
        "/v1/password",
        "tech",
        {"old_password": PASSWORD, "new_password": "a new password 2"},
    )
    assert (status, body["other_tokens_revoked"]) == (200, 1), body
    status, _ = await call(relay, "GET", "/v1/stores", "tech")
    assert status == 200  # the session the change came with stays
    relay.tokens["other-session"] = other
    status, body = await call(relay, "GET", "/v1/stores", "other-session")
    assert (status, body["error"]) == (401, "TokenRevoked"), body
    changes = [r for r in await audit(relay) if r[1] == "user.password_change"]
    assert changes[-1][2:] == ("ok", "user:tech", {"other_tokens_revoked": 1})


async def test_an_admin_may_not_reset_their_own_password_without_the_old_one(
    relay: Relay,
) -> None:
    admin = await user_id(relay, "admin")
    before = (await relay.state.storage.get_user("admin")).password_hash
    status, body = await call(
        relay, "POST", f"/v1/users/{admin}/password", "admin", {"password": "taken over 123"}
    )
    assert (status, body["error"]) == (400, "NotYourself"), body
    assert (await relay.state.storage.get_user("admin")).password_hash == before
    status, _ = await call(relay, "GET", "/v1/stores", "admin")
    assert status == 200  # not signed out either


async def test_reset_and_revoke_tokens_sign_the_user_out(relay: Relay) -> None:
    tech = await user_id(relay, "tech")
    status, body = await call(
        relay, "POST", f"/v1/users/{tech}/password", "admin", {"password": "short"}
    )
    assert status == 400
    status, body = await call(
        relay, "POST", f"/v1/users/{tech}/password", "admin", {"password": "reset password 9"}
    )
    assert (status, body["tokens_revoked"]) == (200, 1)
    status, _ = await call(relay, "GET", "/v1/devices", "tech")
    assert status == 401
    assert (await sign_in(relay, "tech", "reset password 9"))[0] == 200
    status, body = await call(relay, "POST", f"/v1/users/{tech}/revoke-tokens", "admin")
    assert (status, body["tokens_revoked"]) == (200, 1)
    status, _ = await call(relay, "GET", "/v1/devices", "tech")
    assert status == 401


async def test_rename_and_delete_a_user(relay: Relay) -> None:
    viewer = await user_id(relay, "viewer")
    status, body = await call(relay, "PATCH", f"/v1/users/{viewer}", "admin", {"username": "tech"})
    assert status == 409  # taken
    status, body = await call(
        relay, "PATCH", f"/v1/users/{viewer}", "admin", {"username": "bad name\x1b"}
    )
    assert (status, body["error"]) == (400, "BadName")
    status, body = await call(
        relay, "PATCH", f"/v1/users/{viewer}", "admin", {"username": "li.wei"}
    )
    assert status == 200
    assert (await sign_in(relay, "li.wei"))[0] == 200
    status, _ = await call(relay, "DELETE", f"/v1/users/{viewer}", "admin")
    assert status == 200
    status, _ = await call(relay, "GET", "/v1/devices", "li.wei")
    assert status == 401


# --- enrolment tokens, jobs, audit ---------------------------------------------------------------


async def test_enrolment_tokens_listed_and_an_unused_one_revoked(relay: Relay) -> None:
    status, made = await relay.post(
        "/v1/enrolments", {"store_id": relay.store}, relay.tokens["admin"]
    )
    assert status == 201
    await relay.enrol()  # a second token, used
    status, body = await call(relay, "GET", f"/v1/enrolments?store_id={relay.store}", "org.admin")
    assert sorted(e["status"] for e in body["enrolments"]) == ["unused", "used"]
    status, body = await call(relay, "POST", f"/v1/enrolments/{made['id']}/revoke", "org.admin")
    assert (status, body["status"]) == (200, "revoked")
    used = next(
        e
        for e in (await call(relay, "GET", "/v1/enrolments", "admin"))[1]["enrolments"]
        if e["status"] == "used"
    )
    status, body = await call(relay, "POST", f"/v1/enrolments/{used['id']}/revoke", "admin")
    assert status == 409


async def test_jobs_page_through_without_gaps_or_repeats(relay: Relay) -> None:
    device_id, _ = await relay.enrol()
    storage = relay.state.storage
    made = []
    for i in range(7):  # two share a creation time: the cursor keeps them apart
        job = await storage.create_job(device_id, "diag.request", "tech", now=1000.0 + i // 2)
        made.append(job.id)
    seen: list[str] = []
    cursor = ""
    while True:
        status, body = await call(relay, "GET", f"/v1/jobs?limit=2{cursor}", "tech")
        assert status == 200
        assert len(body["jobs"]) <= 2
        seen += [j["id"] for j in body["jobs"]]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    "query",
    [
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=201",
        "/v1/jobs?limit=-1",
        "/v1/jobs?limit=abc",
        "/v1/jobs?limit=1e3",
        "/v1/jobs?limit=%C2%B2",  # '²': a digit to str.isdigit, not to int()
        "/v1/jobs?limit=%E2%91%A4",  # '⑤'
        "/v1/audit?before=%C2%B2",
        "/v1/jobs?cursor=nonsense",
        "/v1/jobs?cursor=nan/job_1",
        "/v1/jobs?cursor=1.0/%1b[31m",
        "/v1/audit?limit=100000",
        "/v1/audit?before=0",
        "/v1/audit?before=-5",
        "/v1/audit?before=99999999999999999999999",
        "/v1/audit?target=user:admin",
    ],
)
async def test_paging_parameters_out_of_range_are_refused(relay: Relay, query: str) -> None:
    status, body = await call(relay, "GET", query, "admin")
    assert status == 400, body
    assert body["error"] in ("BadRequest", "BadCursor"), body
    assert "1e3" not in body["message"]
    assert "nonsense" not in body["message"]


async def test_audit_pages_newest_first(relay: Relay) -> None:
    status, first = await call(relay, "GET", "/v1/audit?limit=3", "admin")
    assert status == 200
    seqs = [r["seq"] for r in first["records"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(seqs) == 3
    status, second = await call(
        relay, "GET", f"/v1/audit?limit=3&before={first['next_before']}", "admin"
    )
    assert max(r["seq"] for r in second["records"]) < min(seqs)
    # an organisation admin reads the records of a store of theirs
    status, body = await call(relay, "GET", f"/v1/audit?target=store:{relay.store}", "org.admin")
    assert status == 200
    assert {r["target"] for r in body["records"]} <= {f"store:{relay.store}"}
    status, _body = await call(relay, "GET", "/v1/audit", "tech")
    assert status == 403
