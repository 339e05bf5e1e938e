"""What a handler reads from a request: its JSON body and fields, the store in its path, and the
signed-in user (a bearer token, or the web console's session); a refused token is audited.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from posassist.protocol.messages import MAX_DISPLAY_NAME, name_problem

from ..audit import Outcome
from ..errors import BadName, BadRequest, TokenError, TokenUnknown
from ..state import STATE
from ..storage import User

__all__ = ["FORM_BODY", "SIGNED_IN", "current_user"]


#: Set by the web console (relay/web/admin.py) on a request it hands to an API handler: the
#: session's user (instead of a bearer token) and the form's fields as the JSON body, so a form
#: goes through the very checks, scope rules and audit records of its API route.
SIGNED_IN = web.RequestKey("posassist.signed_in", User)
FORM_BODY = web.RequestKey("posassist.form_body", dict[str, Any])


async def _json(request: web.Request) -> dict[str, Any]:
    form_body = request.get(FORM_BODY)
    if isinstance(form_body, dict):
        return form_body
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not JSON") from None
    except RecursionError:  # nested deeper than the parser's stack: refused, not a 500
        raise BadRequest("body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("body is not a JSON object")
    try:  # a lone surrogate (``"\ud800"``) is JSON but not text: it would fail deep in storage
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("body holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    return body


def _name(body: dict[str, Any], field: str) -> str:
    """An organisation, merchant or store name: refused if a terminal could not show it as is."""
    value: str = _field(body, field, str, max_len=4 * MAX_DISPLAY_NAME)  # name_problem: 256
    problem = name_problem(value)
    if problem is not None:
        raise BadName(f"field {field!r}: {problem}")
    return value


def _field(body: dict[str, Any], name: str, kind: type, *, max_len: int = 256) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadRequest(f"field {name!r} must be {kind.__name__}")
    if isinstance(value, str) and not 0 < len(value) <= max_len:
        raise BadRequest(f"field {name!r} must be 1..{max_len} characters")
    return value


async def current_user(request: web.Request) -> User:
    """The signed-in user from ``Authorization: Bearer …``; refusals are audited."""
    signed_in = request.get(SIGNED_IN)
    if isinstance(signed_in, User):  # the web console's session, already checked
        return signed_in
    state = request.app[STATE]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TokenUnknown("no bearer token")
        return await state.storage.authenticate_token(token.strip(), now=state.now())
    except TokenError as exc:
        await state.audit(
            f"ip:{request.remote}",
            "api.auth",
            "relay",
            Outcome.REFUSED,
            {"reason": exc.public_reason, "path": request.path[:200]},
        )
        raise


def _store_id(request: web.Request) -> str:
    store_id = request.match_info["store_id"]
    if not 0 < len(store_id) <= 40 or not store_id.isascii() or not store_id.isprintable():
        raise BadRequest("not a store id")
    return store_id
