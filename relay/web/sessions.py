"""Web console sessions: the cookie, the CSRF token of every form, and the security headers.

A session is a bearer token of the API (``storage.issue_token``) kept in an ``HttpOnly`` cookie,
so revoking a user's tokens (sign-out, password reset, disable) ends their web sessions too.
docs/console.md#security says why each header and check is there.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..audit import Outcome
from ..errors import CsrfError, TokenError
from ..state import STATE

if TYPE_CHECKING:
    from aiohttp import web

    from ..storage import User

__all__ = [
    "CSP",
    "FORM_COOKIE",
    "LANG_COOKIE",
    "SESSION_COOKIE",
    "Session",
    "check_form",
    "clear_session",
    "csrf_token",
    "form_token",
    "language",
    "security_headers",
    "session_of",
    "start_session",
]

SESSION_COOKIE = "pa_session"
#: Before sign-in there is no session to bind the sign-in form's token to: a random value in
#: its own cookie, repeated in the form (double submit, SameSite=Strict).
FORM_COOKIE = "pa_form"
LANG_COOKIE = "pa_lang"
LANGUAGES = ("zh", "en")

#: No inline script or style, nothing from another origin, never framed: htmx and the style
#: sheet are served by the relay itself (relay/web/static).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends ``Origin: null`` on the
    # console's own forms, and the origin check below needs the real one
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response of the relay carries the console's headers (a
    JSON answer or a 404 framed by someone else's page is no better than an HTML one)."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path == "/" or not request.path.startswith(("/v1/", "/static/")):
        response.headers.setdefault("Cache-Control", "no-store")


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret, so it needs no storage and dies
    with it; a page from another origin can read neither."""
    return hmac.new(session_token.encode(), b"posassist web form", hashlib.sha256).hexdigest()


def form_token(request: web.Request) -> str:
    """The pre-session form token (cookie ``pa_form``), a new one if the browser has none."""
    value = request.cookies.get(FORM_COOKIE, "")
    return value if len(value) == 43 else secrets.token_urlsafe(32)


async def session_of(request: web.Request) -> Session | None:
    """The signed-in session from the cookie, or None (no cookie, unknown, revoked, expired,
    or the user was disabled)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 256:
        return None
    state = request.app[STATE]
    try:
        user = await state.storage.authenticate_token(token, now=state.now())
    except TokenError:
        return None
    return Session(user, token)


def _same_origin(request: web.Request) -> bool:
    """Whether the browser says the form came from this site: ``Origin`` (sent with every POST
    by current browsers) must be this host; ``Sec-Fetch-Site`` must not be cross-site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # an old browser; the token still has to match
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme == request.scheme


async def check_form(request: web.Request, sent: str | None, expected: str, who: str) -> None:
    """Refuse (403, audited) a POST whose CSRF token is missing or wrong, or that came from
    another origin; called before the form changes anything."""
    if sent and expected and hmac.compare_digest(sent, expected) and _same_origin(request):
        return
    state = request.app[STATE]
    await state.audit(
        who,
        "console.form",
        "relay",
        Outcome.REFUSED,
        {"reason": "csrf", "path": request.path[:200], "peer": request.remote},
    )
    raise CsrfError("CSRF token missing, wrong, or from another origin")


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path="/", httponly=True, secure=request.secure, samesite="Strict"
    )


def start_session(response: web.StreamResponse, request: web.Request, token: str) -> None:
    """Set the session cookie (``Secure`` when the relay speaks TLS) and drop the form cookie."""
    _cookie(response, request, SESSION_COOKIE, token)
    response.del_cookie(FORM_COOKIE, path="/")


def set_form_cookie(response: web.StreamResponse, request: web.Request, value: str) -> None:
    _cookie(response, request, FORM_COOKIE, value)


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


def language(request: web.Request) -> str:
    """``zh`` (the default: merchant-facing text is Chinese first) or ``en`` from the cookie."""
    lang = request.cookies.get(LANG_COOKIE, "zh")
    return lang if lang in LANGUAGES else "zh"


def set_language(response: web.StreamResponse, request: web.Request, lang: str) -> None:
    response.set_cookie(
        LANG_COOKIE, lang, path="/", secure=request.secure, samesite="Strict", max_age=365 * 86400
    )
