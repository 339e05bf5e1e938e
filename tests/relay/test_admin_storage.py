"""relay/storage/admin.py on SQLite and PostgreSQL: scope-filtered lists, a refused delete that
deletes nothing, disabling in one transaction with the token revocation, and job pages."""

from __future__ import annotations

import pytest

from posassist.relay.audit import Outcome
from posassist.relay.errors import NotFound, TokenRevoked
from posassist.relay.storage import Role, Scope, ScopeKind, SqlStorage
from posassist.relay.storage.admin import AdminStore, NotEmpty


async def test_lists_follow_scope_and_a_refused_delete_deletes_nothing(storage: SqlStorage) -> None:
    admin = AdminStore(storage)
    org = (await storage.create_organisation("A", now=1.0)).id
    other = (await storage.create_organisation("B", now=1.0)).id
    mer = (await storage.create_merchant(org, "M", now=1.0)).id
    sto = (await storage.create_store(mer, "S", now=1.0)).id
    await storage.create_store((await storage.create_merchant(other, "N", now=1.0)).id, "T", now=1)
    stores = await admin.list_nodes(ScopeKind.STORE, Scope(ScopeKind.ORGANISATION, org))
    assert [s.id for s in stores] == [sto]
    assert await admin.list_nodes(ScopeKind.ORGANISATION, Scope(ScopeKind.STORE, sto)) == []
    assert len(await admin.list_nodes(ScopeKind.STORE, Scope.root())) == 2
    await storage.create_user("u", "$scrypt$x", Role.VIEWER, Scope(ScopeKind.STORE, sto), now=1.0)
    with pytest.raises(NotEmpty) as refused:
        await admin.delete_node(ScopeKind.STORE, sto)
    assert refused.value.holds == {"users": 1}
    with pytest.raises(NotEmpty):
        await admin.delete_node(ScopeKind.ORGANISATION, org)
    assert (await storage.get_store(sto)).name == "S"
    with pytest.raises(NotFound):
        await admin.delete_node(ScopeKind.STORE, "sto_missing")


async def test_disabling_revokes_tokens_and_refuses_new_ones(storage: SqlStorage) -> None:
    user = await storage.create_user("u", "$scrypt$x", Role.ADMIN, Scope.root(), now=1.0)
    token = await storage.issue_token(user.id, now=1.0, ttl=100)
    admin = AdminStore(storage)
    assert await admin.set_disabled(user.id, True, now=2.0)
    assert not await admin.set_disabled(user.id, True, now=2.0)  # already
    with pytest.raises(TokenRevoked):
        await storage.authenticate_token(token, now=3.0)
    fresh = await storage.issue_token(user.id, now=3.0, ttl=100)
    with pytest.raises(TokenRevoked):
        await storage.authenticate_token(fresh, now=4.0)
    assert await admin.set_disabled(user.id, False, now=5.0)
    assert (await storage.authenticate_token(fresh, now=6.0)).username == "u"


async def test_job_pages_cover_every_job_once(storage: SqlStorage) -> None:
    org = (await storage.create_organisation("A", now=1.0)).id
    sto = (
        await storage.create_store(
            (await storage.create_merchant(org, "M", now=1.0)).id, "S", now=1.0
        )
    ).id
    _, secret = await storage.create_enrolment(sto, "relay", now=1.0, ttl=100)
    device = await storage.consume_enrolment(
        secret, relay_id="relay", public_key=b"k" * 32, now=2.0
    )
    made = {
        (await storage.create_job(device.id, "diag.request", "t", now=10.0 + i // 3)).id
        for i in range(8)
    }
    admin, seen, before = AdminStore(storage), [], None
    while True:
        jobs, before = await admin.jobs_page(Scope(ScopeKind.STORE, sto), limit=3, before=before)
        seen += [j.id for j in jobs]
        if before is None:
            break
    assert sorted(seen) == sorted(made)
    assert await admin.jobs_page(Scope(ScopeKind.STORE, "sto_other"), limit=3) == ([], None)


async def test_store_places_carry_their_merchants_name_within_scope(storage: SqlStorage) -> None:
    """The web console's fleet groups by these (relay/web/fleet.py)."""
    admin = AdminStore(storage)
    org = (await storage.create_organisation("A", now=1.0)).id
    other = (await storage.create_organisation("B", now=1.0)).id
    noodles = (await storage.create_merchant(org, "面馆 Noodles", now=1.0)).id
    tea = (await storage.create_merchant(other, "Tea", now=1.0)).id
    main = (await storage.create_store(noodles, "Main St", now=1.0)).id
    await storage.create_store(noodles, "Harbour", now=1.0)
    await storage.create_store(tea, "Tea 1", now=1.0)
    places = await admin.store_places(Scope(ScopeKind.ORGANISATION, org))
    assert [(s.name, m) for s, m in places] == [
        ("Harbour", "面馆 Noodles"),
        ("Main St", "面馆 Noodles"),
    ]
    places = await admin.store_places(Scope(ScopeKind.STORE, main))
    assert [(s.id, m) for s, m in places] == [(main, "面馆 Noodles")]  # its merchant's name too
    assert len(await admin.store_places(Scope.root())) == 3
    assert await admin.store_places(Scope(ScopeKind.DEVICE, "dev_x")) == []


async def test_enrolment_creators_come_from_the_audit_chain_since_a_time(
    storage: SqlStorage,
) -> None:
    """The web console's token list shows who made each (relay/web/admin.py)."""
    admin = AdminStore(storage)
    for at, actor, outcome, token in (
        (10.0, "user:old", Outcome.OK, "enr_old"),
        (20.0, "user:ana", Outcome.OK, "enr_a"),
        (30.0, "user:bo", Outcome.REFUSED, "enr_refused"),
        (40.0, "user:bo", Outcome.OK, "enr_b"),
    ):
        await storage.append(
            actor=actor,
            action="enrolment.create",
            target="store:sto_1",
            outcome=outcome,
            now=at,
            detail={"enrolment": token, "expires_at": at + 60},
        )
    await storage.append(
        actor="user:eve",
        action="enrolment.revoke",
        target="enrolment:enr_a",
        outcome=Outcome.OK,
        now=50.0,
        detail={"store": "sto_1"},
    )
    assert await admin.enrolment_creators(15.0) == {"enr_a": "user:ana", "enr_b": "user:bo"}
    assert await admin.enrolment_creators(100.0) == {}
