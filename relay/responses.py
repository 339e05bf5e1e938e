"""The relay's errors as HTTP answers, in one place: the error tree and aiohttp's own HTTP errors
(404, 405, 413…) become JSON with a fixed public sentence, never the request's input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from posassist.protocol import PosAssistError

from .errors import http_error_body
from .logs import log_context

__all__ = ["error_response", "errors_middleware", "http_error_response"]

log = logging.getLogger("posassist.relay")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: PosAssistError) -> web.Response:
    """``{"error": class name, "message": public reason, "message_zh": 中文}`` with the class's
    ``http_status``: fixed sentences, never the request's input; ``detail`` when the handler set
    ``public_detail`` on the error, also a fixed sentence of its own (which field, which rule)."""
    detail = getattr(exc, "public_detail", None)
    retry_after = getattr(exc, "retry_after", None)
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    body = {
        "error": type(exc).__name__,
        "message": exc.public_reason,
        "message_zh": exc.public_reason_zh,
    }
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=exc.http_status, headers=headers)


#: Headers of aiohttp's own error responses that are kept on the JSON one.
_KEPT_HEADERS = ("Allow", "Retry-After")


def http_error_response(status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    """The JSON answer for an HTTP error the relay did not raise itself (relay/errors.py
    ``HTTP_ERRORS``), keeping only the headers that say what to do (``Allow``)."""
    kept = {k: v for k, v in (headers or {}).items() if k in _KEPT_HEADERS}
    return web.json_response(http_error_body(status), status=status, headers=kept)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map our error tree, and aiohttp's own HTTP errors (404, 405, 413…), to JSON responses in
    one place (protocol/errors.py: ``http_status``); every record logged while handling the
    request carries its method, path and peer."""
    with log_context(method=request.method, path=request.path[:200], peer=str(request.remote)):
        try:
            return await handler(request)
        except PosAssistError as exc:
            if exc.http_status >= 500:
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect is not an error
                raise
            return http_error_response(exc.status, exc.headers)
        except ConnectionResetError:  # the body never came (trickled, then cut): one line (F10)
            log.info("request ended: the client's connection was lost before its body arrived")
            return web.Response(status=400)  # nobody is left to read it
