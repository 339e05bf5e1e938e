"""Messages are frozen, slotted, keyword-only, validate on construction and round-trip."""

from __future__ import annotations

import dataclasses
import math

import msgpack
import pytest

from posassist.protocol import (
    MESSAGE_TYPES,
    Codec,
    InvalidMessage,
    LocalProtocolError,
    RemoteProtocolError,
)
from posassist.protocol import messages as m
from tests.protocol.samples import SAMPLES

CODEC = Codec()


def test_every_message_type_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TAG)
def test_message_round_trips_through_codec(sample: m.Message) -> None:
    codec = Codec()
    decoded = codec.decode(codec.encode(sample))
    assert decoded == sample
    assert type(decoded) is type(sample)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TAG)
def test_message_is_frozen_and_slotted(sample: m.Message) -> None:
    assert not hasattr(sample, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(sample, sample.FIELDS[0], None)


def test_message_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        m.Heartbeat(1, 2.0)  # type: ignore[misc]


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.TAG)
def test_required_fields_come_before_defaults_for_python38(cls: type[m.Message]) -> None:
    # Python 3.8 has no kw_only dataclasses; there a default before a required field is an error.
    seen_default = False
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        assert not (seen_default and not has_default), f"{cls.__name__}.{field.name}"
        seen_default = seen_default or has_default


#: a valid alert.raised whose fields the bad constructions below change one at a time
_ALERT = next(sample for sample in SAMPLES if isinstance(sample, m.AlertRaised))

BAD_CONSTRUCTIONS = [
    ("int is a bool", lambda: m.Heartbeat(seq=True, sent_at=1.0)),
    ("int below range", lambda: m.Heartbeat(seq=-1, sent_at=1.0)),
    ("int is a str", lambda: m.ErrorReply(id="1", code="x", message="")),  # type: ignore[arg-type]
    ("id zero", lambda: m.ErrorReply(id=0, code="x", message="")),
    ("float is nan", lambda: m.Heartbeat(seq=1, sent_at=math.nan)),
    ("float is inf", lambda: m.Heartbeat(seq=1, sent_at=math.inf)),
    ("float is a str", lambda: m.Heartbeat(seq=1, sent_at="1")),  # type: ignore[arg-type]
    ("float above hi", lambda: m.AuthAccepted(principal="p", heartbeat_interval=1e9)),
    ("str too long", lambda: m.AuthRefused(code="x" * 65)),
    ("str empty", lambda: m.AuthRefused(code="")),
    ("str is bytes", lambda: m.AuthRefused(code=b"x")),  # type: ignore[arg-type]
    ("choice not listed", lambda: m.Hello(role="relay", versions=(1,), software="")),
    ("choice is int", lambda: m.Hello(role=1, versions=(1,), software="")),  # type: ignore[arg-type]
    ("bytes too short", lambda: m.AuthChallenge(nonce=b"short")),
    ("bytes is str", lambda: m.AuthChallenge(nonce="x" * 32)),  # type: ignore[arg-type]
    ("bool is int", lambda: m.ConsentAnswer(id=1, granted=1)),  # type: ignore[arg-type]
    ("tuple is list", lambda: m.Hello(role="agent", versions=[1], software="")),  # type: ignore[arg-type]
    ("tuple item wrong", lambda: m.Hello(role="agent", versions=("1",), software="")),  # type: ignore[arg-type]
    ("tuple too long", lambda: m.Hello(role="agent", versions=tuple(range(1, 18)), software="")),
    ("tuple empty by rule", lambda: m.Hello(role="agent", versions=(), software="")),
    (
        "optional wrong",
        lambda: m.ScriptFinished(id=1, job_id="j", status="failed", finished_at=1.0, exit_code="1"),
    ),  # type: ignore[arg-type]
    (
        "tree not dict",
        lambda: m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections=[]),
    ),  # type: ignore[arg-type]
    (
        "tree int key",
        lambda: m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections={"a": {1: 2}}),
    ),  # type: ignore[dict-item]
    (
        "tree bytes key",
        lambda: m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections={b"a": 1}),
    ),  # type: ignore[dict-item]
    (
        "tree object value",
        lambda: m.DiagnosticsReport(
            id=1, device_id="d", collected_at=1.0, sections={"a": object()}
        ),
    ),
    (
        "tree int too big for msgpack",
        lambda: m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections={"a": 2**64}),
    ),
    (
        "tree nan value",
        lambda: m.DiagnosticsReport(
            id=1, device_id="d", collected_at=1.0, sections={"a": [math.nan]}
        ),
    ),
    (
        "params nested",
        lambda: m.ScriptRunRequest(id=1, device_id="d", script="s", version="1", params={"a": [1]}),
    ),  # type: ignore[dict-item]
    (
        "params int key",
        lambda: m.ScriptRunRequest(id=1, device_id="d", script="s", version="1", params={1: "a"}),
    ),  # type: ignore[dict-item]
    (
        "params nan",
        lambda: m.ScriptRunRequest(
            id=1, device_id="d", script="s", version="1", params={"a": math.nan}
        ),
    ),
    (
        "params int too big for msgpack",
        lambda: m.ScriptRunRequest(
            id=1, device_id="d", script="s", version="1", params={"a": 2**70}
        ),
    ),
    ("float field holds a huge int", lambda: m.Heartbeat(seq=1, sent_at=10**400)),
    (
        "bounded float field holds a huge int",
        lambda: m.AuthAccepted(principal="p", heartbeat_interval=10**400),
    ),
    (
        "params value longer than any manifest allows",
        lambda: m.ScriptRunRequest(
            id=1, device_id="d", script="s", version="1", params={"a": "x" * 4097}
        ),
    ),
    (
        "params name too long",
        lambda: m.ScriptRunRequest(
            id=1, device_id="d", script="s", version="1", params={"a" * 65: "x"}
        ),
    ),
    (
        "params empty name",
        lambda: m.ScriptRunRequest(id=1, device_id="d", script="s", version="1", params={"": 1}),
    ),
    *[
        (
            f"check name {name!r}",
            lambda name=name: dataclasses.replace(_ALERT, check_name=name),
        )
        # outside attack F4: a till's check name reached webhooks with ESC and bidi in it
        for name in ("", "printer\x1b[31m", "print\u202eer", "printer\u2028", "Printer", "x" * 65)
    ],
    ("alert key with a control", lambda: dataclasses.replace(_ALERT, alert_key="k\x1b")),
    (
        "params too many",
        lambda: m.ScriptRunRequest(
            id=1, device_id="d", script="s", version="1", params={str(i): i for i in range(65)}
        ),
    ),
]


@pytest.mark.parametrize(
    ("what", "build"), BAD_CONSTRUCTIONS, ids=[b[0] for b in BAD_CONSTRUCTIONS]
)
def test_invalid_message_cannot_be_built(what: str, build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LocalProtocolError):
        build()


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_tree_depth_limit_counts_the_frame_map() -> None:
    # frame map (1) + sections dict (2) + "a" list nesting...: exactly MAX_DEPTH is fine.
    ok = {"a": _nested(m.MAX_DEPTH - 2)}
    m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections=ok)  # type: ignore[arg-type]
    too_deep = {"a": _nested(m.MAX_DEPTH - 1)}
    with pytest.raises(LocalProtocolError):
        m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections=too_deep)  # type: ignore[arg-type]
    too_deep_map: dict[str, object] = {"a": 1}
    for _ in range(m.MAX_DEPTH):
        too_deep_map = {"a": too_deep_map}
    with pytest.raises(LocalProtocolError):
        m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections=too_deep_map)


def test_message_with_unsupported_annotation_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="no checker"):

        @m.message("test.bad-annotation")
        class Bad(m.Message):
            value: complex

    assert all(cls.TAG != "test.bad-annotation" for cls in MESSAGE_TYPES)


def test_optional_pipe_annotation_is_understood() -> None:
    try:

        @m.message("test.optional-pipe")
        class Piped(m.Message):
            value: int | None = m.spec(default=None)

        assert Piped().value is None
        assert Piped(value=3).value == 3
        with pytest.raises(LocalProtocolError):
            Piped(value="3")  # type: ignore[arg-type]
    finally:
        m.MESSAGE_TYPES[:] = [c for c in m.MESSAGE_TYPES if not c.TAG.startswith("test.")]


def test_to_wire_carries_tag_and_every_field() -> None:
    wire = m.Heartbeat(seq=1, sent_at=2.0).to_wire()
    assert wire == {"t": "heartbeat", "seq": 1, "sent_at": 2.0}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TAG)
def test_from_wire_is_the_inverse_of_to_wire(sample: m.Message) -> None:
    rebuilt = type(sample).from_wire(sample.to_wire())
    assert rebuilt == sample
    assert type(rebuilt) is type(sample)


def _later_fields_none(sample: m.Message) -> m.Message:
    return dataclasses.replace(sample, **dict.fromkeys(sample.LATER_FIELDS))  # type: ignore[type-var]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TAG)
def test_compiled_to_wire_gives_the_generic_map_key_for_key_in_order(sample: m.Message) -> None:
    # Each message's to_wire is written out for speed (messages._compile_to_wire); the loop in
    # Message.to_wire is the reference: same keys, same values, same order (same frame bytes).
    assert "to_wire" in type(sample).__dict__  # its own, compiled
    for message in (sample, _later_fields_none(sample)):
        assert list(message.to_wire().items()) == list(m.Message.to_wire(message).items())


def test_a_later_field_between_others_is_left_off_in_place_while_none() -> None:
    try:

        @m.message("test.later-between")
        class Between(m.Message):
            first: int = m.spec(default=0)
            added: str | None = m.spec(default=None, since=2)
            last: int = m.spec(default=0)

        assert list(Between(first=1, last=2).to_wire()) == ["t", "first", "last"]
        both = Between(first=1, added="a", last=2)
        assert list(both.to_wire().items()) == list(m.Message.to_wire(both).items())
        assert list(both.to_wire()) == ["t", "first", "added", "last"]
    finally:
        m.MESSAGE_TYPES[:] = [c for c in m.MESSAGE_TYPES if not c.TAG.startswith("test.")]


BAD_WIRE_MAPS = [
    ("missing field", {"t": "heartbeat", "seq": 1}),
    ("extra field", {"t": "heartbeat", "seq": 1, "sent_at": 2.0, "evil": 1}),
    ("renamed field", {"t": "heartbeat", "seq": 1, "sent": 2.0}),
    ("bytes key", {"t": "heartbeat", b"seq": 1, "sent_at": 2.0}),
    ("no tag", {"seq": 1, "sent_at": 2.0, "x": 0}),
    ("other tag", {"t": "heartbeat.ack", "seq": 1, "sent_at": 2.0}),
    ("bad value", {"t": "heartbeat", "seq": -1, "sent_at": 2.0}),
    ("bad float", {"t": "heartbeat", "seq": 1, "sent_at": math.nan}),
]


@pytest.mark.parametrize(("what", "wire"), BAD_WIRE_MAPS, ids=[b[0] for b in BAD_WIRE_MAPS])
def test_from_wire_refuses_what_the_constructor_refuses(what: str, wire: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(LocalProtocolError):
        m.Heartbeat.from_wire(wire)


def test_from_wire_applies_cross_field_rules() -> None:
    wire = {"t": "hello", "role": "agent", "versions": (), "software": ""}
    with pytest.raises(LocalProtocolError, match="versions is empty"):
        m.Hello.from_wire(wire)


def _outcome(from_wire: object, cls: type, wire: dict) -> object:  # type: ignore[type-arg]
    try:
        return from_wire(cls, wire)  # type: ignore[operator]
    except LocalProtocolError as exc:
        return ("refused", str(exc))


_GENERIC = m.Message.from_wire.__func__  # type: ignore[attr-defined]
_CANDIDATES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    1.5,
    -0.5,
    math.nan,
    math.inf,
    "",
    "x",
    "stdout",
    "agent",
    "succeeded",
    "x" * 65,
    "x" * 129,
    "x" * 4097,
    b"",
    b"x",
    b"x" * (64 * 1024 + 1),
    (),
    (1,),
    (1,) * 17,
    ("a",),
    {},
    {"a": 1},
    {"a": b"x"},
    [1],
]


def _boundaries(cls: type[m.Message], field: str) -> list[object]:
    # Each inlined checker's own constants, and one either side of every number among them.
    for name, ok, _ in cls.SETTERS:
        if name == field and ok in m._INLINE:
            values: list[object] = []
            for constant in m._INLINE[ok][1]:
                if type(constant) is int:
                    values += [constant - 1, constant, constant + 1]
                    if 0 <= constant <= 1 << 20:  # a string or bytes of that length, and one more
                        values += ["x" * constant, "x" * (constant + 1), b"x" * (constant + 1)]
                elif isinstance(constant, frozenset):
                    values += sorted(constant)
            return values
    return []


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TAG)
def test_compiled_from_wire_agrees_with_the_generic_one_on_every_bad_value(
    sample: m.Message,
) -> None:
    # Each message's from_wire is written out for speed (messages._compile_from_wire); the loop
    # in Message.from_wire is the reference. Same message, or the same refusal, for every field
    # holding every candidate value, and for a wrong set of fields or tag.
    cls = type(sample)
    good = sample.to_wire()
    assert "from_wire" in cls.__dict__  # its own, compiled
    wires = [good, {**good, "t": "other"}, {**good, "extra": 1}]
    wires += [{k: v for k, v in good.items() if k != field} for field in cls.FIELDS]
    for field in cls.FIELDS:
        for value in _CANDIDATES + _boundaries(cls, field):
            wires.append({**good, field: value})
    refused = 0
    for wire in wires:
        compiled = _outcome(cls.from_wire.__func__, cls, wire)  # type: ignore[attr-defined]
        assert compiled == _outcome(_GENERIC, cls, wire), wire
        refused += isinstance(compiled, tuple)
    assert 0 < refused < len(wires)


def test_tree_holds_every_msgpack_type_at_any_position() -> None:
    sections = {
        "a": [1.5, -(2**63), 2**64 - 1, "x", b"y", None, True, {"k": 0.5, "n": 1}, (1, [2.0])],
        "b": {"inner": {"deeper": 3}, "after": 0.25},
        "c": 7,
    }
    report = m.DiagnosticsReport(id=1, device_id="d", collected_at=1.0, sections=sections)
    codec = Codec()
    frame = codec.encode(report)
    # decoded arrays are tuples, so compare what goes on the wire
    assert codec.encode(codec.decode(frame)) == frame


def test_field_named_like_the_tag_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="wire tag"):

        @m.message("test.field-t")
        class Clash(m.Message):
            t: int

    assert all(cls.TAG != "test.field-t" for cls in MESSAGE_TYPES)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if "id" in s.FIELDS], ids=lambda s: s.TAG)
def test_with_id_copies_under_a_new_id_and_keeps_everything_else(sample: m.Message) -> None:
    moved = sample.with_id(12345)
    assert moved.id == 12345  # type: ignore[attr-defined]
    assert type(moved) is type(sample)
    assert moved == dataclasses.replace(sample, id=12345)  # type: ignore[type-var]
    assert sample.id != 12345  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [0, -1, 2**63, True, "7", 1.0])
def test_with_id_refuses_bad_ids_and_messages_without_ids(bad: object) -> None:
    request = m.DiagnosticsRequest(id=1, device_id="d")
    with pytest.raises(LocalProtocolError):
        request.with_id(bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        m.Heartbeat(seq=1, sent_at=1.0).with_id(5)


# --- DeviceFacts: a small, bounded, JSON-compatible map (docs/protocol.md#device-facts) ----------


def _facts(**facts: object) -> m.DeviceFacts:
    return m.DeviceFacts(facts=facts)


BAD_FACTS = [
    ("not a map", [("hostname", "x")]),
    ("int key", {1: "x"}),
    ("bytes key", {b"hostname": "x"}),
    ("int key inside a map", {"cpu": {1: 2}}),
    ("int key inside a list entry", {"printers": [{1: "x"}]}),
    ("empty key", {"": "x"}),
    ("key with capitals", {"Hostname": "x"}),
    ("key with a space", {"host name": "x"}),
    ("key starting with a digit", {"1st": "x"}),
    ("key with a newline", {"hostname\n": "x"}),
    ("key too long", {"k" * (m.MAX_FACT_KEY + 1): 1}),
    ("inner key too long", {"cpu": {"k" * (m.MAX_FACT_KEY + 1): 1}}),
    ("too many keys", {f"k{i}": i for i in range(m.MAX_FACTS + 1)}),
    ("string too long", {"hostname": "x" * (m.MAX_FACT_TEXT + 1)}),
    ("string too long in a list", {"tags": ["x" * (m.MAX_FACT_TEXT + 1)]}),
    ("string too long in a row", {"printers": [{"name": "x" * (m.MAX_FACT_TEXT + 1)}]}),
    ("list too long", {"tags": list(range(m.MAX_FACT_ITEMS + 1))}),
    ("inner map too big", {"cpu": {f"k{i}": i for i in range(m.MAX_FACT_ITEMS + 1)}}),
    ("row too big", {"printers": [{f"k{i}": i for i in range(m.MAX_FACT_ITEMS + 1)}]}),
    (
        "all text over the total",
        {f"k{i}": [("x" * 200)] * 2 for i in range(m.MAX_FACTS_TEXT // 400 + 1)},
    ),
    ("bytes value", {"hostname": b"TILL-01"}),
    ("bytes in a list", {"tags": [b"x"]}),
    ("object value", {"hostname": object()}),
    ("nan", {"load": math.nan}),
    ("infinity in a map", {"cpu": {"load": math.inf}}),
    ("int beyond 2**53", {"memory": 2**53 + 1}),
    ("int below -2**53", {"memory": -(2**53) - 1}),
    ("control character", {"hostname": "TILL\x1b[2J"}),
    ("C1 control character", {"hostname": "TILL\x9b"}),
    ("DEL in a row", {"printers": [{"name": "a\x7f"}]}),
    ("map in a map", {"cpu": {"inner": {"x": 1}}}),
    ("list in a map", {"cpu": {"inner": [1]}}),
    ("list in a list", {"tags": [[1]]}),
    ("map in a row", {"printers": [{"name": {"x": 1}}]}),
    ("list in a row", {"printers": [{"name": [1]}]}),
    ("set value", {"tags": {1, 2}}),
    # found in the outside attack (F3): facts a console computes with have their type
    ("a word for a count", {"printers": [{"name": "p"}], "printers_omitted": "many"}),
    ("a bool for a count", {"serial_ports_omitted": True}),
    ("a negative count", {"printers_omitted": -1}),
    ("a float for a count", {"printers_omitted": 1.5}),
    ("printers not a list", {"printers": "p"}),
    ("serial ports a map", {"serial_ports": {"device": "COM1"}}),
]


@pytest.mark.parametrize(("what", "facts"), BAD_FACTS, ids=[b[0] for b in BAD_FACTS])
def test_bad_facts_cannot_be_built_or_decoded(what: str, facts: object) -> None:
    with pytest.raises(LocalProtocolError, match=r"DeviceFacts\.facts"):
        m.DeviceFacts(facts=facts)  # type: ignore[arg-type]
    assert m.facts_size(facts) == -1 or m.facts_size(facts) > m.MAX_FACTS_TEXT
    try:
        frame = msgpack.packb({"t": "agent.facts", "facts": facts})
    except TypeError:
        return  # msgpack can't carry it (an object, a set): no peer can send it either
    with pytest.raises(RemoteProtocolError) as info:
        Codec().decode(frame)
    assert info.value.close_code == 1007
    if isinstance(info.value, InvalidMessage):
        assert info.value.tag == "agent.facts"  # known tag, safe to log or audit


def test_facts_at_every_limit_are_accepted() -> None:
    facts: dict[str, object] = {
        "k" * m.MAX_FACT_KEY: "x" * m.MAX_FACT_TEXT,
        "tags": tuple(range(m.MAX_FACT_ITEMS)),
        "cpu": {f"k{i}": i for i in range(m.MAX_FACT_ITEMS)},
        "printers": tuple({f"k{i}": None for i in range(m.MAX_FACT_ITEMS)} for _ in range(2)),
        "big": 2**53,
        "small": -(2**53),
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "zh": "收银机一号",
    }
    facts.update((f"f{i:02d}", "") for i in range(m.MAX_FACTS - len(facts)))
    assert len(facts) == m.MAX_FACTS
    built = m.DeviceFacts(facts=facts)
    codec = Codec()
    assert codec.decode(codec.encode(built)) == built


def _text_of(total: int) -> dict[str, object]:
    """Facts whose keys and strings hold exactly ``total`` characters."""
    facts: dict[str, object] = {}
    left = total
    while left:
        key = f"f{len(facts):02d}"
        left -= len(key)
        chunk: list[str] = []
        while left and len(chunk) < m.MAX_FACT_ITEMS:
            chunk.append("y" * min(left, m.MAX_FACT_TEXT))
            left -= len(chunk[-1])
        facts[key] = tuple(chunk)
    return facts


def test_facts_total_text_limit_is_exact() -> None:
    at_limit = _text_of(m.MAX_FACTS_TEXT)
    assert m.facts_size(at_limit) == m.MAX_FACTS_TEXT
    m.DeviceFacts(facts=at_limit)
    over = _text_of(m.MAX_FACTS_TEXT + 1)
    assert m.facts_size(over) == m.MAX_FACTS_TEXT + 1
    with pytest.raises(LocalProtocolError):
        m.DeviceFacts(facts=over)


def test_facts_size_counts_keys_and_strings() -> None:
    assert m.facts_size({}) == 0
    assert m.facts_size({"os": "Linux", "bits": 64}) == len("os") + 5 + len("bits")
    assert m.facts_size({"printers": [{"name": "ab"}, "cd"]}) == len("printers") + 4 + 2 + 2


# --- fields added by a later version, job.query and job.results (protocol v3) ------------------


def test_a_later_field_is_left_off_the_wire_while_none() -> None:
    run = m.ScriptRunRequest(id=1, device_id="d", script="s", version="1")
    assert "job_id" not in run.to_wire()  # what a v1/v2 agent knows, byte for byte
    assert CODEC.encode(run) == CODEC.encode_with_id(run.with_id(7), 1)
    with_job = m.ScriptRunRequest(id=1, device_id="d", script="s", version="1", job_id="job-1")
    assert with_job.to_wire()["job_id"] == "job-1"
    assert CODEC.decode(CODEC.encode_with_id(with_job, 5)) == with_job.with_id(5)


def test_a_map_without_the_later_field_decodes_and_one_without_a_required_field_does_not() -> None:
    old = {"t": "script.restore", "id": 1, "device_id": "d", "backup_id": "bk"}
    assert m.ScriptRestoreRequest.from_wire(old).job_id is None
    assert _GENERIC(m.ScriptRestoreRequest, old) == m.ScriptRestoreRequest.from_wire(old)
    missing = {"t": "script.restore", "id": 1, "device_id": "d", "job_id": "job-1"}
    with pytest.raises(LocalProtocolError, match="wrong set of fields"):
        m.ScriptRestoreRequest.from_wire(missing)
    with pytest.raises(LocalProtocolError, match="wrong set of fields"):
        _GENERIC(m.ScriptRestoreRequest, missing)
    with pytest.raises(LocalProtocolError, match="job_id has a bad value"):
        m.ScriptRestoreRequest.from_wire({**old, "job_id": ""})


def test_a_later_field_must_default_to_none() -> None:
    with pytest.raises(TypeError, match="default to None"):
        m.spec(default="", since=3)


def _result(**changes: object) -> dict[str, object]:
    result: dict[str, object] = {
        "job_id": "job-1",
        "status": "succeeded",
        "exit_code": 0,
        "finished_at": 2.0,
        "backup_id": "bk-1",
        "detail": "",
    }
    result.update(changes)
    return result


BAD_RESULTS = [
    ("missing key", {k: v for k, v in _result().items() if k != "detail"}),
    ("extra key", _result(user="admin")),
    ("empty job id", _result(job_id="")),
    ("job id not str", _result(job_id=1)),
    ("status not listed", _result(status="pending")),
    ("exit code not int", _result(exit_code="0")),
    ("exit code huge", _result(exit_code=2**40)),
    ("finished_at nan", _result(finished_at=math.nan)),
    ("finished_at str", _result(finished_at="now")),
    ("backup id empty", _result(backup_id="")),
    ("backup id not str", _result(backup_id=3)),
    ("detail too long", _result(detail="x" * 1025)),
    ("detail not str", _result(detail=None)),
]


@pytest.mark.parametrize(("what", "result"), BAD_RESULTS, ids=[b[0] for b in BAD_RESULTS])
def test_a_bad_job_result_cannot_be_built_or_decoded(what: str, result: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        m.JobResults(id=1, results=(result,))
    wire = {"t": "job.results", "id": 1, "results": (result,)}
    with pytest.raises(LocalProtocolError):
        m.JobResults.from_wire(wire)


def test_job_results_accept_every_status_and_empty_optionals() -> None:
    results = tuple(
        _result(job_id=f"job-{i}", status=status, exit_code=None, finished_at=None, backup_id=None)
        for i, status in enumerate(m.JOB_RESULT_STATUSES)
    )
    msg = m.JobResults(id=1, results=results)
    assert CODEC.decode(CODEC.encode(msg)) == msg
    assert m.JobResults(id=1, results=(_result(finished_at=3),)).results[0]["finished_at"] == 3


@pytest.mark.parametrize(
    "job_ids", [(), ("",), ("x" * 65,), tuple(f"j{i}" for i in range(m.MAX_JOB_QUERY + 1))]
)
def test_a_bad_job_query_cannot_be_built(job_ids: tuple[str, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        m.JobQuery(id=1, job_ids=job_ids)


@pytest.mark.parametrize("job_id", ["", "j" * 65])
def test_a_cancel_names_one_job(job_id: str) -> None:
    with pytest.raises(LocalProtocolError):
        m.ScriptCancel(id=1, job_id=job_id)
    wire = {"t": "script.cancel", "id": 1, "job_id": job_id}
    with pytest.raises(InvalidMessage):
        CODEC.decode(msgpack.packb(wire))
