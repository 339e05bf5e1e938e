"""The web console over a real relay (aiohttp server, SQLite) and real HTTP: sign-in right,
wrong, backed off and disabled; the session cookie's flags (Secure over real TLS); CSRF missing,
wrong or from another origin refused with nothing changed; the security headers on every page;
a session replayed after sign-out or after the user's tokens were revoked."""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from posassist.relay.app import create_app
from posassist.relay.config import RelayConfig
from posassist.relay.passwords import hash_password
from posassist.relay.state import STATE
from posassist.relay.storage import Role, Scope
from posassist.relay.tls import server_ssl_context
from posassist.relay.web.sessions import CSP
from tests.relay.certs import make_certificate
from tests.relay.harness import PASSWORD, Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


class Browser:
    """A cookie-keeping HTTP client, as a browser is (SameSite does not matter to it)."""

    def __init__(self, base: str, http: ClientSession) -> None:
        self.base = base
        self.http = http

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str], **kw: Any) -> tuple[int, str, Any]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def sign_in(self, username: str, password: str = PASSWORD) -> tuple[int, str, Any]:
        _, page, _ = await self.get("/")
        match = _CSRF.search(page)
        assert match is not None
        return await self.post(
            "/signin", {"csrf": match.group(1), "username": username, "password": password}
        )

    def cookie(self, name: str) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None

    async def csrf(self, path: str = "/fleet") -> str:
        status, page, _ = await self.get(path)
        assert status == 200, page
        match = _CSRF.search(page)
        assert match is not None
        return match.group(1)


@pytest.fixture
async def browser(relay: Relay) -> AsyncIterator[Browser]:
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        yield Browser(relay.http, http)


async def _audit(relay: Relay) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (r.actor, r.action, str(r.outcome), dict(r.detail))
        async for r in relay.state.storage.records()
    ]


def _set_cookie(response: Any, name: str) -> str:
    for header in response.headers.getall("Set-Cookie", []):
        if header.startswith(name + "="):
            return str(header)
    raise AssertionError(f"no Set-Cookie for {name}")


# --- sign-in -------------------------------------------------------------------------------------


async def test_the_right_password_signs_in_with_a_strict_httponly_cookie(
    relay: Relay, browser: Browser
) -> None:
    await relay.enrol()
    status, page, response = await browser.get("/fleet")
    assert (status, response.headers["Location"]) == (303, "/")  # not signed in yet
    status, page, response = await browser.sign_in("admin")
    assert (status, response.headers["Location"]) == (303, "/fleet")
    cookie = _set_cookie(response, "pa_session")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is (test below)
    status, page, _ = await browser.get("/fleet")
    assert status == 200
    assert "Main St" in page
    assert "Noodle House" in page
    # the session is one of the API's tokens: it works as a bearer token too
    token = browser.cookie("pa_session")
    assert token is not None
    assert (await relay.get("/v1/devices", token))[0] == 200
    actions = await _audit(relay)
    assert ("user:admin", "user.login", "ok", {"peer": "127.0.0.1", "via": "web"}) in actions


async def test_a_wrong_password_shows_the_form_again_and_gives_no_session(
    relay: Relay, browser: Browser
) -> None:
    status, page, response = await browser.sign_in("admin", "wrong password!")
    assert status == 401
    assert "用户名或密码错误" in page  # Chinese first
    assert "pa_session" not in response.headers.get("Set-Cookie", "")
    assert browser.cookie("pa_session") is None
    assert (await browser.get("/fleet"))[0] == 303
    status, page, _ = await browser.sign_in("nobody", "wrong password!")
    assert status == 401
    refused = [a for a in await _audit(relay) if a[1] == "user.login" and a[2] == "refused"]
    assert [a[3]["reason"] for a in refused] == ["bad password", "unknown user"]


async def test_after_repeated_failures_even_the_right_password_is_refused(
    relay: Relay, browser: Browser
) -> None:
    for _ in range(relay.state.config.login_max_failures):
        assert (await browser.sign_in("tech", "wrong password!"))[0] == 401
    status, _page, _ = await browser.sign_in("tech")  # backed off: same answer as wrong
    assert status == 401
    assert browser.cookie("pa_session") is None
    refused = [a for a in await _audit(relay) if a[1] == "user.login" and a[2] == "refused"]
    assert refused[-1][3]["reason"] == "locked out"


async def test_a_disabled_user_can_not_sign_in_and_their_session_ends(
    relay: Relay, browser: Browser
) -> None:
    assert (await browser.sign_in("tech"))[0] == 303
    assert (await browser.get("/fleet"))[0] == 200
    tech = await relay.state.storage.get_user("tech")
    status, body = await relay.post(f"/v1/users/{tech.id}/disable", {}, relay.tokens["admin"])
    assert status == 200, body
    status, _, response = await browser.get("/fleet")
    assert (status, response.headers["Location"]) == (303, "/")  # the session went with it
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        fresh = Browser(relay.http, http)
        status, _page, _ = await fresh.sign_in("tech")
        assert status == 401
        assert fresh.cookie("pa_session") is None


# --- sign-out and replay -------------------------------------------------------------------------


async def test_sign_out_revokes_the_session_and_a_replayed_cookie_is_refused(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("tech")
    token = browser.cookie("pa_session")
    assert token is not None
    csrf = await browser.csrf()
    status, _, response = await browser.post("/signout", {"csrf": csrf})
    assert (status, response.headers["Location"]) == (303, "/")
    assert browser.cookie("pa_session") is None
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        http.cookie_jar.update_cookies({"pa_session": token})
        replay = Browser(relay.http, http)
        status, _, response = await replay.get("/fleet")
        assert (status, response.headers["Location"]) == (303, "/")
        status, _, response = await replay.get("/fleet/rows", headers={"HX-Request": "true"})
        assert (status, response.headers["HX-Redirect"]) == (401, "/")
    assert (await relay.get("/v1/devices", token))[0] == 401  # the token itself is revoked


async def test_revoking_a_users_tokens_ends_their_web_session(
    relay: Relay, browser: Browser
) -> None:
    await browser.sign_in("tech")
    tech = await relay.state.storage.get_user("tech")
    status, _ = await relay.post(f"/v1/users/{tech.id}/revoke-tokens", {}, relay.tokens["admin"])
    assert status == 200
    assert (await browser.get("/fleet"))[0] == 303


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),
        ("0" * 64, {}),
        ("right", {"Origin": "https://evil.example"}),
        ("right", {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["missing", "wrong", "other-origin", "cross-site"],
)
async def test_sign_out_without_the_right_csrf_token_is_refused_and_changes_nothing(
    relay: Relay, browser: Browser, csrf: str | None, headers: dict[str, str]
) -> None:
    await browser.sign_in("tech")
    right = await browser.csrf()
    form = {} if csrf is None else {"csrf": right if csrf == "right" else csrf}
    before = len(await _audit(relay))
    status, page, _ = await browser.post("/signout", form, headers=headers)
    assert status == 403
    assert "表单已失效" in page
    assert (await browser.get("/fleet"))[0] == 200  # still signed in: nothing changed
    after = (await _audit(relay))[before:]
    assert [(a[1], a[2], a[3]["reason"]) for a in after] == [("console.form", "refused", "csrf")]


async def test_a_sign_in_form_without_its_token_is_refused_before_the_password_is_checked(
    relay: Relay, browser: Browser
) -> None:
    await browser.get("/")  # the form cookie is set
    before = len(await _audit(relay))
    for form in (
        {"username": "admin", "password": PASSWORD},
        {"csrf": "x" * 43, "username": "admin", "password": PASSWORD},
    ):
        status, _page, _ = await browser.post("/signin", form)
        assert status == 403
        assert browser.cookie("pa_session") is None
    # a page on another site that posts the right fields has neither cookie nor token
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        for token in ("y" * 43, "-", ""):
            status, _, _ = await Browser(relay.http, http).post(
                "/signin", {"csrf": token, "username": "admin", "password": PASSWORD}
            )
            assert status == 403
    after = (await _audit(relay))[before:]
    assert [a[1] for a in after] == ["console.form"] * 5  # no user.login: never checked


async def test_the_audit_verify_form_needs_its_token(relay: Relay, browser: Browser) -> None:
    await browser.sign_in("admin")
    before = len(await _audit(relay))
    status, _, _ = await browser.post("/audit/verify", {"csrf": "nope"})
    assert status == 403
    assert [a[1] for a in (await _audit(relay))[before:]] == ["console.form"]
    csrf = await browser.csrf("/audit")
    status, _, response = await browser.post("/audit/verify", {"csrf": csrf})
    assert (status, response.headers["Location"]) == (303, "/audit?verified=ok")
    status, page, _ = await browser.get("/audit?verified=ok")
    assert "审计链完整" in page


# --- headers -------------------------------------------------------------------------------------

PAGES = [
    "/",
    "/fleet",
    "/fleet/rows",
    "/alerts",
    "/tickets",
    "/audit",
    "/devices/dev_0000000000000000",
    "/static/console.css",
    "/static/htmx.min.js",
    "/no-such-page",
    "/v1/devices",
]


async def test_every_page_carries_the_csp_and_may_not_be_framed(
    relay: Relay, browser: Browser
) -> None:
    for signed_in in (False, True):
        if signed_in:
            await browser.sign_in("admin")
        for path in PAGES:
            _, _, response = await browser.get(path)
            assert response.headers["Content-Security-Policy"] == CSP, path
            assert response.headers["X-Frame-Options"] == "DENY", path
            assert response.headers["X-Content-Type-Options"] == "nosniff", path
    assert "script-src 'self';" in CSP
    assert "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP


async def test_pages_hold_no_inline_script_or_style(relay: Relay, browser: Browser) -> None:
    await browser.sign_in("admin")
    for path in ("/", "/fleet", "/fleet/rows", "/alerts", "/tickets", "/audit"):
        _, page, _ = await browser.get(path)
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None, path
        assert "style=" not in page, path
        assert "<style" not in page, path
        assert re.search(r"\son[a-z]+=", page) is None, path


async def test_the_language_switch_keeps_to_this_site(relay: Relay, browser: Browser) -> None:
    await browser.sign_in("admin")
    status, _, response = await browser.get("/lang?to=en&next=/fleet")
    assert (status, response.headers["Location"]) == (303, "/fleet")
    _, page, _ = await browser.get("/fleet")
    assert "Fleet" in page
    assert '<html lang="en">' in page
    for bad in (
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",  # browsers drop the tab: //evil.example
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/ /evil.example",
    ):
        _, _, response = await browser.get("/lang", params={"to": "zh", "next": bad})
        assert response.headers["Location"] == "/"
    _, page, _ = await browser.get("/fleet")
    assert '<html lang="zh-CN">' in page


async def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    cert_file, key_file = make_certificate().write(tmp_path)
    config = RelayConfig.load(tmp_path / "relay")
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server(ssl=server_ssl_context(cert_file, key_file))
    try:
        state = server.app[STATE]
        await state.storage.create_user(
            "admin", hash_password(PASSWORD), Role.ADMIN, Scope.root(), now=state.now()
        )
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            browser = Browser(f"https://127.0.0.1:{server.port}", http)
            status, _, response = await browser.get("/", ssl=client)
            assert "Secure" in _set_cookie(response, "pa_form")
            _, page, _ = await browser.get("/", ssl=client)
            match = _CSRF.search(page)
            assert match is not None
            status, _, response = await browser.post(
                "/signin",
                {"csrf": match.group(1), "username": "admin", "password": PASSWORD},
                ssl=client,
            )
            assert status == 303
            cookie = _set_cookie(response, "pa_session")
            assert "Secure" in cookie
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
    finally:
        await server.close()
