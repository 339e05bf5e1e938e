"""Password hashing with scrypt (OpenSSL's, through ``hashlib``), parameters stored alongside each
hash.

Hashes look like ``$scrypt$ln=15,r=8,p=1$<salt>$<key>`` (unpadded base64, PHC string style), so
the cost can be raised later: :func:`needs_rehash` tells the sign-in path to re-hash on success.
These functions burn tens of milliseconds of CPU; call them through ``asyncio.to_thread``.

``hashlib.scrypt`` gives the same keys as ``cryptography``'s Scrypt, which this module used before
(tests/relay/test_passwords.py), without mapping cryptography's 8 MB library at start: an idle
relay does not need it (issue 16, docs/notes/wp-16mem-status.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_PASSWORD_LENGTH",
    "ScryptParams",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

#: Refuse to hash more than this many characters (a cheap bound on attacker-chosen work).
MAX_PASSWORD_LENGTH = 1024

_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"

log = logging.getLogger("posassist.relay")


#: The most a hash may cost, whatever its stored settings say (attack finding F5: a hash
#: written into the database with ``ln=20,r=8,p=16`` made each sign-in attempt take 1 GiB and
#: ~50 s): memory 128·N·r at most 64 MiB (twice DEFAULT_PARAMS'), work N·r·p at most 4 times
#: DEFAULT_PARAMS'. Every hash this module has made (ln ≤ 15, r ≤ 8, p ≤ 2) is well inside.
MAX_SCRYPT_MEMORY = 64 * 2**20
MAX_SCRYPT_WORK = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class ScryptParams:
    """scrypt cost: N = 2**ln, block size r, parallelism p. Memory is 128·N·r bytes; settings
    past :data:`MAX_SCRYPT_MEMORY` or :data:`MAX_SCRYPT_WORK` are refused (ValueError)."""

    ln: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.ln <= 24 and 1 <= self.r <= 64 and 1 <= self.p <= 16):
            raise ValueError("scrypt parameters out of range")
        n = 2**self.ln
        if 128 * n * self.r > MAX_SCRYPT_MEMORY or n * self.r * self.p > MAX_SCRYPT_WORK:
            raise ValueError("scrypt parameters past the cost this relay accepts")


#: 2**15 · 8 · 128 B = 32 MiB per hash: OWASP's scrypt minimum at the time of writing.
DEFAULT_PARAMS = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError("password too long")
    n, r, p = 2**params.ln, params.r, params.p
    # What OpenSSL allocates (B and V, RFC 7914 §5-6) plus room: its default cap is 32 MiB,
    # exactly DEFAULT_PARAMS' V. hashlib refuses a cap over 2 GiB with ValueError.
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=_KEY_BYTES
    )


def hash_password(password: str, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """Hash ``password`` with a fresh random salt.

    Raises:
        ValueError: the password is longer than :data:`MAX_PASSWORD_LENGTH`, or ``params`` need
            more than 2 GiB.
    """
    salt = os.urandom(_SALT_BYTES)
    key = _derive(password, salt, params)
    return f"${_SCHEME}$ln={params.ln},r={params.r},p={params.p}${_b64(salt)}${_b64(key)}"


#: The settings as :func:`hash_password` writes them: each once, in this order, plain decimals.
_PARAMS_TEXT = re.compile(r"ln=([1-9][0-9]?),r=([1-9][0-9]?),p=([1-9][0-9]?)")


def _parse(stored: str) -> tuple[ScryptParams | None, str, bytes, bytes]:
    """Split a stored hash: its settings (None when they are not ones this module would have
    written: refused, never computed), their text, the salt and the key; raises ValueError when
    it is not one of ours at all."""
    empty, scheme, param_text, salt_text, key_text = stored.split("$")
    if empty or scheme != _SCHEME:
        raise ValueError("not an scrypt hash")
    salt, key = _unb64(salt_text), _unb64(key_text)
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt or key too short")
    match = _PARAMS_TEXT.fullmatch(param_text)
    if match is None:
        return None, param_text, salt, key
    try:
        params = ScryptParams(ln=int(match[1]), r=int(match[2]), p=int(match[3]))
    except ValueError:
        return None, param_text, salt, key
    return params, param_text, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False also for a malformed or foreign hash.

    The comparison is constant-time in the key bytes. Settings other than the ones
    :func:`hash_password` writes, or past the caps of :class:`ScryptParams`, are never run: such
    a hash is False, and logged once per process and settings.
    """
    try:
        params, param_text, salt, expected = _parse(stored)
        if params is None:
            _log_refused(param_text)
            return False
        actual = _derive(password, salt, params)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


#: Settings already logged by :func:`_log_refused` (bounded: a database holds few such hashes).
_LOGGED: set[str] = set()
_MAX_LOGGED = 32


def _log_refused(param_text: str) -> None:
    shown = param_text[:60]
    if shown in _LOGGED or len(_LOGGED) >= _MAX_LOGGED:
        return
    _LOGGED.add(shown)
    log.warning(
        "a stored password hash has scrypt settings %r this relay does not make or exceed its "
        "caps: not computed, sign-in refused (set the password again)",
        shown,
    )


def needs_rehash(stored: str, params: ScryptParams = DEFAULT_PARAMS) -> bool:
    """Whether ``stored`` was made with parameters other than ``params`` (or is unreadable)."""
    try:
        current, _, _, _ = _parse(stored)
    except ValueError:
        return True
    return current != params
