"""Vetted-script manifests and parameter validation (docs/scripts.md#manifest). Pure.

The manifest travels inside the signed TUF target's custom metadata, so the relay can't alter it;
the agent validates it, and a run's parameters against its schema, before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .errors import EXIT_USAGE, PosAssistError

__all__ = [
    "INTERPRETERS",
    "PLATFORMS",
    "Manifest",
    "ManifestError",
    "Param",
    "ParamError",
    "Precondition",
    "parse_manifest",
    "validate_params",
]

PLATFORMS = ("linux", "windows")
INTERPRETERS = ("python", "sh", "powershell", "cmd")
RISKS = ("A", "B", "C")  # A read only, B restarts or clears something, C changes config or data
PRECONDITIONS = ("no_sale_open", "outside_hours", "pos_stopped", "process_stopped")
PARAM_TYPES = ("string", "integer", "number", "boolean", "enum", "path")
_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{1,63}\Z")
_VERSION = re.compile(r"\A\d{1,4}\.\d{1,4}\.\d{1,4}\Z")
_NAME = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
_FILE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_HHMM = re.compile(r"\A([01]\d|2[0-3]):[0-5]\d\Z")
#: What a string parameter may hold unless its manifest gives a stricter pattern: no shell
#: metacharacters, quotes, NUL or newlines, even though parameters never meet a shell.
SAFE_TEXT = re.compile(r"\A[\w .,:@+/=-]*\Z", re.UNICODE)
MAX_TIMEOUT = 3600.0
MAX_OUTPUT = 16 * 1024 * 1024

Scalar = Union[str, int, float, bool]


class ManifestError(PosAssistError):
    """A manifest that does not follow docs/scripts.md#manifest: the script is refused."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "invalid script manifest"
    public_reason_zh = "脚本清单无效"


class ParamError(PosAssistError):
    """A run's parameters do not fit the script's schema: nothing runs."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "invalid script parameters"
    public_reason_zh = "脚本参数无效"


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter's schema; values reach the script as argv (``--name value``) or env."""

    name: str
    type: str
    required: bool = False
    default: Optional[Scalar] = None
    choices: Tuple[str, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    pattern: Optional[str] = None
    max_length: int = 256
    pass_as: str = "argv"
    allow_dash: bool = False


@dataclasses.dataclass(frozen=True)
class Precondition:
    """Something that must hold on the till before the script may start."""

    kind: str
    process: str = ""
    open_at: str = ""
    close_at: str = ""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated manifest. Texts are (zh, en) pairs: merchants read Chinese first."""

    id: str
    version: str
    title: Tuple[str, str]
    description: Tuple[str, str]
    changes: Tuple[str, str]
    platforms: Tuple[str, ...]
    interpreter: str
    entry: str
    files: Tuple[str, ...]
    risk: str
    consent: bool
    unattended: bool
    preconditions: Tuple[Precondition, ...]
    params: Tuple[Param, ...]
    timeout: float
    max_output: int
    backup: Tuple[str, ...]
    expected_duration: float

    @property
    def approvals_needed(self) -> int:
        """Targets-role signatures a version needs: two for risk C, one otherwise."""
        return 2 if self.risk == "C" else 1


def _get(raw: Mapping[str, Any], key: str, kind: Union[type, Tuple[type, ...]]) -> Any:
    value = raw.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ManifestError(f"{key!r} is missing or has the wrong type")
    return value


def _text(raw: Mapping[str, Any], key: str) -> Tuple[str, str]:
    value = _get(raw, key, dict)
    zh, en = value.get("zh"), value.get("en")
    if not (isinstance(zh, str) and isinstance(en, str) and zh and en):
        raise ManifestError(f"{key!r} needs non-empty 'zh' and 'en' texts")
    if len(zh) > 2000 or len(en) > 2000:
        raise ManifestError(f"{key!r} is longer than 2000 characters")
    return zh, en


def _number(raw: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = _get(raw, key, (int, float))
    if not lo <= value <= hi:
        raise ManifestError(f"{key!r} must be between {lo:g} and {hi:g}")
    return float(value)


def _strings(raw: Mapping[str, Any], key: str, allowed: Any = None) -> Tuple[str, ...]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ManifestError(f"{key!r} must be a list of strings")
    for item in items:
        if allowed is not None and not (
            item in allowed if isinstance(allowed, tuple) else allowed.match(item)
        ):
            raise ManifestError(f"{key!r} has a value that is not allowed")
    return tuple(items)


def _precondition(raw: Any) -> Precondition:
    if not isinstance(raw, dict) or raw.get("kind") not in PRECONDITIONS:
        raise ManifestError(f"precondition kind must be one of {', '.join(PRECONDITIONS)}")
    kind = raw["kind"]
    if kind == "process_stopped":
        name = raw.get("process")
        if not isinstance(name, str) or not _FILE.match(name):
            raise ManifestError("process_stopped needs a process name")
        return Precondition(kind, process=name)
    if kind == "outside_hours":
        open_at, close_at = raw.get("open"), raw.get("close")
        if not (isinstance(open_at, str) and isinstance(close_at, str)):
            raise ManifestError("outside_hours needs 'open' and 'close' as HH:MM")
        if not (_HHMM.match(open_at) and _HHMM.match(close_at)):
            raise ManifestError("outside_hours needs 'open' and 'close' as HH:MM")
        return Precondition(kind, open_at=open_at, close_at=close_at)
    return Precondition(kind)


def _param(name: str, raw: Any) -> Param:
    if not _NAME.match(name) or not isinstance(raw, dict):
        raise ManifestError("parameter names are lower_snake_case, each with an object schema")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ManifestError(f"parameter {name!r}: type must be one of {', '.join(PARAM_TYPES)}")
    choices = _strings(raw, "enum") if kind == "enum" else ()
    if kind == "enum" and not choices:
        raise ManifestError(f"parameter {name!r}: an enum needs its values")
    pattern = raw.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except (re.error, TypeError):
            raise ManifestError(
                f"parameter {name!r}: pattern is not a regular expression"
            ) from None
    bounds = [raw.get("min"), raw.get("max")]
    if any(
        b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))) for b in bounds
    ):
        raise ManifestError(f"parameter {name!r}: min and max must be numbers")
    max_length = raw.get("max_length", 256)
    pass_as = raw.get("pass_as", "argv")
    if type(max_length) is not int or not 1 <= max_length <= 4096 or pass_as not in ("argv", "env"):
        raise ManifestError(f"parameter {name!r}: bad max_length or pass_as")
    allow_dash = raw.get("allow_dash", False)
    if type(allow_dash) is not bool:
        raise ManifestError(f"parameter {name!r}: allow_dash must be true or false")
    param = Param(
        name=name,
        type=kind,
        required=bool(raw.get("required", False)),
        default=None,
        choices=choices,
        minimum=bounds[0],
        maximum=bounds[1],
        pattern=pattern,
        max_length=max_length,
        pass_as=pass_as,
        allow_dash=allow_dash,
    )
    if "default" in raw:
        try:
            default = _check_value(param, raw["default"])
        except ParamError:
            raise ManifestError(
                f"parameter {name!r}: its default does not fit its schema"
            ) from None
        param = dataclasses.replace(param, default=default)
    return param


def parse_manifest(raw: Any) -> Manifest:
    """Validate a manifest (a decoded JSON object); ManifestError says what is wrong."""
    if not isinstance(raw, dict):
        raise ManifestError("a manifest is a JSON object")
    script_id = _get(raw, "id", str)
    version = _get(raw, "version", str)
    if not _ID.match(script_id) or not _VERSION.match(version):
        raise ManifestError("id is lower-case-with-dashes and version is MAJOR.MINOR.PATCH")
    interpreter = _get(raw, "interpreter", str)
    risk = _get(raw, "risk", str)
    if interpreter not in INTERPRETERS or risk not in RISKS:
        raise ManifestError(f"interpreter must be one of {INTERPRETERS}, risk one of {RISKS}")
    files = _strings(raw, "files", _FILE)
    entry = _get(raw, "entry", str)
    if entry not in files:
        raise ManifestError("entry must be one of the listed files")
    platforms = _strings(raw, "platforms", PLATFORMS)
    if not platforms:
        raise ManifestError("platforms must name at least one of linux, windows")
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict) or len(params_raw) > 32:
        raise ManifestError("params is an object of at most 32 parameter schemas")
    preconditions_raw = raw.get("preconditions", [])
    if not isinstance(preconditions_raw, list):
        raise ManifestError("preconditions is a list")
    backup = _strings(raw, "backup")
    if any(".." in path.replace("\\", "/").split("/") for path in backup):
        raise ManifestError("backup paths may not contain '..'")
    consent, unattended = raw.get("consent", True), raw.get("unattended", False)
    if not isinstance(consent, bool) or not isinstance(unattended, bool):
        raise ManifestError("consent and unattended are true or false")
    if risk == "C" and unattended:
        raise ManifestError("a risk C script may never run unattended")
    return Manifest(
        id=script_id,
        version=version,
        title=_text(raw, "title"),
        description=_text(raw, "description"),
        changes=_text(raw, "changes"),
        platforms=platforms,
        interpreter=interpreter,
        entry=entry,
        files=files,
        risk=risk,
        consent=consent,
        unattended=unattended,
        preconditions=tuple(_precondition(p) for p in preconditions_raw),
        params=tuple(_param(name, schema) for name, schema in sorted(params_raw.items())),
        timeout=_number(raw, "timeout", 1, MAX_TIMEOUT),
        max_output=int(_number(raw, "max_output", 1024, MAX_OUTPUT)),
        backup=backup,
        expected_duration=_number(raw, "expected_duration", 0, MAX_TIMEOUT),
    )


def _check_value(param: Param, value: Any) -> Scalar:
    """``value`` if it fits ``param``; ParamError naming the parameter (never echoing it)."""
    where = f"parameter {param.name!r}"
    kind = param.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ParamError(f"{where} must be true or false")
        return value
    if kind in ("integer", "number"):
        ok_type = int if kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            raise ParamError(f"{where} must be a{'n integer' if kind == 'integer' else ' number'}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(f"{where} must be finite")
        if param.minimum is not None and value < param.minimum:
            raise ParamError(f"{where} is below its minimum {param.minimum:g}")
        if param.maximum is not None and value > param.maximum:
            raise ParamError(f"{where} is above its maximum {param.maximum:g}")
        if value < 0 and not param.allow_dash:
            raise ParamError(f"{where} may not be negative (it would start with '-')")
        return value
    if not isinstance(value, str):
        raise ParamError(f"{where} must be text")
    if len(value) > param.max_length:
        raise ParamError(f"{where} is longer than {param.max_length} characters")
    if kind == "enum":
        if value not in param.choices:
            raise ParamError(f"{where} must be one of {', '.join(param.choices)}")
        return value
    # A value that starts with '-' could be read as an option by the script or the tool it
    # calls (option injection into argv); only a parameter whose manifest allows it takes one.
    if value.startswith("-") and not param.allow_dash:
        raise ParamError(f"{where} may not start with '-'")
    if param.pattern is not None:
        if not re.fullmatch(param.pattern, value):
            raise ParamError(f"{where} does not match its pattern")
    elif not SAFE_TEXT.match(value):
        raise ParamError(f"{where} contains characters that are not allowed")
    if kind == "path":
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "\\")) or ":" in value or ".." in parts or "" in parts[:-1]:
            raise ParamError(f"{where} must be a relative path without '..'")
    return value


def validate_params(
    manifest: Manifest, params: Mapping[str, Any]
) -> Tuple[List[str], Dict[str, str]]:
    """Check ``params`` against the schema; return (argv tail, environment additions).

    Unknown names, missing required ones, wrong types, values outside an enum or range, overlong
    strings, shell metacharacters and ``..`` path traversal are all ParamError. The values are
    passed to the script as separate argv items or environment variables, never through a shell.
    """
    known = {p.name: p for p in manifest.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ParamError(f"unknown parameter(s): {', '.join(n[:32] for n in unknown[:5])}")
    argv: List[str] = []
    env: Dict[str, str] = {}
    for param in manifest.params:
        if param.name in params:
            value = _check_value(param, params[param.name])
        elif param.default is not None:
            value = param.default
        elif param.required:
            raise ParamError(f"parameter {param.name!r} is required")
        else:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if param.pass_as == "env":
            env["POSASSIST_PARAM_" + param.name.upper()] = text
        else:
            argv += ["--" + param.name.replace("_", "-"), text]
    return argv, env
