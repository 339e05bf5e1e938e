"""The run form's ``pattern`` attribute: a manifest's Python pattern converted for a browser's
``v``-flag regular expressions (where ``[A-Za-z0-9-]`` is invalid, so the browser checked
nothing), or left out when it can't be converted; and a parameter refusal's words in zh+en."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from posassist.relay.scripts_repo import param_reason
from posassist.relay.web.pattern import html_pattern

ROOT = Path(__file__).resolve().parents[2]
HOST = (
    r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
CASES = [
    (r"[A-Za-z0-9-]", r"[A-Za-z0-9\-]"),
    (r"[-a]", r"[\-a]"),
    (r"[^-a]", r"[^\-a]"),
    (r"[a-z-0]", r"[a-z\-0]"),
    (r"[a\-b]", r"[a\-b]"),
    (r"[A-Za-z0-9 _.()一-鿿-]", r"[A-Za-z0-9 _\.\(\)一-鿿\-]"),
    (r"[A-Za-z0-9&_.+\\]", r"[A-Za-z0-9\&_\.\+\\]"),
    (r"COM[1-9][0-9]{0,2}|/dev/tty(?:S|USB|ACM)[0-9]{1,3}", None),  # unchanged
    (r"MSSQL\$[A-Za-z0-9_]{1,16}", None),
    (r"[0-9A-Fa-f]{4}", None),
]


@pytest.mark.parametrize(("python", "browser"), CASES)
def test_a_pattern_is_converted_for_v_mode(python: str, browser: str | None) -> None:
    assert html_pattern(python) == (browser or python)


@pytest.mark.parametrize(
    "python", [r"x(?P<n>a)", r"\Aab\Z", r"(?i)abc", r"[[]", r"[abc", r"[\x41]", "", None]
)
def test_a_pattern_that_cannot_be_converted_is_left_out(python: str | None) -> None:
    assert html_pattern(python) is None


def _catalog_patterns() -> list[str]:
    found = set()
    for manifest in sorted((ROOT / "catalog").glob("*/manifest.json")):
        params = json.loads(manifest.read_text(encoding="utf-8")).get("params") or {}
        for param in params.values():
            if isinstance(param, dict) and param.get("pattern"):
                found.add(param["pattern"])
    return sorted(found)


def test_every_catalog_pattern_converts_and_accepts_what_python_accepts() -> None:
    patterns = _catalog_patterns()
    assert HOST in patterns
    samples = ["till-printer", "bad host!", "10.0.0.7", "COM3", "-x", "a.b-c", "收银 (1)", "a&b"]
    for python in patterns:
        browser = html_pattern(python)
        assert browser is not None, python
        for sample in samples:  # the same strings pass and fail (Python reads the escapes too)
            assert bool(re.fullmatch(browser, sample)) == bool(re.fullmatch(python, sample))


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to compile v-mode regexps")
def test_converted_patterns_compile_in_v_mode_where_the_originals_do_not() -> None:
    script = (
        "const out = {};"
        "for (const p of JSON.parse(process.argv[1])) {"
        " try { new RegExp('^(?:' + p + ')$', 'v'); out[p] = true } catch (e) { out[p] = false } }"
        "console.log(JSON.stringify(out))"
    )
    patterns = _catalog_patterns()
    converted = [html_pattern(p) or "" for p in patterns]
    ran = subprocess.run(
        ["node", "-e", script, json.dumps(patterns + converted)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    compiled = json.loads(ran.stdout)
    assert compiled[HOST] is False  # the walk's finding: invalid as it stands
    assert all(compiled[c] for c in converted)


def test_a_parameter_refusal_is_said_in_chinese_and_english() -> None:
    said = param_reason("parameter 'host' does not match its pattern")
    assert said == "参数 host: 格式不对 / parameter 'host' does not match its pattern"
    assert param_reason("parameter 'port' is above its maximum 65535").startswith(
        "参数 port: 大于最大值 65535 / "
    )
    assert param_reason("unknown parameter(s): evil").startswith("未知参数: evil / ")
    assert param_reason("something new") == "something new"
