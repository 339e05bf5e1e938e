"""Message types of the posassist wire protocol: frozen, slotted, validated on construction.

See docs/protocol.md#messages for the table of tags, directions and request/reply pairs.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .errors import LocalProtocolError

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda decorator: decorator  # typing.dataclass_transform is 3.11+; we run on 3.8


__all__ = [
    "DEVICE_ID",
    "HELP_CATEGORIES",
    "MAX_DEPTH",
    "MAX_DISPLAY_NAME",
    "MESSAGE_TYPES",
    "SUPPORT_CODE",
    "TICKET_STATUSES",
    "USERNAME",
    "AlertAcknowledged",
    "AlertRaised",
    "AuthAccepted",
    "AuthChallenge",
    "AuthRefused",
    "AuthResponse",
    "ConsentAnswer",
    "ConsentRequest",
    "DeviceFacts",
    "DeviceHandedOver",
    "DeviceHandover",
    "DiagnosticsReport",
    "DiagnosticsRequest",
    "ErrorReply",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "HelpRequested",
    "JobQuery",
    "JobResults",
    "Kind",
    "Message",
    "PolicyUpdated",
    "ScriptCancel",
    "ScriptFinished",
    "ScriptOutput",
    "ScriptProgress",
    "ScriptRestoreRequest",
    "ScriptRunRequest",
    "ScriptStarted",
    "TicketList",
    "TicketOpened",
    "TicketQuery",
    "TicketRate",
    "TicketRated",
    "TicketUpdated",
    "TokenAuth",
    "Welcome",
    "facts_size",
    "merchant_text_problem",
    "name_problem",
    "username_problem",
]

#: Deepest nesting of maps and arrays in a frame, the frame's own map counting as 1.
MAX_DEPTH = 32
MAX_ID = 2**63 - 1
MAX_TEXT = 4096
MAX_NAME = 128
#: Raw data in one ScriptOutput chunk (docs/protocol.md#chunking).
MAX_CHUNK = 64 * 1024
#: Bounds of DeviceFacts.facts (docs/protocol.md#device-facts): keys in the facts map, entries in
#: a list or a map inside it, characters in a key and in a string, characters of every key and
#: string together, and the largest integer (any JSON reader keeps it exact).
MAX_FACTS = 32
MAX_FACT_ITEMS = 16
MAX_FACT_KEY = 64
MAX_FACT_TEXT = 256
MAX_FACTS_TEXT = 8192
MAX_FACT_INT = 2**53
#: A device id, wherever it appears (docs/protocol.md#messages): what the relay mints
#: (``dev_`` and hex) and what an operator may type, nothing that could carry markup or escapes.
DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: A username (found in the outside attack, F9): what a console's ``principal``, an audit actor
#: (``user:<name>``) and a terminal can carry unambiguously.
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
#: The longest organisation, merchant or store name.
MAX_DISPLAY_NAME = 256

Scalar = Union[str, int, float, bool]
#: A DeviceFacts mapping; its own checker, stricter than a free-form map (see facts_size).
Facts = Dict[str, Any]
M = TypeVar("M", bound="Message")
Check = Callable[[Any], bool]
_isfinite = math.isfinite


class Kind(enum.Enum):
    """Whether a message opens a request, answers one, or stands alone."""

    EVENT = "event"
    REQUEST = "request"
    REPLY = "reply"


class Message:
    """Base of every message. Subclasses are made with the :func:`message` decorator."""

    __slots__ = ()

    TAG: ClassVar[str] = ""
    KIND: ClassVar[Kind] = Kind.EVENT
    #: For replies: whether this reply ends the request (ScriptOutput does not).
    TERMINAL: ClassVar[bool] = True
    #: (field name, checker) pairs, built once by :func:`message`.
    CHECKS: ClassVar[Tuple[Tuple[str, Check], ...]] = ()
    FIELDS: ClassVar[Tuple[str, ...]] = ()
    #: The keys of :meth:`to_wire`'s map: ``"t"`` and every field.
    WIRE_KEYS: ClassVar[FrozenSet[str]] = frozenset({"t"})
    #: Fields added by a later version (``spec(since=…)``): absent from the wire while None.
    LATER_FIELDS: ClassVar[FrozenSet[str]] = frozenset()
    #: The keys every wire map of this message holds: :attr:`WIRE_KEYS` minus the later fields.
    REQUIRED_KEYS: ClassVar[FrozenSet[str]] = frozenset({"t"})
    #: (field name, checker, slot setter) triples for :meth:`from_wire`.
    SETTERS: ClassVar[Tuple[Tuple[str, Check, Callable[[Any, Any], None]], ...]] = ()

    def __post_init__(self) -> None:
        for name, ok in self.CHECKS:
            if not ok(getattr(self, name)):
                raise LocalProtocolError(f"{type(self).__name__}.{name} has a bad value")
        problem = self.check()
        if problem is not None:
            raise LocalProtocolError(f"{type(self).__name__}: {problem}")

    @classmethod
    def from_wire(cls: Type[M], wire: Dict[str, Any]) -> M:
        """The message in a decoded map: the inverse of :meth:`to_wire`, validated like ``cls()``.

        Raises LocalProtocolError if the tag is not ``cls.TAG``, a field is missing or extra, or a
        value breaks a rule. Faster than ``cls(**fields)``: it skips the dataclass ``__init__``
        (defaults, frozen ``__setattr__``) yet applies the same :attr:`CHECKS` and :meth:`check`.
        Every field must be on the wire (docs/protocol.md#messages), so no default is needed, except
        a field a later version added (:attr:`LATER_FIELDS`), which is None when absent.
        """
        keys = wire.keys()
        if (keys != cls.WIRE_KEYS and not cls.REQUIRED_KEYS <= keys <= cls.WIRE_KEYS) or wire[
            "t"
        ] != cls.TAG:
            raise LocalProtocolError(f"{cls.__name__}: wrong set of fields")
        msg = object.__new__(cls)
        for name, ok, set_slot in cls.SETTERS:
            value = wire.get(name)
            if not ok(value):
                raise LocalProtocolError(f"{cls.__name__}.{name} has a bad value")
            set_slot(msg, value)
        problem = msg.check()
        if problem is not None:
            raise LocalProtocolError(f"{cls.__name__}: {problem}")
        return msg

    def with_id(self: M, request_id: int) -> M:
        """A copy under another request id (a relay forwarding a request or its replies).

        Only the new id is checked: every other field was validated when ``self`` was built, and
        the message is immutable. LocalProtocolError for a message without an id or a bad id.
        """
        if "id" not in self.FIELDS or type(request_id) is not int or not 1 <= request_id <= MAX_ID:
            raise LocalProtocolError(
                f"{type(self).__name__}: cannot take request id {request_id!r}"
            )
        copy = object.__new__(type(self))
        for name, _, set_slot in self.SETTERS:
            set_slot(copy, request_id if name == "id" else getattr(self, name))
        return copy

    def check(self) -> Optional[str]:
        """Cross-field rules; return a description of the problem, or None."""
        return None

    def to_wire(self) -> Dict[str, Any]:
        """The msgpack map for this message: its fields plus the tag under ``"t"``; a field a
        later version added (:attr:`LATER_FIELDS`) is left off while None, so an older peer gets
        exactly the map it knows. Each message has its own, written out (:func:`message`); this
        loop is the reference they are tested against."""
        wire: Dict[str, Any] = {"t": self.TAG}
        later = self.LATER_FIELDS
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None or name not in later:
                wire[name] = value
        return wire


# --- field declarations -------------------------------------------------------------------------


def spec(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    max_len: Optional[int] = None,
    min_len: int = 0,
    choices: Optional[Tuple[str, ...]] = None,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    since: Optional[int] = None,
    pattern: Optional[re.Pattern[str]] = None,
    printable: bool = False,
) -> Any:
    """Declare a field's limits; the checker is built from these and the field's annotation.

    ``since``: the protocol version that added the field. Such a field defaults to None and is
    left off the wire while None, so a peer of an older version sees the message it knows
    (docs/protocol.md#versions).

    ``pattern``: a string field must match it whole (its own length bounds apply, not
    ``min_len``/``max_len``). ``printable``: a string field may hold no control character (C0,
    DEL, C1), so it can reach a log line or a terminal as it is.
    """
    if since is not None and default is not None:
        raise TypeError("a field added by a later version must default to None")
    meta = {
        "max_len": max_len,
        "min_len": min_len,
        "choices": choices,
        "lo": lo,
        "hi": hi,
        "since": since,
        "pattern": pattern,
        "printable": printable,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


#: Checkers that :func:`_compile_from_wire` writes out inline: an expression in ``v`` with
#: ``{0}``, ``{1}``… standing for the constants that follow it. Any other checker is called.
_INLINE: Dict[Check, Tuple[str, Tuple[Any, ...]]] = {}


def _inline(check: Check, expression: str, *constants: Any) -> Check:
    _INLINE[check] = (expression, constants)
    return check


def _is_int(lo: float, hi: float) -> Check:
    return _inline(
        lambda v: type(v) is int and lo <= v <= hi, "type(v) is int and {0} <= v <= {1}", lo, hi
    )


_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1  # msgpack carries int64 and uint64


def _is_finite(v: Any) -> bool:
    # A finite float, or an int msgpack can carry: the unbounded float check, used on every
    # decode for timestamps. (math.isfinite of an int past 1e308 would raise OverflowError.)
    kind = type(v)
    if kind is float:
        return _isfinite(v)
    return kind is int and _MIN_INT <= v <= _MAX_INT


def _is_float(lo: float, hi: float) -> Check:
    return lambda v: _is_finite(v) and lo <= v <= hi


def _is_sized(kind: type, min_len: int, max_len: int) -> Check:
    return _inline(
        lambda v: type(v) is kind and min_len <= len(v) <= max_len,  # type: ignore[arg-type]
        "type(v) is {0} and {1} <= len(v) <= {2}",
        kind,
        min_len,
        max_len,
    )


def _is_match(pattern: re.Pattern[str]) -> Check:
    fullmatch = pattern.fullmatch
    return _inline(
        lambda v: type(v) is str and fullmatch(v) is not None,
        "type(v) is str and {0}(v) is not None",
        fullmatch,
    )


def _is_printable(min_len: int, max_len: int) -> Check:
    search = _CONTROL.search
    return _inline(
        lambda v: type(v) is str and min_len <= len(v) <= max_len and search(v) is None,
        "type(v) is str and {0} <= len(v) <= {1} and {2}(v) is None",
        min_len,
        max_len,
        search,
    )


_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def username_problem(value: str) -> Optional[str]:
    """Why ``value`` can't be a username (English, for an error message), or None."""
    if USERNAME.fullmatch(value) is None:
        return "a username is 1-64 letters, digits and . _ @ - (no spaces or control characters)"
    return None


def name_problem(value: str) -> Optional[str]:
    """Why ``value`` can't name an organisation, merchant or store, or None: 1..256 characters,
    not all blank, no control character (C0, DEL, C1) nor bidi override."""
    if not 0 < len(value) <= MAX_DISPLAY_NAME or not value.strip():
        return f"a name is 1-{MAX_DISPLAY_NAME} characters, not all blank"
    if _CONTROL.search(value) is not None or _BIDI.search(value) is not None:
        return "a name may not hold control characters (newline, escape, NUL, bidi overrides)"
    return None


def _is_choice(choices: Tuple[str, ...]) -> Check:
    allowed = frozenset(choices)
    return _inline(
        lambda v: type(v) is str and v in allowed, "type(v) is str and v in {0}", allowed
    )


def _is_bool(v: Any) -> bool:
    return type(v) is bool


_inline(_is_bool, "type(v) is bool")


def _is_scalar(v: Any) -> bool:
    return type(v) in (str, bool) or _is_finite(v)


_LEAF_TYPES = frozenset({str, bytes, bool, type(None)})


def tree_ok(value: Any, depth: int) -> bool:
    """Whether a free-form value holds only msgpack types and str keys, nested at most ``depth``."""
    return _items_ok((value,), depth)


def _items_ok(items: Iterable[Any], depth: int) -> bool:
    # One loop per container, scalars checked inline: a diagnostics report is mostly scalars, and a
    # call per scalar was most of the cost of decoding one (benchmarks/bench_codec.py).
    for item in items:
        kind = type(item)
        if kind in _LEAF_TYPES:
            continue
        if kind is float:
            if not _isfinite(item):
                return False
        elif kind is int:
            if not _MIN_INT <= item <= _MAX_INT:
                return False
        elif kind is dict:
            if depth <= 0:
                return False
            for key in item:
                if type(key) is not str:
                    return False
            if not _items_ok(item.values(), depth - 1):
                return False
        elif kind is list or kind is tuple:
            if depth <= 0 or not _items_ok(item, depth - 1):
                return False
        else:
            return False
    return True


def _is_tree(v: Any) -> bool:
    # The message's own map is level 1, so a free-form field may nest MAX_DEPTH - 1 more.
    return type(v) is dict and tree_ok(v, MAX_DEPTH - 1)


#: A script parameter's name and string value, at most (a manifest's ``max_length`` is <= 4096):
#: a console can't send the relay megabytes of parameters for it to hold and forward.
MAX_PARAM_NAME = 64
MAX_PARAM_VALUE = 4096


def _is_params(v: Any) -> bool:
    return (
        type(v) is dict
        and len(v) <= 64
        and all(
            type(k) is str
            and 0 < len(k) <= MAX_PARAM_NAME
            and _is_scalar(x)
            and (type(x) is not str or len(x) <= MAX_PARAM_VALUE)
            for k, x in v.items()
        )
    )


_FACT_KEY = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_FACT_KEY - 1}}}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _fact_scalar_size(value: Any) -> int:
    """Characters a fact scalar counts towards MAX_FACTS_TEXT, or -1 if it is not one."""
    kind = type(value)
    if kind is str:
        return len(value) if len(value) <= MAX_FACT_TEXT and not _CONTROL.search(value) else -1
    if kind is int:
        return 0 if -MAX_FACT_INT <= value <= MAX_FACT_INT else -1
    if kind is float:
        return 0 if _isfinite(value) else -1
    return 0 if kind is bool or value is None else -1


def _fact_map_size(value: Any, max_keys: int, item_size: Callable[[Any], int]) -> int:
    if type(value) is not dict or len(value) > max_keys:
        return -1
    total = 0
    for key, item in value.items():
        if type(key) is not str or not _FACT_KEY.match(key):
            return -1
        size = item_size(item)
        if size < 0:
            return -1
        total += len(key) + size
    return total


def _fact_row_size(value: Any) -> int:
    # An entry of a list: a scalar, or a map of scalars (one printer, one port).
    if type(value) is dict:
        return _fact_map_size(value, MAX_FACT_ITEMS, _fact_scalar_size)
    return _fact_scalar_size(value)


def _fact_value_size(value: Any) -> int:
    kind = type(value)
    if kind is dict:
        return _fact_map_size(value, MAX_FACT_ITEMS, _fact_scalar_size)
    if kind is list or kind is tuple:
        if len(value) > MAX_FACT_ITEMS:
            return -1
        total = 0
        for item in value:
            size = _fact_row_size(item)
            if size < 0:
                return -1
            total += size
        return total
    return _fact_scalar_size(value)


#: Facts a console computes with (docs/protocol.md#device-facts): ``*_omitted`` is a count, and
#: ``printers`` / ``serial_ports`` are lists; any other shape for these keys is refused.
_FACT_COUNTS = ("printers_omitted", "serial_ports_omitted")
_FACT_LISTS = ("printers", "serial_ports")


def _facts_typed(value: Dict[str, Any]) -> bool:
    for key in _FACT_COUNTS:
        n = value.get(key)
        if n is not None and (type(n) is not int or n < 0):
            return False
    return all(type(value.get(k)) in (list, tuple, type(None)) for k in _FACT_LISTS)


def facts_size(value: Any) -> int:
    """Characters of every key and string in a DeviceFacts mapping, or -1 if it breaks a rule.

    The rules (docs/protocol.md#device-facts): a map of at most MAX_FACTS keys; keys are
    ``[a-z][a-z0-9_]*``, at most MAX_FACT_KEY characters; a value is a scalar (None, a bool, an int
    within ±MAX_FACT_INT, a finite float, a string of at most MAX_FACT_TEXT characters without
    control characters), a map of scalars, or a list of scalars and maps of scalars; lists and
    inner maps hold at most MAX_FACT_ITEMS entries. Nothing nests deeper, and nothing that JSON
    can't hold (bytes) is allowed: the relay stores facts as JSON. The few facts a console
    computes with have their type: ``*_omitted`` a count, ``printers``/``serial_ports`` lists.
    """
    size = _fact_map_size(value, MAX_FACTS, _fact_value_size)
    return size if size < 0 or _facts_typed(value) else -1


def _is_facts(v: Any) -> bool:
    return 0 <= facts_size(v) <= MAX_FACTS_TEXT


def _optional(inner: Check) -> Check:
    return lambda v: v is None or inner(v)


def _tuple_of(inner: Check, max_len: int) -> Check:
    return lambda v: type(v) is tuple and len(v) <= max_len and all(inner(x) for x in v)


def _checker(annotation: str, meta: Any) -> Check:
    """Build the checker for one field from its annotation text and :func:`spec` limits."""
    ann = annotation.replace(" ", "")
    if ann.startswith("Optional[") and ann.endswith("]"):
        return _optional(_checker(ann[len("Optional[") : -1], meta))
    if ann.endswith("|None"):
        return _optional(_checker(ann[: -len("|None")], meta))
    if ann in ("int", "float"):
        lo = meta.get("lo")
        hi = meta.get("hi")
        if ann == "int":
            return _is_int(-(2**63) if lo is None else lo, MAX_ID if hi is None else hi)
        if lo is None and hi is None:
            return _is_finite
        return _is_float(-math.inf if lo is None else lo, math.inf if hi is None else hi)
    if ann == "str":
        choices = meta.get("choices")
        if choices:
            return _is_choice(choices)
        pattern = meta.get("pattern")
        if pattern is not None:
            return _is_match(pattern)
        if meta.get("printable"):
            return _is_printable(meta.get("min_len") or 0, meta.get("max_len") or MAX_TEXT)
        return _is_sized(str, meta.get("min_len") or 0, meta.get("max_len") or MAX_TEXT)
    if ann == "bytes":
        return _is_sized(bytes, meta.get("min_len") or 0, meta.get("max_len") or MAX_CHUNK)
    if ann == "bool":
        return _is_bool
    if ann in ("Dict[str,Any]", "dict[str,Any]"):
        return _is_tree
    if ann in ("Dict[str,Scalar]", "dict[str,Scalar]"):
        return _is_params
    if ann == "Facts":
        return _is_facts
    for prefix in ("Tuple[", "tuple["):
        if ann.startswith(prefix) and ann.endswith(",...]"):
            inner = _checker(ann[len(prefix) : -len(",...]")], {})
            return _tuple_of(inner, meta.get("max_len") or 64)
    raise TypeError(f"no checker for annotation {annotation!r}")


# --- the decorator ------------------------------------------------------------------------------


def _compile_from_wire(cls: Type[M]) -> Callable[[Type[M], Dict[str, Any]], M]:
    """:meth:`Message.from_wire` written out for ``cls``: same checks, same errors, no loop.

    A relay decodes every frame it forwards, and the generic loop (a tuple unpacked and a checker
    called per field) was a tenth of the relay's CPU when forwarding (benchmarks/bench_relay.py).
    The source is built only from the class's own field names and limits, never from input, the
    way :mod:`dataclasses` writes ``__init__``. Tests hold it to the generic method on every
    message and every bad value (tests/protocol/test_messages.py).
    """
    name = cls.__name__
    namespace: Dict[str, Any] = {
        "Error": LocalProtocolError,
        "new": object.__new__,
        "WIRE_KEYS": cls.WIRE_KEYS,
        "REQUIRED_KEYS": cls.REQUIRED_KEYS,
        "TAG": cls.TAG,
        "WRONG": f"{name}: wrong set of fields",
        "PREFIX": f"{name}: ",
    }
    if cls.LATER_FIELDS:
        lines = [
            "def from_wire(cls, wire):",
            "    keys = wire.keys()",
            "    if (keys != WIRE_KEYS and not REQUIRED_KEYS <= keys <= WIRE_KEYS)"
            " or wire['t'] != TAG:",
            "        raise Error(WRONG)",
            "    msg = new(cls)",
        ]
    else:
        # As many keys as it should have, and each of them there: exactly its set of fields
        # (cheaper than comparing the key sets). Every value is looked up before any is checked,
        # so a map with a field missing is refused for that, as the generic method does.
        values = "".join(f", v{i}" for i in range(len(cls.FIELDS)))
        lookups = "".join(f", wire[{field!r}]" for field in cls.FIELDS)
        lines = [
            "def from_wire(cls, wire):",
            f"    if len(wire) != {len(cls.WIRE_KEYS)}:",
            "        raise Error(WRONG)",
            "    try:",
            f"        tag{values} = wire['t']{lookups}",
            "    except KeyError:",
            "        raise Error(WRONG) from None",
            "    if tag != TAG:",
            "        raise Error(WRONG)",
            "    msg = new(cls)",
        ]
    for i, (field, ok, set_slot) in enumerate(cls.SETTERS):
        expression, constants = _INLINE.get(ok, ("{0}(v)", (ok,)))
        names = []
        for k, constant in enumerate(constants):
            names.append(f"c{i}_{k}")
            namespace[names[-1]] = constant
        namespace[f"set{i}"] = set_slot
        namespace[f"bad{i}"] = f"{name}.{field} has a bad value"
        getter = f"wire.get({field!r})" if cls.LATER_FIELDS else f"v{i}"
        lines += [
            f"    v = {getter}",
            f"    if not ({expression.format(*names)}):",
            f"        raise Error(bad{i})",
            f"    set{i}(msg, v)",
        ]
    if cls.check is not Message.check:  # cross-field rules
        lines += [
            "    problem = msg.check()",
            "    if problem is not None:",
            "        raise Error(PREFIX + problem)",
        ]
    lines.append("    return msg")
    from_wire: Callable[[Type[M], Dict[str, Any]], M] = _define(
        lines, namespace, f"<{name}.from_wire>"
    )
    return from_wire


def _compile_to_wire(cls: Type[M]) -> Callable[[M], Dict[str, Any]]:
    """:meth:`Message.to_wire` written out for ``cls``: one dict display, no loop. The relay
    encodes every reply it forwards again (under the console's request id). Built, like
    :func:`_compile_from_wire`, only from the class's own field names."""
    leading = []  # the fields before the first later one: all in the one display
    for field in cls.FIELDS:
        if field in cls.LATER_FIELDS:
            break
        leading.append(field)
    items = "".join(f", {field!r}: self.{field}" for field in leading)
    lines = ["def to_wire(self):", f"    wire = {{'t': TAG{items}}}"]
    for field in cls.FIELDS[len(leading) :]:
        if field in cls.LATER_FIELDS:
            lines += [
                f"    if self.{field} is not None:",
                f"        wire[{field!r}] = self.{field}",
            ]
        else:
            lines.append(f"    wire[{field!r}] = self.{field}")
    lines.append("    return wire")
    to_wire: Callable[[M], Dict[str, Any]] = _define(
        lines, {"TAG": cls.TAG}, f"<{cls.__name__}.to_wire>"
    )
    return to_wire


def _define(lines: List[str], namespace: Dict[str, Any], filename: str) -> Any:
    """The one function ``lines`` define, with ``namespace`` as its globals: the one place this
    package compiles code (tests/protocol/test_purity.py), only ever code written above from a
    message class's own field names and limits."""
    exec(compile("\n".join(lines), filename, "exec"), namespace)
    return namespace[lines[0][len("def ") : lines[0].index("(")]]


if sys.version_info >= (3, 10):

    def _dataclass(cls: Type[M]) -> Type[M]:
        return dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)  # novermin

else:  # pragma: no cover - Python 3.8/3.9 on Windows 7 tills; checked by `make py38`

    def _dataclass(cls: Type[M]) -> Type[M]:
        # dataclass(slots=True) arrived in 3.10: rebuild the class with __slots__ ourselves.
        # kw_only needs 3.10 too, so every message lists required fields before defaults.
        made = dataclasses.dataclass(frozen=True)(cls)
        names = tuple(f.name for f in dataclasses.fields(made))
        namespace = {k: v for k, v in made.__dict__.items() if k not in names}
        namespace.pop("__dict__", None)
        namespace.pop("__weakref__", None)
        namespace["__slots__"] = names
        return type(made)(made.__name__, made.__bases__, namespace)  # type: ignore[return-value]


MESSAGE_TYPES: List[Type[Message]] = []


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(spec,))
def message(
    tag: str, kind: Kind = Kind.EVENT, *, terminal: bool = True
) -> Callable[[Type[M]], Type[M]]:
    """Make ``cls`` a frozen, slotted, keyword-only dataclass that validates itself, and list it."""

    def wrap(cls: Type[M]) -> Type[M]:
        made = _dataclass(cls)
        fields = dataclasses.fields(made)  # type: ignore[arg-type]
        made.TAG = tag
        made.KIND = kind
        made.TERMINAL = terminal
        made.FIELDS = tuple(f.name for f in fields)
        if "t" in made.FIELDS:
            raise TypeError(f"{made.__name__}: 't' is the wire tag, not a field name")
        made.CHECKS = tuple((f.name, _checker(str(f.type), f.metadata)) for f in fields)
        made.WIRE_KEYS = frozenset(("t", *made.FIELDS))
        made.LATER_FIELDS = frozenset(f.name for f in fields if f.metadata.get("since"))
        made.REQUIRED_KEYS = made.WIRE_KEYS - made.LATER_FIELDS
        made.to_wire = _compile_to_wire(made)  # type: ignore[method-assign,assignment]
        # Every field is a slot; its member descriptor writes it past the frozen __setattr__.
        made.SETTERS = tuple((name, ok, getattr(made, name).__set__) for name, ok in made.CHECKS)
        setattr(made, "from_wire", classmethod(_compile_from_wire(made)))  # noqa: B010
        MESSAGE_TYPES.append(made)
        return made

    return wrap


# --- handshake (docs/protocol.md#handshake) ------------------------------------------------------

ROLES = ("agent", "console")


@message("hello")
class Hello(Message):
    """First message of a client: who it is and which protocol versions it speaks."""

    role: str = spec(choices=ROLES)
    versions: Tuple[int, ...] = spec(max_len=16)
    software: str = spec(max_len=MAX_NAME, printable=True)

    def check(self) -> Optional[str]:
        if not self.versions:
            return "versions is empty"
        return None


@message("welcome")
class Welcome(Message):
    """The relay's answer to Hello: the version chosen for this session."""

    version: int = spec(lo=1, hi=65535)
    relay_id: str = spec(min_len=1, max_len=MAX_NAME, printable=True)
    software: str = spec(max_len=MAX_NAME, printable=True)


@message("auth.challenge")
class AuthChallenge(Message):
    """A fresh nonce for the agent to sign (docs/protocol.md#agent-authentication)."""

    nonce: bytes = spec(min_len=32, max_len=32)


@message("auth.response")
class AuthResponse(Message):
    """The agent's signature over :func:`protocol.signing.auth_payload`."""

    device_id: str = spec(pattern=DEVICE_ID)
    signature: bytes = spec(min_len=64, max_len=64)


@message("auth.token")
class TokenAuth(Message):
    """A console's bearer token."""

    token: str = spec(min_len=1, max_len=512)


@message("auth.accepted")
class AuthAccepted(Message):
    """Authentication succeeded; the session is open."""

    principal: str = spec(min_len=1, max_len=MAX_NAME, printable=True)
    heartbeat_interval: float = spec(lo=1.0, hi=3600.0)


@message("auth.refused")
class AuthRefused(Message):
    """Authentication failed; the relay closes after sending this."""

    code: str = spec(min_len=1, max_len=64, printable=True)


# --- liveness -----------------------------------------------------------------------------------


@message("heartbeat")
class Heartbeat(Message):
    """Either side, any time the session is open; answered by HeartbeatAck."""

    seq: int = spec(lo=0)
    sent_at: float


@message("heartbeat.ack")
class HeartbeatAck(Message):
    """Echo of a Heartbeat with the responder's clock, for round trip and clock offset."""

    seq: int = spec(lo=0)
    sent_at: float
    received_at: float


# --- requests and replies (docs/protocol.md#requests) ---------------------------------------------


@message("error", Kind.REPLY)
class ErrorReply(Message):
    """A typed failure answering any request; ends it."""

    id: int = spec(lo=1)
    code: str = spec(min_len=1, max_len=64)
    message: str = spec(max_len=1024)


@message("diag.request", Kind.REQUEST)
class DiagnosticsRequest(Message):
    """Ask a device for a diagnostics report; ``collectors`` empty means all of them."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    collectors: Tuple[str, ...] = spec(default=(), max_len=32)
    timeout: float = spec(default=10.0, lo=0.1, hi=600.0)


@message("diag.report", Kind.REPLY)
class DiagnosticsReport(Message):
    """A device's diagnostics: one section per collector, each a success or a typed failure."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    collected_at: float
    sections: Dict[str, Any]


@message("script.run", Kind.REQUEST)
class ScriptRunRequest(Message):
    """Run a vetted script; the agent verifies it before anything runs."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    script: str = spec(min_len=1, max_len=MAX_NAME)
    version: str = spec(min_len=1, max_len=64)
    params: Dict[str, Scalar] = spec(default_factory=dict)
    unattended: bool = spec(default=False)
    #: The relay's job for this run (v3): set by the relay when it forwards to an agent, which
    #: reports under it and answers ``job.query`` about it (docs/protocol.md#requests).
    job_id: Optional[str] = spec(default=None, min_len=1, max_len=64, since=3)


@message("script.started", Kind.REPLY, terminal=False)
class ScriptStarted(Message):
    """The script passed every check and its process started."""

    id: int = spec(lo=1)
    job_id: str = spec(min_len=1, max_len=64)
    started_at: float


@message("script.output", Kind.REPLY, terminal=False)
class ScriptOutput(Message):
    """One chunk of a running script's output (docs/protocol.md#chunking)."""

    id: int = spec(lo=1)
    job_id: str = spec(min_len=1, max_len=64)
    seq: int = spec(lo=0)
    stream: str = spec(choices=("stdout", "stderr"))
    data: bytes = spec(max_len=MAX_CHUNK)


@message("script.restore", Kind.REQUEST)
class ScriptRestoreRequest(Message):
    """Put back, byte for byte, the files a script run backed up (``ScriptFinished.backup_id``)."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    backup_id: str = spec(min_len=1, max_len=64)
    #: The relay's job for this restore (v3), as for ScriptRunRequest.job_id.
    job_id: Optional[str] = spec(default=None, min_len=1, max_len=64, since=3)


@message("script.cancel", Kind.REQUEST)
class ScriptCancel(Message):
    """The relay asks an agent to stop a run it is serving (protocol v7): the process tree is
    killed and the run ends ``cancelled``; answered by that ``script.finished``, or ``error``
    ``not_running`` when the job is not running there (docs/protocol.md#cancel)."""

    id: int = spec(lo=1)
    #: The relay's job id of the run (``ScriptRunRequest.job_id``).
    job_id: str = spec(min_len=1, max_len=64)


SCRIPT_STEPS = (
    "verified",
    "refused",
    "consent_asked",
    "consent_answered",
    "backup_made",
    "restored",
    "restore_failed",
)


@message("script.progress", Kind.REPLY, terminal=False)
class ScriptProgress(Message):
    """A step of a run the relay audits: verified, refused and why, consent, backup, restore."""

    id: int = spec(lo=1)
    job_id: str = spec(min_len=1, max_len=64)
    step: str = spec(choices=SCRIPT_STEPS)
    at: float
    detail: Dict[str, Any] = spec(default_factory=dict)


SCRIPT_STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "refused")


@message("script.finished", Kind.REPLY)
class ScriptFinished(Message):
    """The script ended, or was refused before it ran; ends the request."""

    id: int = spec(lo=1)
    job_id: str = spec(min_len=1, max_len=64)
    status: str = spec(choices=SCRIPT_STATUSES)
    finished_at: float
    exit_code: Optional[int] = spec(default=None)
    backup_id: Optional[str] = spec(default=None, max_len=64)
    detail: str = spec(default="", max_len=1024)


# --- reconciliation (docs/protocol.md#requests, v3) -----------------------------------------------

#: Jobs one ``job.query`` may ask about, and results one ``job.results`` may carry.
MAX_JOB_QUERY = 32
#: What an agent can say of a job: a SCRIPT_STATUSES value once it ended, ``running`` while it
#: runs, ``unknown`` when it has no result for it (received but forgotten; in a v3 session also:
#: never received), ``never_received`` (v4 sessions only) when its receipts log proves it never
#: got the request, so the job never ran there.
JOB_RESULT_STATUSES = (*SCRIPT_STATUSES, "running", "unknown", "never_received")
_RESULT_KEYS = frozenset({"job_id", "status", "exit_code", "finished_at", "backup_id", "detail"})


def job_result_problem(result: Dict[str, Any]) -> Optional[str]:
    """What is wrong with one entry of JobResults.results, or None (docs/protocol.md#messages)."""
    if result.keys() != _RESULT_KEYS:
        return "a result needs exactly job_id, status, exit_code, finished_at, backup_id, detail"
    job_id, backup_id = result["job_id"], result["backup_id"]
    exit_code, finished_at = result["exit_code"], result["finished_at"]
    if type(job_id) is not str or not 1 <= len(job_id) <= 64:
        return "bad job_id"
    if result["status"] not in JOB_RESULT_STATUSES:
        return "bad status"
    if exit_code is not None and (type(exit_code) is not int or abs(exit_code) > 2**31):
        return "bad exit_code"
    if finished_at is not None and not _is_finite(finished_at):
        return "bad finished_at"
    if backup_id is not None and (type(backup_id) is not str or not 1 <= len(backup_id) <= 64):
        return "bad backup_id"
    if type(result["detail"]) is not str or len(result["detail"]) > 1024:
        return "bad detail"
    return None


@message("job.query", Kind.REQUEST)
class JobQuery(Message):
    """The relay asks a reconnected agent how jobs it lost track of ended (protocol v3)."""

    id: int = spec(lo=1)
    job_ids: Tuple[str, ...] = spec(max_len=MAX_JOB_QUERY)

    def check(self) -> Optional[str]:
        if not self.job_ids:
            return "job_ids is empty"
        if not all(1 <= len(job_id) <= 64 for job_id in self.job_ids):
            return "a job id must have 1 to 64 characters"
        return None


@message("job.results", Kind.REPLY)
class JobResults(Message):
    """The agent's answer to JobQuery: one result per job asked about (protocol v3).

    Each result is a map: ``job_id``; ``status`` (one of JOB_RESULT_STATUSES); ``exit_code`` int
    or None; ``finished_at`` float or None; ``backup_id`` str or None; ``detail`` str [≤1024].
    """

    id: int = spec(lo=1)
    results: Tuple[Dict[str, Any], ...] = spec(max_len=MAX_JOB_QUERY)

    def check(self) -> Optional[str]:
        for result in self.results:
            problem = job_result_problem(result)
            if problem is not None:
                return problem
        return None


# --- presence (docs/protocol.md#device-facts) -----------------------------------------------------


@message("agent.facts")
class DeviceFacts(Message):
    """What an agent knows cheaply about its till, sent once per connection (protocol v2).

    Self-reported and shown to technicians only: never a ground for any decision. The device it
    describes is the connection's authenticated device, so the message names none.
    """

    facts: Facts


# --- alerts, help and consent --------------------------------------------------------------------


#: A health check's name: an identifier (it reaches webhooks, logs and terminals as it is).
CHECK_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


@message("alert.raised", Kind.REQUEST)
class AlertRaised(Message):
    """A health check changed state; ``alert_key`` lets the relay de-duplicate redelivery."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    alert_key: str = spec(min_len=1, max_len=MAX_NAME, printable=True)
    check_name: str = spec(pattern=CHECK_NAME)
    severity: str = spec(choices=("info", "warning", "critical"))
    state: str = spec(choices=("firing", "resolved"))
    summary: str = spec(max_len=1024)
    observed_at: float
    details: Dict[str, Any] = spec(default_factory=dict)


@message("alert.ack", Kind.REPLY)
class AlertAcknowledged(Message):
    """The relay has the alert event; ``duplicate`` if it had it already."""

    id: int = spec(lo=1)
    duplicate: bool = spec(default=False)


#: What a merchant may ask help about (the window's first choice).
HELP_CATEGORIES = ("printer", "cash_drawer", "scanner", "pos_software", "network", "other")
HELP_LANGUAGES = ("zh-CN", "en")
#: The longest help description, and rating comment, in characters.
MAX_DESCRIPTION = 2000
#: The longest contact (a phone number) in a help request.
MAX_CONTACT = 32
#: A support code as the relay mints it (relay/tickets.py): letters and digits a caller can't
#: confuse when reading out (no 0/O, 1/I/L), in groups joined by ``-``.
SUPPORT_CODE = re.compile(r"[A-Z0-9][A-Z0-9-]{2,14}[A-Z0-9]")
#: Merchant text may hold newlines and tabs, never other controls nor bidi overrides/isolates.
#: Controls (but newline and tab), bidi overrides and isolates, and the invisible marks that
#: reorder or hide text on a screen: LRM/RLM/ALM, line and paragraph separators, the BOM and
#: the zero-width space (ZWJ and ZWNJ stay: scripts and emoji need them).
_TEXT_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029"
    "\u202a-\u202e\u2066-\u2069\ufeff]"
)


def merchant_text_problem(
    what: str, text: str, *, min_len: int = 1, max_len: int = MAX_DESCRIPTION
) -> Optional[str]:
    """Why ``text`` can't be a merchant's description or comment (English and Chinese, for an
    error message; ``what`` names the field), or None. The one rule of the agent's window and of
    the relay: ``min_len``..``max_len`` characters, not all blank when required, newlines and
    tabs allowed, no other control character, no bidi mark, override or isolate."""
    if len(text) > max_len:
        return (
            f"{what} is {len(text)} characters, at most {max_len} / 内容过长（最多 {max_len} 字）"
        )
    if min_len and (len(text) < min_len or not text.strip()):
        return f"{what} is empty: say what is wrong / 请填写问题描述"
    if _TEXT_CONTROL.search(text) is not None:
        return f"{what} may not hold control characters or bidi marks / 内容含有不允许的控制字符"
    return None


@message("policy.updated")
class PolicyUpdated(Message):
    """The relay's health-check policy for this device, resolved nearest-wins, and its store's
    business hours (docs/protocol.md#health-policy). Sent on connect and whenever it changes.

    Only the shape is checked here: the agent validates ``policy`` with
    :func:`posassist.protocol.health_policy.parse_policy` and keeps its last good policy if
    that refuses it, so a bad document never closes the connection.
    """

    version: int = spec(lo=0, hi=2**53)
    policy: Dict[str, Any]
    hours: Dict[str, Any]


@message("help.requested", Kind.REQUEST)
class HelpRequested(Message):
    """The merchant asked for help ("获取帮助 / Get help"); a diagnostics summary rides along.

    ``diagnostics`` is a bounded summary under the ``agent.facts`` limits (docs/protocol.md
    #help-and-tickets): finding codes, severities and words, never the raw report.
    """

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    category: str = spec(choices=HELP_CATEGORIES)
    description: str = spec(max_len=MAX_DESCRIPTION)
    contact: str = spec(default="", max_len=MAX_CONTACT, printable=True)
    language: str = spec(default="zh-CN", choices=HELP_LANGUAGES)
    diagnostics: Facts = spec(default_factory=dict)

    def check(self) -> Optional[str]:
        return merchant_text_problem("description", self.description)


#: A ticket's states (docs/protocol.md#help-and-tickets has the legal transitions).
TICKET_STATUSES = (
    "new",
    "accepted",
    "in_progress",
    "waiting_merchant",
    "resolved",
    "closed",
    "reopened",
)


@message("ticket.opened", Kind.REPLY)
class TicketOpened(Message):
    """A ticket exists for the help request; ``support_code`` is what the merchant reads out.

    ``response_due``: when a technician must have answered under the merchant's SLA (epoch
    seconds), or None when the merchant has none."""

    id: int = spec(lo=1)
    ticket_id: str = spec(min_len=1, max_len=64, printable=True)
    support_code: str = spec(pattern=SUPPORT_CODE)
    status: str = spec(choices=TICKET_STATUSES)
    created_at: float
    response_due: Optional[float] = spec(default=None)


@message("ticket.updated")
class TicketUpdated(Message):
    """A ticket moved on; merchant-facing text in Simplified Chinese with English. Pushed to the
    device's connection whenever one of its tickets changes, and the shape of each entry of
    ``ticket.list``."""

    ticket_id: str = spec(min_len=1, max_len=64, printable=True)
    support_code: str = spec(pattern=SUPPORT_CODE)
    status: str = spec(choices=TICKET_STATUSES)
    message_zh: str = spec(max_len=2000)
    message_en: str = spec(max_len=2000)
    updated_at: float
    technician: Optional[str] = spec(default=None, max_len=MAX_NAME, printable=True)
    response_due: Optional[float] = spec(default=None)
    resolve_due: Optional[float] = spec(default=None)
    #: While ``waiting_merchant``: what the technician asked the merchant (version 6; text as
    #: a merchant's, newlines kept).
    question: Optional[str] = spec(default=None, max_len=MAX_DESCRIPTION, since=6)

    def check(self) -> Optional[str]:
        if self.question is None:
            return None
        return merchant_text_problem("question", self.question, min_len=0)


#: Tickets one ``ticket.list`` carries at most (the device's open ones and those resolved in
#: the last 7 days, newest first).
MAX_TICKET_LIST = 32


def ticket_entry_problem(entry: Any) -> Optional[str]:
    """What is wrong with one entry of TicketList.tickets (a ``ticket.updated`` map without
    ``"t"``), or None."""
    if type(entry) is not dict or "t" in entry:
        return "a ticket is a map of the ticket.updated fields"
    try:
        TicketUpdated.from_wire({"t": TicketUpdated.TAG, **entry})
    except LocalProtocolError as exc:
        return f"a ticket: {exc}"
    return None


@message("ticket.query", Kind.REQUEST)
class TicketQuery(Message):
    """The agent asks for its device's tickets (the window opening, the agent restarting)."""

    id: int = spec(lo=1)


@message("ticket.list", Kind.REPLY)
class TicketList(Message):
    """The device's open tickets and those resolved in the last 7 days, newest first; each
    entry has exactly the fields of ``ticket.updated``."""

    id: int = spec(lo=1)
    tickets: Tuple[Dict[str, Any], ...] = spec(max_len=MAX_TICKET_LIST)

    def check(self) -> Optional[str]:
        for entry in self.tickets:
            problem = ticket_entry_problem(entry)
            if problem is not None:
                return problem
        return None


@message("ticket.rate", Kind.REQUEST)
class TicketRate(Message):
    """The merchant rates a resolved ticket of this device: 1..5 and an optional comment."""

    id: int = spec(lo=1)
    ticket_id: str = spec(min_len=1, max_len=64, printable=True)
    rating: int = spec(lo=1, hi=5)
    comment: str = spec(default="", max_len=MAX_DESCRIPTION)

    def check(self) -> Optional[str]:
        return merchant_text_problem("comment", self.comment, min_len=0)


@message("ticket.rated", Kind.REPLY)
class TicketRated(Message):
    """The relay kept the rating."""

    id: int = spec(lo=1)


@message("ticket.reply", Kind.REQUEST)
class TicketReply(Message):
    """The merchant answers the technician's question on an open ticket of this device
    (version 6): their words go on the ticket, and a ticket waiting for them goes back to
    ``in_progress``."""

    id: int = spec(lo=1)
    ticket_id: str = spec(min_len=1, max_len=64, printable=True)
    text: str = spec(max_len=MAX_DESCRIPTION)

    def check(self) -> Optional[str]:
        return merchant_text_problem("reply", self.text)


@message("ticket.replied", Kind.REPLY)
class TicketReplied(Message):
    """The relay kept the merchant's reply."""

    id: int = spec(lo=1)


@message("consent.request", Kind.REQUEST)
class ConsentRequest(Message):
    """Ask the merchant before a script runs: what, what it changes, and for how long."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)
    script: str = spec(min_len=1, max_len=MAX_NAME)
    title_zh: str = spec(min_len=1, max_len=256)
    title_en: str = spec(min_len=1, max_len=256)
    changes_zh: str = spec(max_len=2000)
    changes_en: str = spec(max_len=2000)
    expected_duration: float = spec(lo=0.0, hi=86400.0)
    timeout: float = spec(lo=1.0, hi=3600.0)


@message("consent.answer", Kind.REPLY)
class ConsentAnswer(Message):
    """The merchant's answer; ``answered_by`` is who clicked, if known."""

    id: int = spec(lo=1)
    granted: bool
    answered_by: str = spec(default="", max_len=MAX_NAME)


# --- changing provider (docs/protocol.md#changing-provider) -----------------------------------


@message("device.handover", Kind.REQUEST)
class DeviceHandover(Message):
    """The device has enrolled with another provider's relay, with the merchant's consent
    (version 7): this relay marks it handed over and refuses its identity from now on."""

    id: int = spec(lo=1)
    device_id: str = spec(pattern=DEVICE_ID)


@message("device.handed_over", Kind.REPLY)
class DeviceHandedOver(Message):
    """The relay marked the device handed over (version 7) at ``handed_over_at``, its clock."""

    id: int = spec(lo=1)
    handed_over_at: float
