"""msgpack codec for posassist frames: the tag registry and hard limits while decoding.

One websocket binary frame holds exactly one msgpack map (docs/protocol.md#framing).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Dict, Iterable, Optional, Tuple, Type

import msgpack

from .errors import (
    InvalidMessage,
    LocalProtocolError,
    MalformedMessage,
    PayloadTooBig,
    UnknownMessageType,
)
from .messages import MAX_ID, MESSAGE_TYPES, Message

if TYPE_CHECKING:
    import dataclasses

__all__ = ["DEFAULT_LIMITS", "Codec", "Limits"]

_unpackb = msgpack.unpackb
#: Bytes of a msgpack unsigned integer by its first byte (uint 8/16/32/64; below 0x80 it is one).
_UINT_SIZES = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}
_UINT = (
    (0x100, struct.Struct(">BB").pack, 0xCC),
    (0x10000, struct.Struct(">BH").pack, 0xCD),
    (0x100000000, struct.Struct(">BI").pack, 0xCE),
)
_UINT64 = struct.Struct(">BQ").pack


def _packed_uint(value: int) -> bytes:
    """``msgpack.packb(value)`` for an int 0 … 2**64-1: its shortest form, as msgpack writes it."""
    if value < 0x80:
        return bytes((value,))
    for below, pack, marker in _UINT:
        if value < below:
            return pack(marker, value)
    return _UINT64(0xCF, value)


#: Field annotations with no container in them: the frames of such messages may be passed on.
_SCALAR_TYPES = frozenset(
    {"int", "str", "bytes", "float", "bool"}
    | {f"Optional[{t}]" for t in ("int", "str", "bytes", "float", "bool")}
)


def _id_first_prefix(cls: Type[Message]) -> Optional[bytes]:
    """The bytes every frame of ``cls`` starts with when written as :meth:`Codec.encode` writes
    it, up to the value of its id: the map's header, ``"t"`` and the tag, ``"id"``. None for a
    message whose id is not its first field or whose number of fields varies (later fields),
    and for one with a map or a list in it: a nested map may repeat a key, and the decoder keeps
    the last value, so the frame would carry on a first one nobody checked (outside attack 16)."""
    if not cls.FIELDS or cls.FIELDS[0] != "id" or cls.LATER_FIELDS:
        return None
    fields: Dict[str, dataclasses.Field[object]] = getattr(cls, "__dataclass_fields__", {})
    if any(str(f.type) not in _SCALAR_TYPES for f in fields.values()):
        return None
    header: bytes = msgpack.Packer().pack_map_header(len(cls.WIRE_KEYS))
    return header + b"".join(msgpack.packb(part) for part in ("t", cls.TAG, "id"))


class Limits:
    """Decoding limits (docs/protocol.md#limits). Every one is enforced before data is built."""

    __slots__ = ("max_array_len", "max_bin_len", "max_frame", "max_map_len", "max_str_len")

    def __init__(
        self,
        *,
        max_frame: int = 1024 * 1024,
        max_str_len: int = 256 * 1024,
        max_bin_len: int = 256 * 1024,
        max_array_len: int = 10_000,
        max_map_len: int = 10_000,
    ) -> None:
        self.max_frame = max_frame
        self.max_str_len = max_str_len
        self.max_bin_len = max_bin_len
        self.max_array_len = max_array_len
        self.max_map_len = max_map_len


DEFAULT_LIMITS = Limits()


class Codec:
    """Turns messages into frames and frames into messages, with a tag → class registry."""

    def __init__(
        self,
        types: Iterable[Type[Message]] = MESSAGE_TYPES,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self._registry: Dict[str, Type[Message]] = {}
        #: message type → :func:`_id_first_prefix` of it, for the types that have one
        self._prefixes: Dict[Type[Message], bytes] = {}
        # The message last decoded whose frame may be re-used under another id, and that frame
        # (see encode_with_id). A tuple, read and written whole.
        self._last: Tuple[Optional[Message], bytes] = (None, b"")
        for cls in types:
            self.register(cls)
        self._max_lengths = (
            limits.max_str_len,
            limits.max_bin_len,
            limits.max_array_len,
            limits.max_map_len,
        )

    def register(self, cls: Type[Message]) -> None:
        """Add a message type; a tag may be registered once."""
        if not cls.TAG or cls.TAG in self._registry:
            raise ValueError(f"tag {cls.TAG!r} is empty or already registered")
        self._registry[cls.TAG] = cls
        prefix = _id_first_prefix(cls)
        if prefix is not None:
            self._prefixes[cls] = prefix

    def lookup(self, tag: str) -> Optional[Type[Message]]:
        """The class registered for ``tag``, if any."""
        return self._registry.get(tag)

    def encode(self, msg: Message) -> bytes:
        """One frame for ``msg``. Raises LocalProtocolError if it would exceed the frame limit."""
        return self._pack(msg, msg.to_wire())

    def encode_with_id(self, msg: Message, request_id: int) -> bytes:
        """The frame ``encode(msg.with_id(request_id))`` would give, without building the copy.

        What a relay does for every request and reply it forwards. LocalProtocolError for a
        message without an id, a bad id or a frame too big, as ``with_id`` and ``encode`` raise.
        """
        if "id" not in msg.FIELDS or type(request_id) is not int or not 1 <= request_id <= MAX_ID:
            raise LocalProtocolError(f"{type(msg).__name__}: cannot take request id {request_id!r}")
        last, frame = self._last
        if last is msg:  # forwarded as it was just decoded: its frame under the new id
            spliced = self._with_id(msg, frame, request_id)
            if spliced is not None:
                return spliced
        wire = msg.to_wire()
        wire["id"] = request_id  # same key, same place in the map: the frame differs only here
        return self._pack(msg, wire)

    def _with_id(self, msg: Message, frame: bytes, request_id: int) -> Optional[bytes]:
        """``frame``, which this codec just decoded into ``msg``, with its id replaced by
        ``request_id``: a relay forwards every reply under its console's request id, and only
        the id changes (docs/protocol.md#requests). None unless the frame starts as
        :meth:`encode` writes it (map header, tag, then the id as an unsigned integer).

        The rest is passed on as it came: it decoded into ``msg``, which was checked whole, and
        any peer decodes those same bytes into the same values (a map of exactly the message's
        fields, no extension types, nothing after it); a frame written by :meth:`encode` comes
        out byte for byte as ``encode_with_id`` would write it.
        """
        prefix = self._prefixes[type(msg)]  # decode keeps only messages that have one
        if not frame.startswith(prefix):
            return None
        start = len(prefix)
        first = frame[start]
        size = 1 if first < 0x80 else _UINT_SIZES.get(first)
        if size is None:
            return None
        spliced = prefix + _packed_uint(request_id) + frame[start + size :]
        if len(spliced) > self.limits.max_frame:
            raise LocalProtocolError(f"{type(msg).__name__} encodes to {len(spliced)} bytes")
        return spliced

    def _pack(self, msg: Message, wire: Dict[str, object]) -> bytes:
        if self._registry.get(msg.TAG) is not type(msg):
            raise LocalProtocolError(f"{type(msg).__name__} is not registered with this codec")
        # Packer().pack is what msgpack.packb does, minus a Python-level call forwarding **kwargs
        # that costs more than packing a small message. A fresh Packer per call shares no buffer
        # between threads.
        frame: bytes = msgpack.Packer().pack(wire)
        if len(frame) > self.limits.max_frame:
            raise LocalProtocolError(f"{type(msg).__name__} encodes to {len(frame)} bytes")
        return frame

    def decode(self, frame: bytes) -> Message:
        """The message in one frame; raises only :class:`~protocol.errors.RemoteProtocolError`."""
        if len(frame) > self.limits.max_frame:
            raise PayloadTooBig(f"frame of {len(frame)} bytes > {self.limits.max_frame}")
        max_str_len, max_bin_len, max_array_len, max_map_len = self._max_lengths
        try:
            # Keyword arguments spelled out: unpacking a dict of options (**options) took about a
            # third of a heartbeat's decode (benchmarks/bench_codec.py).
            wire = _unpackb(
                frame,
                raw=False,
                use_list=False,
                strict_map_key=True,
                max_str_len=max_str_len,
                max_bin_len=max_bin_len,
                max_array_len=max_array_len,
                max_map_len=max_map_len,
                max_ext_len=0,
            )
        except ValueError as exc:  # every msgpack decoding error is a ValueError subclass
            raise MalformedMessage(f"undecodable frame: {type(exc).__name__}") from None
        if type(wire) is not dict:
            raise MalformedMessage(f"frame holds a {type(wire).__name__}, not a map")
        tag = wire.get("t")
        if type(tag) is not str:
            raise MalformedMessage("frame has no string tag under 't'")
        cls = self._registry.get(tag)
        if cls is None:
            raise UnknownMessageType(f"unknown tag {tag[:64]!r}")
        try:
            # Missing, extra or non-str keys and bad values all raise LocalProtocolError from the
            # message's own checks (nesting depth is checked there: messages.MAX_DEPTH).
            msg = cls.from_wire(wire)
        except LocalProtocolError as exc:
            raise InvalidMessage(f"{cls.__name__}: {exc}", tag=cls.TAG) from None
        if cls in self._prefixes:
            self._last = (msg, frame)
        return msg
