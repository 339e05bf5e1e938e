"""Ed25519 signing with the OpenSSL library that Python's own ``ssl`` module has already loaded,
so a running till (its sign-in) and an idle relay (its audit checkpoints) need not map
cryptography's 8.5 MB Rust library (docs/notes/mem-status.md, wp-16mem-status.md). Where that
library cannot be found or fails its known-answer test, cryptography signs instead: slower to
load, same signatures (Ed25519 is deterministic, RFC 8032 §5.1.6).

Only signing lives here. Everything verified with a *public* key (an agent's sign-in, scripts, the
repository) stays with cryptography and TUF: a fault here can only make a signature wrong, which
the other side refuses.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from posassist.protocol.signing import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["NativeSigner", "load_signer", "load_signing_key", "public_bytes_raw"]

log = logging.getLogger("posassist.client")

_NID_ED25519 = 1087  # EVP_PKEY_ED25519 (OpenSSL 1.1.1 and 3.x)

#: RFC 8032 §7.1 test 2: a one-byte message (the self-test before the first real signature)
_KAT_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
_KAT_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
_KAT_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def _library_path() -> Optional[str]:
    """The libcrypto the ``ssl`` module mapped (Linux: from /proc/self/maps), or a name the
    loader resolves to it (Windows: an already-loaded DLL is found by its name)."""
    import _ssl  # noqa: F401 - maps libcrypto, if it is not mapped yet

    maps_file = "/proc/self/maps"
    if not os.path.exists(maps_file):  # not Linux
        return None
    with open(maps_file, encoding="utf-8", errors="replace") as maps:
        for line in maps:
            # address perms offset dev inode path: the path may hold spaces (outside attack F7)
            fields = line.rstrip("\n").split(None, 5)
            path = fields[5] if len(fields) == 6 else ""
            if (
                path.startswith("/")
                and not path.endswith(" (deleted)")
                and os.path.basename(path).startswith("libcrypto.so")
            ):
                return path
    return None


def _load_library() -> Any:
    path = _library_path()
    names = [path] if path else []
    if sys.platform == "win32":
        # the DLL _ssl.pyd loaded: a loaded module is found by its name; else in DLLs\
        bases = ["libcrypto-3-x64", "libcrypto-3", "libcrypto-1_1-x64", "libcrypto-1_1"]
        dlls = os.path.join(sys.base_prefix, "DLLs")
        names += bases + [os.path.join(dlls, base + ".dll") for base in bases]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            _declare(lib)
            return lib
        except (OSError, AttributeError):
            continue
    raise OSError("no libcrypto with Ed25519 found")


def _declare(lib: Any) -> None:
    p, size, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    buf = ctypes.c_char_p
    lib.EVP_PKEY_new_raw_private_key.argtypes = [i, p, buf, size]
    lib.EVP_PKEY_new_raw_private_key.restype = p
    lib.EVP_PKEY_get_raw_public_key.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(size)]
    lib.EVP_PKEY_get_raw_public_key.restype = i
    lib.EVP_PKEY_free.argtypes = [p]
    lib.EVP_PKEY_free.restype = None
    lib.EVP_MD_CTX_new.argtypes = []
    lib.EVP_MD_CTX_new.restype = p
    lib.EVP_MD_CTX_free.argtypes = [p]
    lib.EVP_MD_CTX_free.restype = None
    lib.EVP_DigestSignInit.argtypes = [p, p, p, p, p]
    lib.EVP_DigestSignInit.restype = i
    lib.EVP_DigestSign.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(size), buf, size]
    lib.EVP_DigestSign.restype = i


class NativeSigner:
    """An Ed25519 private key held by OpenSSL; ``sign`` as cryptography's key does."""

    def __init__(self, lib: Any, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._lib = lib
        self._seed = bytes(seed)  # for cryptography, should OpenSSL ever fail to sign
        self._key = lib.EVP_PKEY_new_raw_private_key(_NID_ED25519, None, self._seed, 32)
        if not self._key:
            raise OSError("OpenSSL refused the Ed25519 key")

    def __del__(self) -> None:
        key, self._key = getattr(self, "_key", None), None
        if key:
            self._lib.EVP_PKEY_free(key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte signature of ``data``; cryptography's if OpenSSL fails (never seen)."""
        try:
            return self._sign(bytes(data))
        except (OSError, RuntimeError, ctypes.ArgumentError) as exc:
            log.warning("OpenSSL could not sign (%s): cryptography signs", exc)
            from posassist.protocol.signing import private_key_from_raw

            return private_key_from_raw(self._seed).sign(bytes(data))

    def _sign(self, data: bytes) -> bytes:
        ctx = self._lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            out = ctypes.create_string_buffer(64)
            length = ctypes.c_size_t(64)
            ok = self._lib.EVP_DigestSignInit(ctx, None, None, None, self._key) == 1
            ok = ok and (
                self._lib.EVP_DigestSign(ctx, out, ctypes.byref(length), data, len(data)) == 1
            )
            if not ok or length.value != 64:
                raise RuntimeError("OpenSSL could not sign")  # never seen: cryptography's error
            return out.raw
        finally:
            self._lib.EVP_MD_CTX_free(ctx)

    def public_bytes_raw(self) -> bytes:
        out = ctypes.create_string_buffer(32)
        length = ctypes.c_size_t(32)
        if self._lib.EVP_PKEY_get_raw_public_key(self._key, out, ctypes.byref(length)) != 1:
            raise RuntimeError("OpenSSL could not give the public key")
        return out.raw[: length.value]

    def public_key(self) -> Ed25519PublicKey:
        """cryptography's public key (for the CLI: fingerprints, PEM); loads cryptography."""
        from posassist.protocol.signing import public_key_from_raw

        return public_key_from_raw(self.public_bytes_raw())


_LIB: Any = None


def _native() -> Any:
    """The checked library, once per process; OSError if there is none (never shown: the
    caller signs with cryptography instead)."""
    global _LIB
    if _LIB is None:
        lib = _load_library()
        probe = NativeSigner(lib, _KAT_SEED)
        try:
            good = (
                probe.public_bytes_raw() == _KAT_PUBLIC and probe._sign(b"\x72") == _KAT_SIGNATURE
            )
        except (RuntimeError, ctypes.ArgumentError) as exc:
            raise OSError(f"OpenSSL's Ed25519 failed: {exc}") from None
        if not good:
            raise OSError("OpenSSL's Ed25519 failed its known-answer test")
        _LIB = lib
    return _LIB


def load_signer(seed: bytes) -> NativeSigner | Ed25519PrivateKey:
    """The key with this 32-byte seed: OpenSSL's through ``ssl``'s library, else cryptography's."""
    try:
        return NativeSigner(_native(), bytes(seed))
    except OSError as exc:
        log.debug("Ed25519 by cryptography: %s", exc)
        from posassist.protocol.signing import private_key_from_raw

        return private_key_from_raw(seed)


def load_signing_key(pem: bytes) -> NativeSigner | Ed25519PrivateKey:
    """A private key PEM as :func:`load_signer` holds it when it is exactly the unencrypted
    PKCS#8 form we write (:func:`~posassist.protocol.signing.pkcs8_ed25519_seed`); any other
    form goes to cryptography's loader, which reads it or raises SignatureError."""
    from posassist.protocol import signing

    seed = signing.pkcs8_ed25519_seed(pem)
    if seed is not None:
        return load_signer(seed)
    return signing.private_key_from_pem(pem)


def public_bytes_raw(key: NativeSigner | Ed25519PrivateKey) -> bytes:
    """The 32-byte public key of either kind of key, without loading cryptography for ours."""
    if isinstance(key, NativeSigner):
        return key.public_bytes_raw()
    return key.public_key().public_bytes_raw()
