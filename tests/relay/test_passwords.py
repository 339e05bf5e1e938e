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


#: Made by this module when it derived with cryptography's Scrypt (before issue 16's memory
#: work): hashes already stored in relays' databases must still verify.
STORED_BY_CRYPTOGRAPHY = [
    (
        "收银-password",
        "$scrypt$ln=10,r=8,p=1$4TObk+aNE9JIgXaMGyzrNQ$c+Y6gEOsW7TETSrFrVkjBYnyWSp8RWBoP+SKsVERwLE",
    ),
    (
        "pw",
        "$scrypt$ln=12,r=4,p=2$AgXXQloq8CZ+l4L9Ns7SoQ$5nexYvylLl/8yVfMeVyROU58o7MSVmHz7F2wTs3lB+c",
    ),
    (
        "pw",
        "$scrypt$ln=15,r=8,p=1$mau9fzUp25YPX+N/7pF+KA$QSQTwg/wiuoSUKZtSvl4xE7lKIRrZN0cdXtVByiPIaw",
    ),
]


@pytest.mark.parametrize(("password", "stored"), STORED_BY_CRYPTOGRAPHY)
def test_hashes_stored_before_still_verify(password, stored):
    assert verify_password(password, stored)
    assert not verify_password(password + "x", stored)


@pytest.mark.parametrize(
    ("password", "params"),
    [
        ("pw", FAST),
        ("", ScryptParams(ln=1, r=1, p=1)),
        ("收银-password", ScryptParams(ln=12, r=4, p=3)),
        ("x" * MAX_PASSWORD_LENGTH, ScryptParams(ln=8, r=16, p=2)),
        ("pw", DEFAULT_PARAMS),
    ],
)
def test_the_key_is_cryptographys_scrypt_for_the_same_inputs(password, params):
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    from posassist.relay.passwords import _derive

    salt = bytes(range(16))
    kdf = Scrypt(salt=salt, length=32, n=2**params.ln, r=params.r, p=params.p)
    assert _derive(password, salt, params) == kdf.derive(password.encode("utf-8"))


def test_parameters_past_what_hashlib_may_allocate_are_refused_not_attempted():
    with pytest.raises(ValueError):
        hash_password("pw", ScryptParams(ln=24, r=64, p=1))  # 128 GiB
    assert not verify_password("pw", "$scrypt$ln=24,r=64,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43)


_SALT_AND_KEY = "$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ("ln=20,r=8,p=1", "1 GiB, the attack's 3.3 s"),
        ("ln=20,r=8,p=16", "1 GiB, ~50 s"),
        ("ln=17,r=8,p=1", "128 MiB: past the memory cap"),
        ("ln=15,r=8,p=5", "5x the default's work"),
        ("ln=11,r=64,p=16", "16 MiB, 8x the default's work"),
        ("ln=15,r=8,p=1,p=2", "a setting given twice"),
        ("ln=10,r=8,p=1,ln=20", "a setting given twice, the second one dear"),
        ("r=8,ln=10,p=1", "another order"),
        ("ln=+10,r=8,p=1", "a sign"),
        ("ln=10,r=08,p=1", "a leading zero"),
        ("ln=10,r=8,p=1,x=1", "an unknown setting"),
        ("ln=10, r=8, p=1", "spaces"),
        ("ln=0,r=8,p=1", "zero"),
    ],
)
def test_a_stored_hash_with_settings_we_do_not_make_is_refused_unrun(settings, why, monkeypatch):
    from posassist.relay import passwords

    derived = []

    def derive(*args):
        derived.append(args)
        return b""

    monkeypatch.setattr(passwords, "_derive", derive)
    assert not verify_password("pw", f"$scrypt${settings}{_SALT_AND_KEY}"), why
    assert derived == []  # never computed: no 1 GiB, no seconds of CPU
    assert needs_rehash(f"$scrypt${settings}{_SALT_AND_KEY}")


def test_a_refused_hash_is_logged_once_per_settings(caplog):
    stored = "$scrypt$ln=21,r=3,p=7" + _SALT_AND_KEY  # settings no other test uses
    with caplog.at_level("WARNING", logger="posassist.relay"):
        assert not verify_password("pw", stored)
        assert not verify_password("other", stored)
    refused = [r for r in caplog.records if "scrypt settings" in r.getMessage()]
    assert len(refused) == 1
    assert "'ln=21,r=3,p=7'" in refused[0].getMessage()
    assert _SALT_AND_KEY[1:20] not in refused[0].getMessage()  # no salt or key in the log


def test_the_settings_caps_hold_every_hash_we_made():
    for settings in (DEFAULT_PARAMS, FAST, ScryptParams(ln=12, r=4, p=2)):
        assert 128 * 2**settings.ln * settings.r <= 32 * 2**20
