"""POS profiles: what a POS product looks like on a till (processes, services, logs, sale flag).

One small TOML file per product under ``agent/profiles/``, read with ``tomllib`` (``tomli`` on 3.8).
"""

from __future__ import annotations

import json
import ntpath
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from posassist.agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Windows 7 tills run Python 3.8: the same parser, as the tomli backport
    import tomli as tomllib

__all__ = ["PROFILE_DIR", "PosProfile", "load_profile", "parse_profile", "profile_env"]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PosProfile:
    """A POS product as the agent sees it. Paths have ``${DATA}``, ``~`` and ``$VARS`` expanded."""

    name: str
    display_name: str
    process_names: Tuple[str, ...] = ()
    service_names: Tuple[str, ...] = ()
    database_service: str = ""
    database_processes: Tuple[str, ...] = ()
    #: the POS's database file (SQLite and the like): who holds it, and with what lock (§5 #27)
    database_path: str = ""
    #: the database engine's size cap (SQL Server Express: 10 GB per database, §5 #29); 0: none
    database_size_cap_gb: int = 0
    log_paths: Tuple[str, ...] = ()
    error_patterns: Tuple[str, ...] = ()
    redact_patterns: Tuple[str, ...] = ()
    log_max_bytes: int = 65536
    log_max_lines: int = 20
    data_paths: Tuple[str, ...] = ()
    min_free_mb: int = 1024
    sale_open_file: str = ""
    sale_open_process: str = ""
    #: payment gateway hosts (``host:port``) whose TLS certificate expiry is checked (§5 #18, #23)
    payment_hosts: Tuple[str, ...] = ()
    #: the POS's INI-style config file and where the receipt printer's target is in it, for
    #: catalog scripts such as fix-printer-port (docs/scripts.md#profile)
    config_path: str = ""
    config_printer_section: str = "printer"
    config_port_key: str = "port"
    config_address_key: str = "address"


def _strings(table: Dict[str, Any], key: str, where: str) -> Tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"profile [{where}] {key} must be an array of strings")
    return tuple(value)


def _string(table: Dict[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"profile [{where}] {key} must be a string")
    return value


def _int(table: Dict[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(f"profile [{where}] {key} must be an integer in {lo}..{hi}")
    return value


def _expand(path: str, data_dir: Optional[Path]) -> str:
    if data_dir is not None:
        path = path.replace("${DATA}", str(data_dir))
    return os.path.expanduser(os.path.expandvars(path)) if path else path


def parse_profile(text: str, data_dir: Optional[Path] = None) -> PosProfile:
    """Build a profile from its TOML text.

    Args:
        text: the profile file's contents.
        data_dir: the agent's data directory, substituted for ``${DATA}`` in paths.

    Returns:
        The profile.

    Raises:
        ConfigError: the text is not valid, or a field has the wrong type; regexes that don't
            compile are refused here rather than when a report is collected.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile: not valid TOML: {exc}") from None
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("profile: name must be letters, digits, '.', '_' or '-'")
    tables: Dict[str, Dict[str, Any]] = {}
    for key in ("process", "service", "database", "logs", "data", "sale", "payment", "config"):
        table = doc.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"profile: {key} must be a table")
        tables[key] = table
    logs = tables["logs"]
    patterns = _strings(logs, "error_patterns", "logs") + _strings(logs, "redact_patterns", "logs")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"profile [logs]: bad pattern {pattern!r}: {exc}") from None
    display = doc.get("display_name", name)
    return PosProfile(
        name=name,
        display_name=display if isinstance(display, str) else name,
        process_names=_strings(tables["process"], "names", "process"),
        service_names=_strings(tables["service"], "names", "service"),
        database_service=_string(tables["database"], "service", "database"),
        database_processes=_strings(tables["database"], "processes", "database"),
        database_path=_expand(_string(tables["database"], "path", "database"), data_dir),
        database_size_cap_gb=_int(tables["database"], "size_cap_gb", "database", 0, 0, 100000),
        log_paths=tuple(_expand(p, data_dir) for p in _strings(logs, "paths", "logs")),
        error_patterns=_strings(logs, "error_patterns", "logs"),
        redact_patterns=_strings(logs, "redact_patterns", "logs"),
        log_max_bytes=_int(logs, "max_bytes", "logs", 65536, 1024, 4 * 1024 * 1024),
        log_max_lines=_int(logs, "max_lines", "logs", 20, 1, 200),
        data_paths=tuple(_expand(p, data_dir) for p in _strings(tables["data"], "paths", "data")),
        min_free_mb=_int(tables["data"], "min_free_mb", "data", 1024, 0, 10**7),
        sale_open_file=_expand(_string(tables["sale"], "open_file", "sale"), data_dir),
        sale_open_process=_string(tables["sale"], "open_process", "sale"),
        payment_hosts=_host_ports(tables["payment"]),
        config_path=_absolute(_expand(_string(tables["config"], "path", "config"), data_dir)),
        config_printer_section=_ini_name(tables["config"], "printer_section", "printer"),
        config_port_key=_ini_name(tables["config"], "port_key", "port"),
        config_address_key=_ini_name(tables["config"], "address_key", "address"),
    )


_INI_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _ini_name(table: Dict[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not _INI_NAME.match(value):
        raise ConfigError(f"profile [config] {key} must be a section or key name")
    return value


def _absolute(path: str) -> str:
    if path and "${" not in path and not (os.path.isabs(path) or re.match(r"^[A-Za-z]:\\", path)):
        raise ConfigError(f"profile [config] path must be absolute: {path!r}")
    return path


def profile_env(profile: Optional[PosProfile]) -> Dict[str, str]:
    """What a catalog script may know of the POS profile, as ``POSASSIST_PROFILE_*`` variables
    (docs/scripts.md#profile): the POS's name, its process names and the folders of its logs (JSON
    lists) and, when the profile names it, its config file."""
    if profile is None:
        return {}
    env = {"POSASSIST_PROFILE_NAME": profile.name}
    if profile.process_names:
        env["POSASSIST_PROFILE_PROCESSES"] = json.dumps(list(profile.process_names))
    # a Windows profile's paths read on Windows; parsed here with ntpath so tests see them too
    folders = [(ntpath if "\\" in p else posixpath).dirname(p) for p in profile.log_paths]
    if any(folders):
        env["POSASSIST_PROFILE_LOG_DIRS"] = json.dumps(list(dict.fromkeys(f for f in folders if f)))
    if profile.redact_patterns:  # the log bundle masks what the agent's log tails mask
        env["POSASSIST_PROFILE_REDACT"] = json.dumps(list(profile.redact_patterns))
    if profile.config_path:
        env.update(
            POSASSIST_PROFILE_CONFIG=profile.config_path,
            POSASSIST_PROFILE_PRINTER_SECTION=profile.config_printer_section,
            POSASSIST_PROFILE_PORT_KEY=profile.config_port_key,
            POSASSIST_PROFILE_ADDRESS_KEY=profile.config_address_key,
        )
    return env


_HOST_PORT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?:[0-9]{1,5}$")


def _host_ports(table: Dict[str, Any]) -> Tuple[str, ...]:
    hosts = _strings(table, "hosts", "payment")
    for host in hosts:
        if not _HOST_PORT.match(host) or not 0 < int(host.rpartition(":")[2]) < 65536:
            raise ConfigError(f"profile [payment] hosts: {host!r} is not host:port")
    if len(hosts) > 8:
        raise ConfigError("profile [payment] hosts: at most 8")
    return hosts


def load_profile(name_or_path: str, data_dir: Optional[Path] = None) -> PosProfile:
    """Load a shipped profile by name (``demo``) or any profile file by path.

    Args:
        name_or_path: a name of a file in ``agent/profiles/`` without ``.toml``, or a path.
        data_dir: the agent's data directory, for ``${DATA}``; relative paths are taken from it.

    Raises:
        ConfigError: the profile does not exist or is invalid.
    """
    if _NAME.match(name_or_path) and not name_or_path.endswith(".toml"):
        path = PROFILE_DIR / (name_or_path + ".toml")
    else:
        path = Path(name_or_path)
        if not path.is_absolute() and data_dir is not None:
            path = data_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"POS profile {name_or_path!r}: {exc.strerror or exc}") from None
    return parse_profile(text, data_dir)


def list_profiles() -> List[str]:
    """Names of the profiles shipped with the agent."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
