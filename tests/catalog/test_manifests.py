"""Every shipped catalog script: its manifest parses, its files exist, its parameters refuse
injection, and its code builds no shell strings (issue 6, docs/scripts.md)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from typing import Any

import pytest

from posassist.protocol.manifest import Param, ParamError, validate_params
from tests.catalog.conftest import CATALOG, SCRIPT_IDS, load

INJECTIONS = [
    "; rm -rf /",
    "$(reboot)",
    "`reboot`",
    "../../etc/passwd",
    "..\\..\\Windows\\System32",
    "COM3; rm -rf /",
    "a && b",
    "x | y",
    "line\nbreak",
]


def test_the_catalog_has_at_least_the_ten_issue_6_remediations() -> None:
    assert len(SCRIPT_IDS) >= 10
    for needed in [
        "printer-status-test",
        "cups-clear-queue",
        "restart-pos-service",
        "resync-clock",
        "clean-temp-folders",
        "collect-log-bundle",
        "fix-printer-port",
        "flush-dns",
        "reset-usb-serial",
        "drawer-kick-test",
    ]:
        assert needed in SCRIPT_IDS


@pytest.mark.parametrize("script_id", SCRIPT_IDS)
def test_manifest_parses_and_lists_files_that_exist(script_id: str) -> None:
    manifest, folder = load(script_id)
    assert manifest.id == script_id  # the folder is named after the id
    for name in manifest.files:
        assert (folder / name).is_file(), name
    # nothing unlisted ships in the folder: the signed target is exactly these files
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        [*manifest.files, "manifest.json"]
    )
    for zh, en in (manifest.title, manifest.description, manifest.changes):
        assert re.search(r"[\u4e00-\u9fff]", zh), "zh text has Chinese"
        assert en.isascii()
    assert manifest.expected_duration <= manifest.timeout
    if manifest.risk == "C":
        assert manifest.consent
        assert not manifest.unattended
        assert manifest.approvals_needed == 2
    if manifest.risk in ("B", "C"):
        assert manifest.consent
        assert not manifest.unattended
        assert any(p.kind == "no_sale_open" for p in manifest.preconditions)
    if manifest.interpreter == "powershell":
        assert manifest.platforms == ("windows",)
        assert all(p.pass_as == "env" for p in manifest.params)


def _sample(param: Param) -> Any:
    """A valid value, to prove the schema is not simply refusing everything."""
    if param.default is not None:
        return param.default
    samples = {
        "queue": "receipt_printer",
        "unit": "demo-pos.service",
        "device": "ttyUSB0",
        "instance_id": r"USB\VID_1A86&PID_7523\5&2C8E1B2&0&2",
        "host": "192.168.1.50",
        "check_host": "pay.example.com",
        "serial": "/dev/ttyUSB0",
        "port": "COM7",
        "address": "192.168.1.50:9100",
        "usb_vendor": "1A86",
        "usb_product": "7523",
        "zone": "Asia/Shanghai",
        "printer": "POS-80 收据",
        "process_id": 4242,
    }
    if param.type == "enum":
        return param.choices[0]
    return samples[param.name]


@pytest.mark.parametrize("script_id", SCRIPT_IDS)
def test_every_parameter_refuses_shell_injection_and_traversal(script_id: str) -> None:
    manifest, _ = load(script_id)
    base: dict[str, Any] = {p.name: _sample(p) for p in manifest.params if p.required}
    for param in manifest.params:
        good = dict(base, **{param.name: _sample(param)})
        validate_params(manifest, good)
        good_text = str(_sample(param)).lower()
        for bad in [*INJECTIONS, *(good_text + s for s in ("; rm -rf /", "$(id)", "`id`"))]:
            with pytest.raises(ParamError):  # numbers and booleans refuse any text
                validate_params(manifest, dict(base, **{param.name: bad}))
        if param.type == "integer":
            assert param.minimum is not None
            assert param.maximum is not None
            with pytest.raises(ParamError):
                validate_params(manifest, dict(base, **{param.name: int(param.maximum) + 1}))
        if param.type == "string":
            assert param.pattern is not None, "catalog strings always carry a pattern"
            with pytest.raises(ParamError):
                validate_params(manifest, dict(base, **{param.name: "a" * 5000}))


def test_a_parameter_can_never_become_the_test_root_variable() -> None:
    manifest, _ = load("reset-usb-serial-windows")
    _, env = validate_params(manifest, {"instance_id": r"USB\VID_1A86&PID_7523\1"})
    assert all(k.startswith("POSASSIST_PARAM_") for k in env)
    for script_id in SCRIPT_IDS:
        assert all(p.name != "test_root" for p in load(script_id)[0].params)


PY_SCRIPTS = sorted(
    (sid, name) for sid in SCRIPT_IDS for name in load(sid)[0].files if name.endswith(".py")
)


@pytest.mark.parametrize(("script_id", "name"), PY_SCRIPTS)
def test_python_scripts_run_no_shell_and_import_only_the_standard_library(
    script_id: str, name: str
) -> None:
    source = (CATALOG / script_id / name).read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    allowed = {
        "argparse", "bisect", "csv", "io", "json", "os", "re", "socket", "stat", "subprocess",
        "sys", "time", "serial", "winreg",
    }  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= allowed
        if isinstance(node, ast.ImportFrom):
            assert node.module in allowed
        if isinstance(node, ast.keyword):
            assert node.arg != "shell"
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("system", "popen", "Popen", "getoutput", "getstatusoutput")
            assert node.attr not in ("call", "check_output", "check_call")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run":
            first = node.args[0]
            assert not isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)), (
                "subprocess.run takes an argv list"
            )
    assert "eval(" not in source
    assert "exec(" not in source


PY38 = CATALOG.parent / ".venv38" / "bin" / "python"


@pytest.mark.py38
def test_python_scripts_compile_under_python_3_8() -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it (docs/windows7.md)")
    py38 = str(PY38)
    for script_id, name in PY_SCRIPTS:
        path = CATALOG / script_id / name
        check = "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')"
        subprocess.run([py38, "-c", check, str(path)], check=True, timeout=30)  # no .pyc written


def test_the_escpos_tool_is_the_same_file_in_both_printer_scripts() -> None:
    a = (CATALOG / "printer-status-test" / "escpos_tool.py").read_bytes()
    assert a == (CATALOG / "drawer-kick-test" / "escpos_tool.py").read_bytes()


def test_manifests_are_plain_json_with_no_unknown_keys() -> None:
    known = {
        "id", "version", "title", "description", "changes", "platforms", "interpreter", "entry",
        "files", "risk", "consent", "unattended", "preconditions", "params", "timeout",
        "max_output", "backup", "expected_duration",
    }  # fmt: skip
    for script_id in SCRIPT_IDS:
        raw = json.loads((CATALOG / script_id / "manifest.json").read_text(encoding="utf-8"))
        assert set(raw) == known, script_id


def test_shared_helper_copies_stay_identical() -> None:
    # Each script is a self-contained signed unit, so a helper two scripts use is copied into
    # both folders; this keeps the copies from drifting apart (fix one, fix both, re-sign both).
    from pathlib import Path

    catalog = Path(__file__).resolve().parents[2] / "catalog"
    copies: dict[str, list[bytes]] = {}
    for path in catalog.glob("*/*.py"):
        if path.name not in ("run.py", "__init__.py"):
            copies.setdefault(path.name, []).append(path.read_bytes())
    shared = {name: texts for name, texts in copies.items() if len(texts) > 1}
    assert {"escpos_tool.py", "cups_queue.py", "restart_service.py", "udev_rule.py"} <= set(shared)
    for name, texts in shared.items():
        assert len(set(texts)) == 1, f"copies of {name} differ"
