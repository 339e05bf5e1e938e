"""The agent signs in with the OpenSSL that Python's ssl module loaded (client/signer.py): the
same signatures as cryptography's, on this Python and the till's 3.8; cryptography signs when
that library is missing or fails its known-answer test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from posassist.agent.config import create_identity, load_identity
from posassist.client import signer
from posassist.protocol import signing

ROOT = Path(__file__).resolve().parents[2]
PY38 = ROOT / ".venv38" / "bin" / "python"


def test_this_linux_python_signs_through_openssl_exactly_as_cryptography_does() -> None:
    for i in range(64):
        seed = os.urandom(32)
        message = os.urandom(i * 17)
        native = signer.load_signer(seed)
        assert isinstance(native, signer.NativeSigner)  # not the fallback, here
        reference = signing.private_key_from_raw(seed)
        assert native.sign(message) == reference.sign(message)
        assert native.public_bytes_raw() == signing.public_key_to_raw(reference.public_key())
        signing.verify(reference.public_key(), native.sign(message), message)
    assert signing.fingerprint(native.public_key()) == signing.fingerprint(reference.public_key())


def test_a_seed_that_is_not_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        signer.NativeSigner(signer._native(), b"\x00" * 31)


@pytest.mark.parametrize("fault", ["no library", "wrong answer"])
def test_without_a_good_openssl_cryptography_signs_instead(
    fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signer, "_LIB", None)
    if fault == "no library":
        monkeypatch.setattr(signer, "_library_path", lambda: None)
    else:
        monkeypatch.setattr(signer, "_KAT_SIGNATURE", bytes(64))
    seed = os.urandom(32)
    key = signer.load_signer(seed)
    assert not isinstance(key, signer.NativeSigner)
    assert key.sign(b"x") == signing.private_key_from_raw(seed).sign(b"x")
    with pytest.raises(OSError):
        signer._native()


def test_a_loaded_identity_signs_in_with_openssl_and_is_never_written_again(
    tmp_path: Path,
) -> None:
    from posassist.agent.config import write_identity
    from posassist.agent.errors import ConfigError

    made = create_identity(tmp_path / "till", "dev_1", "ws://127.0.0.1:1")
    loaded = load_identity(tmp_path / "till")
    assert isinstance(loaded.key, signer.NativeSigner)
    payload = signing.auth_payload("relay", "dev_1", b"n" * 32, 5)
    assert loaded.key.sign(payload) == signing.sign(made.key, payload)
    with pytest.raises(ConfigError, match="on disk already"):
        write_identity(tmp_path / "other", loaded)
    assert not (tmp_path / "other" / "agent.key").exists()


@pytest.mark.py38
def test_the_tills_python38_signs_through_openssl_as_cryptography_does(tmp_path: Path) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it (docs/windows7.md)")
    seed = os.urandom(32)
    code = (
        "import sys; from posassist.client import signer; "
        "k = signer.load_signer(bytes.fromhex(sys.argv[1])); "
        "print(type(k).__name__, k.sign(b'till').hex())"
    )
    done = subprocess.run(
        [str(PY38), "-c", code, seed.hex()], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    kind, signature = done.stdout.split()
    assert kind == "NativeSigner"
    assert bytes.fromhex(signature) == signing.private_key_from_raw(seed).sign(b"till")
    assert sys.version_info >= (3, 9)  # this side is the reference Python, not the till's


def test_the_library_path_is_read_whole_from_the_maps_even_with_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside attack F7: the last space-separated field of '/opt/pos assist/libcrypto.so.3'
    is a relative path CDLL would open from the working directory."""
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r--p 00000000 08:01 1 /usr/lib/libssl.so.3\n"
        "7f01-7f02 r--p 00000000 08:01 2 /opt/pos assist/lib/libcrypto.so.3 (deleted)\n"
        "7f02-7f03 r--p 00000000 08:01 3 /opt/pos assist/lib/libcrypto.so.3\n"
    )
    real_open = open

    def fake_open(path: str, *args: object, **kwargs: object) -> object:
        return real_open(maps if path == "/proc/self/maps" else path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    assert signer._library_path() == "/opt/pos assist/lib/libcrypto.so.3"


def test_openssl_failing_to_sign_falls_back_to_cryptography_not_to_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = os.urandom(32)
    key = signer.load_signer(bytearray(seed))  # any bytes-like seed
    assert isinstance(key, signer.NativeSigner)

    def broken(data: bytes) -> bytes:
        raise RuntimeError("OpenSSL could not sign")

    monkeypatch.setattr(key, "_sign", broken)
    assert key.sign(memoryview(b"x")) == signing.private_key_from_raw(seed).sign(b"x")
    monkeypatch.setattr(signer, "_LIB", None)
    monkeypatch.setattr(
        signer.NativeSigner, "_sign", lambda self, data: (_ for _ in ()).throw(RuntimeError("x"))
    )
    assert not isinstance(
        signer.load_signer(seed), signer.NativeSigner
    )  # the test failed: cryptography
