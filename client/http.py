"""The one way agent and console talk HTTP(S) to a relay: one pin rule, one URL rule, one error map.

Python 3.8-compatible. The agent uses the standard-library functions (:func:`request`,
:func:`stream`); the console uses :func:`fetch`, on aiohttp, imported only when it is called so a
till never loads aiohttp. Both follow the same rules:

- **Pin**: on ``https`` with a pin, the relay is trusted by its TLS key's SPKI pin alone
  (client/tlspin.py), checked on the connection after the handshake and *before a single byte of
  the request* (a password, a token, an enrolment secret) is written; without a pin, by the
  system's CA store. Plain ``http`` carries no pin.
- **URL**: ``ws://`` is ``http://`` and ``wss://`` is ``https://`` (:func:`http_url`); a query
  string is sent as given.
- **Limits**: every exchange has a timeout and a cap on the answer's size.
- **Errors** (drawn here; each class carries its close code, HTTP status and exit code)::

      PosAssistError
      ├── PinMismatch              (protocol/pins.py) the relay's key is not pinned   exit 3
      └── HttpError                an HTTP exchange with the relay failed             exit 1
          ├── InvalidRelayUrl      not an http(s):// or ws(s):// URL                  exit 2
          ├── RelayUnreachable     no connection, timeout, TLS or HTTP framing error  exit 1
          │   └── CertificateUntrusted  the system CA store does not vouch for it     exit 3
          ├── ResponseTooLarge     the answer is over the caller's cap                exit 1
          └── HttpStatusError      the relay answered with a status other than 2xx    exit 1
              └── HttpRefusedError      401 or 403: not signed in or not permitted    exit 3
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import ssl
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Type
from urllib.parse import SplitResult, urlsplit

from posassist.protocol.errors import EXIT_REFUSED, EXIT_USAGE, PosAssistError
from posassist.protocol.pins import PinMismatch

from .tlspin import check_pin, client_ssl_context_for_pin, validate_pin

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER",
    "CertificateUntrusted",
    "HttpError",
    "HttpRefusedError",
    "HttpStatusError",
    "InvalidRelayUrl",
    "PinMismatch",
    "RelayUnreachable",
    "Response",
    "ResponseTooLarge",
    "StreamedResponse",
    "aiohttp_pin",
    "fetch",
    "http_url",
    "request",
    "ssl_for",
    "stream",
    "ws_url",
]

#: Seconds for connecting, and for each read, unless the caller says otherwise.
DEFAULT_TIMEOUT = 15.0
#: The most bytes an answer may have unless the caller says otherwise (JSON API answers).
MAX_ANSWER = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class HttpError(PosAssistError):
    """An HTTP exchange with the relay failed."""

    public_reason = "HTTP request to the relay failed"
    public_reason_zh = "与服务器的请求失败"


class InvalidRelayUrl(HttpError):
    """The relay's address is not an http(s):// or ws(s):// URL."""

    exit_code = EXIT_USAGE
    public_reason = "relay must be an http(s):// or ws(s):// URL"
    public_reason_zh = "服务器地址应为 http(s):// 或 ws(s)://"


class RelayUnreachable(HttpError):
    """No answer: refused, reset or timed-out connection, a failed TLS handshake, bad framing."""

    public_reason = "relay unreachable"
    public_reason_zh = "服务器无法连接"


class CertificateUntrusted(RelayUnreachable):
    """No pin was given and the system's CA store does not vouch for the relay's certificate."""

    exit_code = EXIT_REFUSED
    public_reason = "relay certificate not trusted (give its --tls-pin or --tls-cert)"
    public_reason_zh = "服务器证书不受信任, 请提供其 TLS 密钥指纹"


class ResponseTooLarge(HttpError):
    """The relay's answer is larger than the caller accepts; it was not read to the end."""

    public_reason = "answer from the relay too large"
    public_reason_zh = "服务器的回应过大"


class HttpStatusError(HttpError):
    """The relay answered with a status other than 2xx.

    Attributes:
        status: the HTTP status.
        error: the relay's error class name (``{"error": …}``), or ``""``.
        message: the relay's fixed public sentence (``{"message": …}``), or ``""``.
        message_zh: the same in Chinese (``{"message_zh": …}``), or ``""``; shown by
            ``error_line`` after the class's own Chinese words.
    """

    public_reason = "the relay refused the request"
    public_reason_zh = "服务器拒绝了请求"

    def __init__(
        self, status: int, error: str = "", message: str = "", message_zh: str = ""
    ) -> None:
        super().__init__(f"HTTP {status}" + (f" {error}" if error else "") + f": {message}")
        self.status = status
        self.error = error
        self.message = message
        self.message_zh = message_zh
        #: What :func:`protocol.errors.error_line` adds in Chinese: the relay's sentence, unless
        #: a caller knows better words (console/cancel.py sets its own).
        self.detail_zh = message_zh


class HttpRefusedError(HttpStatusError):
    """401 or 403: the caller is not signed in, or may not do this."""

    exit_code = EXIT_REFUSED


#: Websocket endpoints a relay URL may name; its HTTP base is what comes before them.
_ENDPOINTS = ("/v1/agent", "/v1/console")


def http_url(relay: str) -> str:
    """The relay's HTTP base URL: ``ws(s)://`` becomes ``http(s)://``, without a websocket
    endpoint (``/v1/agent``, ``/v1/console``) or a trailing slash; InvalidRelayUrl otherwise."""
    if relay.startswith("ws://"):
        relay = "http://" + relay[len("ws://") :]
    elif relay.startswith("wss://"):
        relay = "https://" + relay[len("wss://") :]
    parts, _, _ = _split(relay)
    if parts.query or parts.fragment:
        raise InvalidRelayUrl(relay[:200])
    base = relay.rstrip("/")
    for endpoint in _ENDPOINTS:
        if base.endswith(endpoint):
            base = base[: -len(endpoint)]
    return base


def ws_url(relay: str) -> str:
    """The relay's websocket base URL: :func:`http_url`'s with ``ws(s)://`` for ``http(s)://``
    (what a console session keeps, whichever form was typed); InvalidRelayUrl as there."""
    base = http_url(relay)
    return "ws" + base[len("http") :]  # http_url gives only http:// or https://


def _split(url: str) -> Tuple[SplitResult, str, int]:
    """``url``'s parts, host and port (the scheme's default if none); InvalidRelayUrl if it is
    not an http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        raise InvalidRelayUrl(url[:200]) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRelayUrl(url[:200])
    return parts, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _target(parts: SplitResult) -> str:
    """The request target: the path and, when there is one, the query string, as given."""
    return (parts.path or "/") + ("?" + parts.query if parts.query else "")


class Response:
    """A whole answer: ``status``, ``headers`` (lower-case names) and ``body``."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self.body = body

    def json(self) -> Any:
        """The body as JSON; RelayUnreachable (a bad answer) if it is not."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise RelayUnreachable(f"HTTP {self.status}: the answer is not JSON") from None

    def raise_for_status(self) -> Response:
        """``self`` if 2xx; otherwise HttpStatusError (HttpRefusedError for 401/403)."""
        if 200 <= self.status < 300:
            return self
        error = message = message_zh = ""
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            detail = json.loads(self.body.decode("utf-8"))
            if isinstance(detail, dict):
                error = str(detail.get("error", ""))[:80]
                message = str(detail.get("message", ""))[:200]
                message_zh = str(detail.get("message_zh", ""))[:200]
                said = detail.get("detail")  # which field, which rule, which role is needed
                if isinstance(said, str) and said:
                    message = f"{message}: {said[:200]}" if message else said[:200]
        cls: Type[HttpStatusError] = (
            HttpRefusedError if self.status in (401, 403) else HttpStatusError
        )
        raise cls(self.status, error, message, message_zh)


def _too_large(length: Optional[str], max_bytes: int) -> bool:
    try:
        return length is not None and int(length) > max_bytes
    except ValueError:
        return False


class StreamedResponse:
    """An answer being read: ``status``, ``headers``, and :meth:`iter_bytes` within the cap."""

    def __init__(self, response: http.client.HTTPResponse, max_bytes: int, where: str) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self._response = response
        self._max_bytes = max_bytes
        self._where = where
        if _too_large(self.headers.get("content-length"), max_bytes):
            raise ResponseTooLarge(f"{where}: {self.headers['content-length']} > {max_bytes}")

    def iter_bytes(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The body in chunks; ResponseTooLarge as soon as it passes the cap."""
        seen = 0
        while True:
            try:
                chunk = self._response.read(chunk_size)
            except (OSError, http.client.HTTPException) as exc:
                raise RelayUnreachable(f"{self._where}: {type(exc).__name__}: {exc}") from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > self._max_bytes:
                raise ResponseTooLarge(f"{self._where}: more than {self._max_bytes} bytes")
            yield chunk

    def read(self) -> Response:
        """The whole body (within the cap)."""
        return Response(self.status, self.headers, b"".join(self.iter_bytes()))


@contextlib.contextmanager
def stream(
    method: str,
    url: str,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    pin: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_ANSWER,
) -> Iterator[StreamedResponse]:
    """One exchange whose answer is read in chunks (standard library only; blocking).

    Raises:
        PinMismatch: the relay's key is not ``pin``; nothing was sent.
        RelayUnreachable: no connection, a timeout, a TLS or HTTP framing failure.
        ResponseTooLarge: the answer is over ``max_bytes``.
        InvalidRelayUrl: ``url`` is not http(s).
    """
    parts, host, port = _split(url)
    where = f"{host}:{port}"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = client_ssl_context_for_pin(pin) if pin else ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
            if parts.scheme == "https" and pin:
                check_pin(conn.sock, pin)  # before the request: not our relay, not our bytes
            conn.request(method, _target(parts), body=body, headers=dict(headers or {}))
            response = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            raise CertificateUntrusted(f"{where}: {exc.verify_message}") from None
        except (OSError, http.client.HTTPException) as exc:  # socket.timeout is an OSError
            raise RelayUnreachable(f"{where}: {type(exc).__name__}: {exc}") from None
        yield StreamedResponse(response, max_bytes, where)
    finally:
        conn.close()


def request(
    method: str,
    url: str,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    pin: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_ANSWER,
) -> Response:
    """One whole exchange (standard library only; blocking); errors as :func:`stream`."""
    with stream(
        method, url, body=body, headers=headers, pin=pin, timeout=timeout, max_bytes=max_bytes
    ) as answer:
        return answer.read()


# --- the console's async client (aiohttp, imported only here) -------------------------------


@functools.lru_cache(maxsize=None)
def _spki_pin_class() -> Callable[[str], aiohttp.Fingerprint]:
    import aiohttp

    class SpkiPin(aiohttp.Fingerprint):
        """An aiohttp ``ssl=`` value that accepts the server whose key has this SPKI pin.

        aiohttp calls ``check`` right after the TLS handshake and before writing the request
        (``TCPConnector._create_direct_connection``), and on a mismatch closes the connection.
        It must raise ``ServerFingerprintMismatch`` for that; :func:`fetch` turns it back into
        :class:`PinMismatch`.
        """

        def __init__(self, pin: str) -> None:
            super().__init__(bytes.fromhex(validate_pin(pin)))
            self.pin = pin

        def check(self, transport: Any) -> None:
            ssl_object = transport.get_extra_info("ssl_object")
            try:
                check_pin(ssl_object, self.pin)
            except PinMismatch as exc:
                peer = transport.get_extra_info("peername") or ("?", 0)
                got = bytes.fromhex(exc.got) if len(exc.got) == 64 else b""
                raise aiohttp.ServerFingerprintMismatch(
                    self.fingerprint, got, peer[0], peer[1]
                ) from exc

    return SpkiPin


def ssl_for(ca_file: Optional[str]) -> Optional[ssl.SSLContext]:
    """A client context trusting only the CA certificates in ``ca_file`` (PEM; a self-signed
    relay's own certificate will do), or None for the system's store. OSError or ssl.SSLError
    (a ValueError-like refusal) if the file can't be read as certificates."""
    if not ca_file:
        return None
    return ssl.create_default_context(cafile=ca_file)


def aiohttp_pin(pin: str) -> aiohttp.Fingerprint:
    """``ssl=aiohttp_pin(pin)``: an aiohttp request that trusts exactly the relay with ``pin``."""
    return _spki_pin_class()(pin)


async def fetch(
    method: str,
    url: str,
    *,
    json_body: Optional[Dict[str, Any]] = None,
    token: Optional[str] = None,
    pin: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_ANSWER,
    local_addr: Optional[Tuple[str, int]] = None,
    ca_file: Optional[str] = None,
) -> Response:
    """One exchange on aiohttp (the console's client), by the same rules as :func:`request`.

    ``local_addr`` binds our end of the connection (the fleet simulator's stores). ``ca_file``
    (PEM) replaces the system's CA store on ``https`` when no pin is given (:func:`ssl_for`).

    Raises:
        PinMismatch: the relay's key is not ``pin``; no byte of the request was sent.
        CertificateUntrusted, RelayUnreachable, ResponseTooLarge, InvalidRelayUrl.
    """
    import asyncio

    import aiohttp
    from yarl import URL

    parts, host, port = _split(url)
    where = f"{host}:{port}"
    ssl_arg: Any = True
    if parts.scheme == "https":
        ssl_arg = aiohttp_pin(pin) if pin else ssl_for(ca_file) or True
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(local_addr=local_addr),
        ) as session, session.request(
            method,
            URL(url, encoded=True),  # as given: the query string goes out untouched
            json=json_body,
            headers=headers,
            ssl=ssl_arg,
            allow_redirects=False,
        ) as answer:
            length = answer.headers.get("Content-Length")
            if _too_large(length, max_bytes):
                raise ResponseTooLarge(f"{where}: {length} > {max_bytes}")
            chunks = []
            seen = 0
            async for chunk in answer.content.iter_chunked(_CHUNK):
                seen += len(chunk)
                if seen > max_bytes:
                    raise ResponseTooLarge(f"{where}: more than {max_bytes} bytes")
                chunks.append(chunk)
            got = {k.lower(): v for k, v in answer.headers.items()}
            return Response(answer.status, got, b"".join(chunks))
    except aiohttp.ServerFingerprintMismatch as exc:
        cause = exc.__cause__
        if isinstance(cause, PinMismatch):
            raise cause from None
        raise PinMismatch(f"{where}: key is not the pinned one", expected=pin or "") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CertificateUntrusted(f"{where}: {exc.certificate_error}") from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise RelayUnreachable(f"{where}: {type(exc).__name__}: {exc}") from None
