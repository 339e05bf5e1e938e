from __future__ import annotations

import pytest

from posassist.relay.passwords import (
    DEFAULT_PARAMS,
    MAX_PASSWORD_LENGTH,
    ScryptParams,
    hash_password,
    needs_rehash,
    verify_password,
)

FAST = ScryptParams(ln=10, r=8, p=1)  # tests only: 1 MiB, a millisecond or two


def test_hash_verifies_the_right_password_only():
    stored = hash_password("收银-password", FAST)
    assert verify_password("收银-password", stored)
    assert not verify_password("收银-Password", stored)
    assert not verify_password("", stored)


def test_hash_uses_a_fresh_salt_and_stores_its_parameters():
    first, second = hash_password("pw", FAST), hash_password("pw", FAST)
    assert first != second
    assert first.startswith("$scrypt$ln=10,r=8,p=1$")


def test_default_parameters_are_at_least_owasp_minimum():
    assert 2**DEFAULT_PARAMS.ln * DEFAULT_PARAMS.r * 128 >= 32 * 1024 * 1024
    assert verify_password("pw", hash_password("pw"))


def test_needs_rehash_when_parameters_change():
    stored = hash_password("pw", FAST)
    assert not needs_rehash(stored, FAST)
    assert needs_rehash(stored, DEFAULT_PARAMS)
    assert needs_rehash("garbage")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "$bcrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=99,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=10,r=8$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=10,r=8,p=1$!!!$AAAA",
        "$scrypt$ln=10,r=8,p=1$AAAA$AAAA",
    ],
)
def test_malformed_stored_hash_never_verifies(stored):
    assert not verify_password("pw", stored)


def test_overlong_password_is_refused():
    with pytest.raises(ValueError, match="too long"):
        hash_password("x" * (MAX_PASSWORD_LENGTH + 1), FAST)
    assert not verify_password("x" * (MAX_PASSWORD_LENGTH + 1), hash_password("x", FAST))


async def test_sign_in_rehashes_a_password_made_at_an_older_cost(tmp_path):
    from tests.relay.harness import PASSWORD, start_relay

    relay = await start_relay(tmp_path)
    try:
        storage = relay.state.storage
        user = await storage.get_user("viewer")
        await storage.set_password_hash(user.id, hash_password(PASSWORD, FAST))
        status, _ = await relay.post("/v1/login", {"username": "viewer", "password": PASSWORD})
        assert status == 200
        stored = (await storage.get_user("viewer")).password_hash
        assert not needs_rehash(stored)  # now at DEFAULT_PARAMS
        assert verify_password(PASSWORD, stored)
        status, _ = await relay.post("/v1/login", {"username": "viewer", "password": PASSWORD})
        assert status == 200
        assert (await storage.get_user("viewer")).password_hash == stored  # no second re-hash
        wrong = await relay.post("/v1/login", {"username": "viewer", "password": "wrong-one"})
        assert wrong[0] == 401
        assert (await storage.get_user("viewer")).password_hash == stored
    finally:
        await relay.server.close()
