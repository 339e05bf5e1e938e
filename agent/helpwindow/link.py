"""The local link between the agent service and the merchant's desktop session (docs/helpwindow.md).

Python 3.8, stdlib only. One JSON object per line; protocol messages travel in their wire form
(``Message.to_wire``), plus four link-only messages (``link.hello``, ``link.welcome``,
``link.diagnose``, ``link.summary``). Two transports, one framing:

- ``unix`` (Linux): a Unix socket in a private folder (0700, socket 0600), and the peer's uid from
  ``SO_PEERCRED`` must be one of the allowed desktop users (default: the agent's own uid).
- ``tcp`` (Windows; testable on Linux): 127.0.0.1 only, on a port written next to a per-install
  secret file readable only by its owner; the first line must carry that secret.

Nothing on the LAN can connect: a Unix socket has no address, the TCP one listens on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import stat
import struct
import sys
import tempfile
from pathlib import Path
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    FrozenSet,
    Optional,
    Set,
    Tuple,
    Type,
    Union,
)

from posassist.client.files import private_dir, write_private
from posassist.protocol import (
    ConsentAnswer,
    ConsentRequest,
    ErrorReply,
    HelpRequested,
    Message,
    TicketList,
    TicketOpened,
    TicketQuery,
    TicketRate,
    TicketRated,
    TicketReplied,
    TicketReply,
    TicketUpdated,
)
from posassist.protocol.errors import LocalProtocolError

from ..errors import AgentError

__all__ = [
    "MAX_LINE",
    "LinkEndpoint",
    "LinkError",
    "LinkPeer",
    "LinkRefusedError",
    "LinkServer",
    "decode_line",
    "encode_line",
]

log = logging.getLogger("posassist.agent")

#: The longest line either side reads; a longer one is refused and the link closed.
MAX_LINE = 64 * 1024
#: Seconds a new peer has to say hello.
HELLO_TIMEOUT = 5.0
#: Messages queued for one window before it is dropped as too slow.
MAX_QUEUED = 64
#: The longest Unix socket path used as it is (sun_path holds 108 bytes with its NUL).
MAX_SOCKET_PATH = 100
#: Messages of one window handled at once (a help request waits on the relay).
MAX_IN_FLIGHT = 8

#: What may travel on the link, by direction.
FROM_WINDOW: Dict[str, Type[Message]] = {
    cls.TAG: cls for cls in (HelpRequested, TicketQuery, TicketRate, TicketReply, ConsentAnswer)
}
TO_WINDOW: Dict[str, Type[Message]] = {
    cls.TAG: cls
    for cls in (
        TicketOpened,
        TicketList,
        TicketRated,
        TicketReplied,
        TicketUpdated,
        ConsentRequest,
        ErrorReply,
    )
}
#: Link-only messages: tag -> {field: type}; every field required, nothing else allowed.
LINK_ONLY: Dict[str, Dict[str, Union[type, Tuple[type, ...]]]] = {
    "link.hello": {"secret": str},
    "link.welcome": {
        "device_id": str,
        "timezone": str,
        "user": str,
        "relay_connected": bool,
        # how many messages the agent sends right behind this one (the open tickets, a consent
        # question still open): a window reads them before it first draws; 0 on a status update
        "follows": int,
    },
    "link.diagnose": {"id": int},
    "link.summary": {"id": int, "findings": list, "error": str},
    # the agent took consent question ``id`` off the table before this window answered it: the
    # run was cancelled or timed out (``withdrawn``), or another window answered (``answered``)
    "link.consent_closed": {"id": int, "reason": str},
}

#: A message on the link: a protocol message, or a link-only map.
LinkMessage = Union[Message, Dict[str, Any]]


class LinkError(AgentError):
    """The local link broke its rules (a line too long, not JSON, a message it may not carry),
    or the agent is not there to talk to."""

    public_reason = "local link error"
    public_reason_zh = "与收银助手服务的本地连接出错"


class LinkRefusedError(LinkError):
    """The agent refused this process: not the desktop user, or not holding the link's secret."""

    exit_code = 3
    public_reason = "refused by the agent: not the desktop user"
    public_reason_zh = "收银助手拒绝了连接: 不是收银台的桌面用户"


def _tuples(value: Any) -> Any:
    # msgpack decodes arrays as tuples (codec use_list=False); JSON gives lists: same shape here
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def encode_line(msg: LinkMessage) -> bytes:
    """One line for the link: the message's wire map as compact JSON, then ``\\n``."""
    wire = msg.to_wire() if isinstance(msg, Message) else msg
    line = json.dumps(wire, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = line.encode("utf-8") + b"\n"
    if len(data) > MAX_LINE:
        raise LocalProtocolError(f"{wire.get('t')}: a link line over {MAX_LINE} bytes")
    return data


#: The link-only messages a window may send once it is welcomed (``link.hello`` opens the
#: link; ``link.welcome``, ``link.summary`` and ``link.consent_closed`` are the agent's).
WINDOW_LINK_ONLY = frozenset({"link.diagnose"})


def decode_line(line: bytes, allowed: Dict[str, Type[Message]]) -> LinkMessage:
    """The message in one line; LinkError if it is not one the link carries this way."""
    if len(line) > MAX_LINE:
        raise LinkError(f"a line over {MAX_LINE} bytes")
    try:
        wire = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LinkError(f"not a JSON line: {exc}") from None
    if not isinstance(wire, dict) or not isinstance(wire.get("t"), str):
        raise LinkError("a line must be a JSON object with a string 't'")
    tag = wire["t"]
    fields = LINK_ONLY.get(tag)
    if fields is not None:
        if set(wire) != {"t", *fields} or not all(
            isinstance(wire[k], kind) and not (kind is int and isinstance(wire[k], bool))
            for k, kind in fields.items()
        ):
            raise LinkError(f"{tag}: wrong fields")
        return dict(wire)
    cls = allowed.get(tag)
    if cls is None:
        raise LinkError(f"{tag[:40]!r} does not travel this way on the link")
    try:
        return cls.from_wire(_tuples(wire))
    except LocalProtocolError as exc:
        raise LinkError(str(exc)) from None


class LinkEndpoint:
    """Where the link is: a Unix socket path, or a loopback port and secret file, under
    ``<data>/link/``. The agent writes it; the window reads it."""

    def __init__(self, folder: Path, transport: str) -> None:
        if transport not in ("unix", "tcp"):
            raise LinkError(f"link transport must be unix or tcp, not {transport!r}")
        self.folder = folder
        self.transport = transport

    @classmethod
    def default(cls, data_dir: Path, transport: Optional[str] = None) -> LinkEndpoint:
        if transport is None:
            transport = "unix" if hasattr(socket, "AF_UNIX") and sys.platform != "win32" else "tcp"
        return cls(data_dir / "link", transport)

    @classmethod
    def find(cls, data_dir: Path) -> LinkEndpoint:
        """The endpoint the running agent wrote (the window's side)."""
        folder = data_dir / "link"
        unix = cls(folder, "unix")
        if unix.socket_path.exists() or unix.socket_path.is_symlink():
            if not unix.in_folder:
                unix.check_stand_in(unix.socket_path)
            return unix
        if (folder / "port").exists():
            return cls(folder, "tcp")
        raise LinkError(f"no agent link in {folder}: is the agent running? / 收银助手服务没有运行")

    @property
    def in_folder(self) -> bool:
        """Whether the socket fits in ``<data>/link/`` (a Unix socket address is ~100 bytes)."""
        return len(os.fsencode(str(self.folder / "agent.sock"))) <= MAX_SOCKET_PATH

    @property
    def record_file(self) -> Path:
        """Where the agent writes the path of a socket that does not fit in its folder."""
        return self.folder / "socket-path"

    @property
    def socket_path(self) -> Path:
        """``<data>/link/agent.sock``; where that is too long for a Unix socket address, the
        short stand-in the agent chose and recorded in ``socket-path`` (its first choice, a
        private ``posassist-<uid>`` folder of the system's temporary folder, before it records
        one). The window reads the record: it never guesses the agent's uid."""
        if self.in_folder:
            return self.folder / "agent.sock"
        try:
            recorded = self.record_file.read_text(encoding="utf-8").strip()
        except OSError:
            recorded = ""
        return Path(recorded) if recorded else self.stand_in()

    def stand_in(self, folder: Optional[Path] = None) -> Path:
        """A short socket path named by the link folder's hash, in ``folder`` (by default the
        private ``posassist-<uid>`` folder of the system's temporary folder)."""
        digest = hashlib.sha256(os.fsencode(str(self.folder.resolve()))).hexdigest()[:20]
        uid = os.getuid() if hasattr(os, "getuid") else 0
        return Path(folder or Path(tempfile.gettempdir(), f"posassist-{uid}"), f"{digest}.sock")

    def check_stand_in(self, path: Path) -> None:
        """The window's check of a recorded socket path before it connects: its folder must be
        a real folder of the agent's (the owner of ``<data>/link``) that nobody else may write,
        or another local user could have put a fake agent there."""
        try:
            owner = os.stat(str(self.folder)).st_uid
            info = os.lstat(str(path.parent))
        except OSError as exc:
            raise LinkError(f"no agent link at {path}: {exc.strerror or exc}") from None
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != owner
            or stat.S_IMODE(info.st_mode) & 0o022
        ):
            raise LinkRefusedError(
                f"{path.parent} is not the agent's own folder: link refused / 本地连接被拒绝"
            )

    @property
    def port_file(self) -> Path:
        return self.folder / "port"

    @property
    def secret_file(self) -> Path:
        return self.folder / "secret"


def _own_private_dir(folder: Path) -> Path:
    """``folder`` (made 0700 if missing), refused unless it is a real folder of ours that
    nobody else may enter: in the shared temporary folder anyone could have made it first."""
    private_dir(folder)
    info = os.lstat(str(folder))
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise LinkError(f"{folder} is not a private folder of this user: link not started")
    return folder


def peer_uid(sock: socket.socket) -> Optional[int]:
    """The uid of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``), or None
    where the OS does not say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


class LinkPeer:
    """One connected window. Writes go through a bounded queue: a window that stops reading is
    dropped, it never holds up the agent."""

    def __init__(self, writer: asyncio.StreamWriter, user: str) -> None:
        self.writer = writer
        self.user = user
        self.queue: asyncio.Queue[Optional[bytes]] = asyncio.Queue(MAX_QUEUED)
        self.closed = False

    def send_nowait(self, msg: LinkMessage) -> None:
        """Queue ``msg``; a peer whose queue is full is closed (too slow), never waited for."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(encode_line(msg))
        except asyncio.QueueFull:
            log.warning("help window of %s too slow: dropped", self.user)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.queue.put_nowait(None)
            except asyncio.QueueFull:
                self.writer.close()

    async def write_loop(self) -> None:
        try:
            while True:
                data = await self.queue.get()
                if data is None:
                    break
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.writer.close()


#: What the service does with a peer: welcome (the link.welcome map) and each message.
Welcome = Callable[[LinkPeer], Dict[str, Any]]
Handle = Callable[[LinkPeer, LinkMessage], Awaitable[None]]


class LinkServer:
    """The agent's end of the link: accepts windows of the allowed users, hands each message to
    ``handle``, and lets the service push to every window (:meth:`broadcast`)."""

    def __init__(
        self,
        endpoint: LinkEndpoint,
        welcome: Welcome,
        handle: Handle,
        *,
        allowed_uids: Optional[FrozenSet[int]] = None,
    ) -> None:
        self.endpoint = endpoint
        self.welcome = welcome
        self.handle = handle
        own = os.getuid() if hasattr(os, "getuid") else -1
        self.allowed_uids = allowed_uids if allowed_uids is not None else frozenset({own})
        self.peers: Set[LinkPeer] = set()
        self._server: Optional[asyncio.base_events.Server] = None
        self._secret = b""
        self._tasks: Set[asyncio.Future[None]] = set()
        #: A fresh private folder made for the socket (the usual one was someone else's).
        self._made: Optional[Path] = None

    @property
    def connected(self) -> bool:
        return any(not p.closed for p in self.peers)

    async def start(self) -> None:
        folder = private_dir(self.endpoint.folder)
        if self.endpoint.transport == "unix":
            path = self.endpoint.socket_path
            if not self.endpoint.in_folder:  # a short stand-in, in a folder ours alone
                path = self.endpoint.stand_in()
                try:
                    folder = _own_private_dir(path.parent)
                except (LinkError, OSError):  # taken first by someone else: a fresh one
                    folder = self._made = Path(tempfile.mkdtemp(prefix="posassist-"))
                    path = self.endpoint.stand_in(folder)
                    log.warning("help window link: %s is not ours; using %s", path, folder)
                write_private(self.endpoint.record_file, str(path))
                os.chmod(str(self.endpoint.record_file), 0o644)  # a desktop user's window reads it
            if path.exists() or path.is_symlink():
                path.unlink()  # a socket left by an agent that was killed
            old = os.umask(0o177)  # the socket is 0600 from its first moment
            try:
                self._server = await asyncio.start_unix_server(
                    self._accept, path=str(path), limit=MAX_LINE + 1
                )
            finally:
                os.umask(old)
            if self.allowed_uids - {os.getuid()}:
                # Another user's window must reach the socket: the folder becomes 0711 (enter,
                # not list) and the socket 0666; the kernel's peer credentials are then the
                # gate, checked before a byte is read (docs/helpwindow.md#the-local-link).
                os.chmod(str(folder), 0o711)
                os.chmod(str(path), 0o666)
            else:
                os.chmod(str(folder), 0o700)
        else:
            self._secret = secrets.token_hex(32).encode("ascii")
            write_private(self.endpoint.secret_file, self._secret)
            self._server = await asyncio.start_server(
                self._accept, host="127.0.0.1", port=0, limit=MAX_LINE + 1
            )
            port = self._server.sockets[0].getsockname()[1]
            write_private(self.endpoint.port_file, str(port))
        log.info("help window link listening (%s) in %s", self.endpoint.transport, folder)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for peer in list(self.peers):
            peer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for path in (self.endpoint.socket_path, self.endpoint.port_file, self.endpoint.record_file):
            if path.exists():
                path.unlink()
        if self._made is not None:
            with contextlib.suppress(OSError):
                self._made.rmdir()

    def broadcast(self, msg: LinkMessage) -> int:
        """Push ``msg`` to every window; how many got it."""
        sent = 0
        for peer in list(self.peers):
            if not peer.closed:
                peer.send_nowait(msg)
                sent += 1
        return sent

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _who(self, writer: asyncio.StreamWriter) -> Optional[str]:
        """The desktop user at the other end, or None if it is not allowed in."""
        if self.endpoint.transport == "tcp":
            return "desktop"  # proven by the secret in its hello
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is None or uid not in self.allowed_uids:
            log.warning("help window link: refused a process of uid %s (not a desktop user)", uid)
            return None
        return user_name(uid)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        user = self._who(writer)
        if user is None:
            writer.write(encode_line(_refusal("not_desktop_user")))
            writer.close()
            return
        try:
            hello = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            msg = decode_line(hello, {})
        except (asyncio.TimeoutError, LinkError, ValueError, ConnectionError):
            writer.close()
            return
        if not isinstance(msg, dict) or msg["t"] != "link.hello":
            writer.close()
            return
        if self.endpoint.transport == "tcp" and not hmac.compare_digest(
            msg["secret"].encode("utf-8", "replace"), self._secret
        ):
            log.warning("help window link: refused a connection without the link secret")
            writer.write(encode_line(_refusal("bad_secret")))
            writer.close()
            return
        peer = LinkPeer(writer, user)
        writing = asyncio.ensure_future(peer.write_loop())
        self.peers.add(peer)
        try:
            peer.send_nowait(self.welcome(peer))
            await self._read_loop(reader, peer)
        finally:
            self.peers.discard(peer)
            peer.close()
            await asyncio.gather(writing, return_exceptions=True)

    async def _read_loop(self, reader: asyncio.StreamReader, peer: LinkPeer) -> None:
        """Each message is handled in a task of its own: a help request waiting on the relay
        never holds up the consent answer the merchant clicks meanwhile. At most
        MAX_IN_FLIGHT per window; past that the window is told ``busy``."""
        handling: Set[asyncio.Future[None]] = set()
        try:
            while not peer.closed:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):  # a line over the limit
                    peer.send_nowait(_error(0, "bad_request", f"a line over {MAX_LINE} bytes"))
                    return
                except (ConnectionError, OSError):
                    return
                if not line:
                    return
                try:
                    msg = decode_line(line, FROM_WINDOW)
                    if isinstance(msg, dict) and msg["t"] not in WINDOW_LINK_ONLY:
                        raise LinkError(f"{msg['t']} does not travel this way on the link")
                except LinkError as exc:
                    peer.send_nowait(_error(_request_id(line), "bad_request", str(exc)[:1000]))
                    continue
                if len(handling) >= MAX_IN_FLIGHT:
                    peer.send_nowait(_error(_id_of(msg), "busy", "too many requests at once"))
                    continue
                task = asyncio.ensure_future(self._handle_one(peer, msg))
                handling.add(task)
                task.add_done_callback(handling.discard)
        finally:
            for pending in list(handling):
                pending.cancel()
            await asyncio.gather(*handling, return_exceptions=True)

    async def _handle_one(self, peer: LinkPeer, msg: LinkMessage) -> None:
        try:
            await self.handle(peer, msg)
        except Exception:  # a bug in the service must not end the agent
            log.exception("help window link: handling %s failed", _tag(msg))
            peer.send_nowait(_error(_id_of(msg), "agent_error", "the agent failed"))


def _refusal(code: str) -> Dict[str, Any]:
    return ErrorReply(
        id=1, code=code, message="refused: not the desktop user / 不是收银台的桌面用户"
    ).to_wire()


def _error(request_id: int, code: str, message: str) -> ErrorReply:
    return ErrorReply(id=max(1, request_id), code=code, message=message)


def _tag(msg: LinkMessage) -> str:
    return str(msg["t"]) if isinstance(msg, dict) else msg.TAG


def _id_of(msg: LinkMessage) -> int:
    value = msg.get("id") if isinstance(msg, dict) else getattr(msg, "id", 1)
    return value if isinstance(value, int) and value > 0 else 1


def _request_id(line: bytes) -> int:
    """The id of a refused line, if it has one, so the window can match the error."""
    try:
        value = json.loads(line.decode("utf-8")).get("id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return 1
    return value if type(value) is int and 0 < value < 2**63 else 1
