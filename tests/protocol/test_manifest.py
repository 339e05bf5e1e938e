"""Script manifests validate strictly, and so do a run's parameters (issue 6's bad inputs)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from posassist.protocol.manifest import ManifestError, ParamError, parse_manifest, validate_params

GOOD: dict[str, Any] = {
    "id": "printer-port-fix",
    "version": "1.2.0",
    "title": {"zh": "修正打印机端口", "en": "Fix the printer port"},
    "description": {"zh": "把收银软件的打印机端口改成正确的", "en": "Point the POS at the port"},
    "changes": {"zh": "修改收银配置文件", "en": "Edits the POS configuration file"},
    "platforms": ["linux", "windows"],
    "interpreter": "python",
    "entry": "run.py",
    "files": ["run.py", "lib.py"],
    "risk": "C",
    "consent": True,
    "unattended": False,
    "preconditions": [
        {"kind": "no_sale_open"},
        {"kind": "outside_hours", "open": "09:00", "close": "22:00"},
        {"kind": "process_stopped", "process": "pos.exe"},
        {"kind": "pos_stopped"},
    ],
    "params": {
        "port": {
            "type": "string",
            "required": True,
            "pattern": "(COM[0-9]{1,2}|/dev/tty[A-Za-z0-9]{1,8})",
        },
        "baud": {"type": "enum", "enum": ["9600", "19200", "38400"], "default": "9600"},
        "copies": {"type": "integer", "min": 1, "max": 5, "default": 1},
        "delay": {"type": "number", "min": 0, "max": 2.5},
        "cut": {"type": "boolean", "pass_as": "env"},
        "config": {"type": "path", "max_length": 64},
        "note": {"type": "string", "max_length": 16},
    },
    "timeout": 60,
    "max_output": 65536,
    "backup": ["${POS_DATA}/config.ini"],
    "expected_duration": 5,
}


def test_good_manifest_parses() -> None:
    manifest = parse_manifest(GOOD)
    assert manifest.id == "printer-port-fix"
    assert manifest.title == ("修正打印机端口", "Fix the printer port")
    assert manifest.approvals_needed == 2
    assert [p.name for p in manifest.params] == sorted(GOOD["params"])
    assert [p.kind for p in manifest.preconditions] == [
        "no_sale_open",
        "outside_hours",
        "process_stopped",
        "pos_stopped",
    ]
    low = parse_manifest({**GOOD, "risk": "A", "unattended": True})
    assert low.approvals_needed == 1


def _broken(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


class _Delete:
    """The field is left out (a stable repr: xdist workers must collect the same test ids)."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
BAD_MANIFESTS = [
    ("id", "Bad_ID"),
    ("version", "1.0"),
    ("id", 5),
    ("title", {"zh": "x"}),
    ("title", {"zh": "x" * 2001, "en": "y"}),
    ("interpreter", "bash"),
    ("risk", "D"),
    ("files", ["../evil.py"]),
    ("files", "run.py"),
    ("entry", "other.py"),
    ("platforms", []),
    ("platforms", ["dos"]),
    ("params", []),
    ("preconditions", {}),
    ("preconditions", [{"kind": "full_moon"}]),
    ("preconditions", [{"kind": "process_stopped"}]),
    ("preconditions", [{"kind": "outside_hours", "open": "9am", "close": "22:00"}]),
    ("preconditions", [{"kind": "outside_hours"}]),
    ("backup", ["../../etc/passwd"]),
    ("consent", "yes"),
    ("unattended", True),
    ("timeout", 0),
    ("timeout", True),
    ("max_output", 10),
    ("expected_duration", DELETE),
    ("params.port.type", "file"),
    ("params.baud.enum", []),
    ("params.port.pattern", "(unclosed"),
    ("params.copies.min", "one"),
    ("params.copies.max_length", 0),
    ("params.cut.pass_as", "stdin"),
    ("params.note.allow_dash", "yes"),
    ("params.copies.default", 9),
    ("params.Bad Name", {"type": "string"}),
]


@pytest.mark.parametrize(
    ("path", "value"), BAD_MANIFESTS, ids=[f"{p}={v!r}"[:40] for p, v in BAD_MANIFESTS]
)
def test_bad_manifest_is_refused(path: str, value: Any) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_broken(path, value))
    assert info.value.public_reason == "invalid script manifest"


def test_manifest_must_be_an_object() -> None:
    with pytest.raises(ManifestError):
        parse_manifest([GOOD])
    with pytest.raises(ManifestError):
        parse_manifest({**GOOD, "params": {f"p{i}": {"type": "string"} for i in range(33)}})


def test_params_become_argv_and_env_never_a_shell_string() -> None:
    manifest = parse_manifest(GOOD)
    argv, env = validate_params(
        manifest, {"port": "COM3", "copies": 2, "delay": 0.5, "cut": True, "config": "pos/app.ini"}
    )
    assert argv == [
        "--baud",
        "9600",
        "--config",
        "pos/app.ini",
        "--copies",
        "2",
        "--delay",
        "0.5",
        "--port",
        "COM3",
    ]
    assert env == {"POSASSIST_PARAM_CUT": "true"}
    assert validate_params(manifest, {"port": "/dev/ttyS0", "cut": False})[1] == {
        "POSASSIST_PARAM_CUT": "false"
    }


ATTACKS = [
    ({"port": "COM3; rm -rf /"}, "does not match its pattern"),
    ({"port": "COM3", "note": "; rm -rf /"}, "not allowed"),
    ({"port": "COM3", "note": "$(reboot)"}, "not allowed"),
    ({"port": "COM3", "note": "`reboot`"}, "not allowed"),
    ({"port": "COM3", "note": "a\nb"}, "not allowed"),
    ({"port": "COM3", "config": "../../etc/shadow"}, "relative path"),
    ({"port": "COM3", "config": "/etc/shadow"}, "relative path"),
    ({"port": "COM3", "config": "C:/Windows/win.ini"}, "not allowed|relative path"),
    ({"port": "COM3", "config": "a//b"}, "relative path"),
    ({"port": "COM3", "baud": "115200"}, "must be one of"),
    ({"port": "COM3", "copies": 6}, "above its maximum"),
    ({"port": "COM3", "copies": 0}, "below its minimum"),
    ({"port": "COM3", "copies": "2"}, "must be an integer"),
    ({"port": "COM3", "copies": True}, "must be an integer"),
    ({"port": "COM3", "delay": math.nan}, "finite"),
    ({"port": "COM3", "delay": "fast"}, "must be a number"),
    ({"port": "COM3", "cut": "yes"}, "true or false"),
    ({"port": "COM3", "note": "x" * 17}, "longer than 16"),
    ({"port": 3}, "must be text"),
    ({}, "'port' is required"),
    ({"port": "COM3", "evil": "1"}, "unknown parameter"),
    ({"port": "COM3", "note": "-x"}, "may not start with '-'"),
    ({"port": "COM3", "note": "--exec=rm"}, "may not start with '-'"),
    ({"port": "COM3", "config": "-rf"}, "may not start with '-'"),
]


@pytest.mark.parametrize(("params", "message"), ATTACKS, ids=[repr(a[0])[:40] for a in ATTACKS])
def test_bad_parameters_are_refused_without_echoing_them(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParamError, match=message) as info:
        validate_params(parse_manifest(GOOD), params)
    assert "rm -rf" not in str(info.value)
    assert "reboot" not in str(info.value)


def test_a_value_starting_with_a_dash_needs_the_manifests_allow_dash() -> None:
    raw = {**GOOD, "params": {**GOOD["params"]}}
    raw["params"]["note"] = {"type": "string", "max_length": 16, "allow_dash": True}
    raw["params"]["offset"] = {"type": "integer", "min": -9, "max": 9}
    raw["params"]["shift"] = {"type": "number", "min": -9, "max": 9, "allow_dash": True}
    manifest = parse_manifest(raw)
    argv, _ = validate_params(manifest, {"port": "COM3", "note": "-x", "shift": -1.5})
    assert argv[argv.index("--note") + 1] == "-x"
    assert argv[argv.index("--shift") + 1] == "-1.5"
    with pytest.raises(ParamError, match="may not be negative"):
        validate_params(manifest, {"port": "COM3", "offset": -1})
    assert validate_params(manifest, {"port": "COM3", "offset": 0})[0]
