"""``posassist-relay check-config``: is this relay ready to serve, before it is (re)started?

Checks the data directory and its identity (``relay.json``), the TLS certificate and key (they
load together, the certificate's dates), the audit checkpoint key, and the database (reachable,
initialised, which migrations a start would apply). Reads only: it creates no file, table or
database. docs/operating.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from posassist.protocol.der import certificate_facts, pem_to_der

from .checkpoints import load_key
from .errors import CheckpointKeyError
from .storage.sql import head_revision, open_storage
from .tls import server_ssl_context, spki_pin

__all__ = ["Finding", "check_config"]

#: A certificate expiring sooner than this is reported (renew it: docs/operating.md#tls).
RENEW_WITHIN_DAYS = 30
#: How long to wait for the database server to answer.
DATABASE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: ``ok``, ``warning`` (serves, but act soon) or ``error``."""

    level: str
    en: str
    zh: str

    def line(self) -> str:
        return f"{self.level}: {self.en} / {self.zh}"


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def _data_dir(data: Path) -> list[Finding]:
    if not data.is_dir():
        return [
            Finding(
                "error",
                f"no relay data directory {data}: run posassist-relay init --data {data}",
                f"没有中继数据目录 {data}: 请先运行 posassist-relay init",
            )
        ]
    found = []
    if _private(data):
        found.append(
            Finding("ok", f"data directory {data} is private", f"数据目录 {data} 仅本用户可访问")
        )
    else:
        mode = stat.S_IMODE(data.stat().st_mode)
        found.append(
            Finding(
                "warning",
                f"data directory {data} is open to others (mode {mode:04o}; its files stay "
                f"0600): chmod 700 {data}",
                f"数据目录 {data} 其他用户也能访问 (权限 {mode:04o}): 建议执行 chmod 700",
            )
        )
    identity = data / "relay.json"
    try:
        relay_id = json.loads(identity.read_text(encoding="utf-8"))["relay_id"]
        if not isinstance(relay_id, str) or not relay_id.isprintable() or not relay_id:
            raise ValueError("relay_id is not a printable string")
    except FileNotFoundError:
        found.append(
            Finding(
                "error",
                f"{identity} is missing: run posassist-relay init --data {data} (or restore it "
                "from the backup: enrolled tills know this relay by it)",
                f"缺少 {identity}: 请运行 init 或从备份恢复",
            )
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        found.append(
            Finding(
                "error",
                f"{identity} is unreadable ({exc}): restore it from the backup",
                f"{identity} 无法读取: 请从备份恢复",
            )
        )
    else:
        found.append(Finding("ok", f"relay identity {relay_id}", f"中继标识 {relay_id}"))
        if not _private(identity):
            found.append(
                Finding(
                    "error",
                    f"{identity} is readable by others: chmod 600 {identity}",
                    f"{identity} 其他用户可读: 请执行 chmod 600",
                )
            )
    return found


def _tls(cert: Path | None, key: Path | None, now: datetime) -> list[Finding]:
    if cert is None and key is None:
        return [
            Finding(
                "warning",
                "no TLS certificate given: agents and consoles connect with ws:// (plain text)",
                "未指定 TLS 证书: 连接不加密",
            )
        ]
    if cert is None or key is None:
        return [
            Finding(
                "error",
                "give both --tls-cert and --tls-key",
                "请同时指定 --tls-cert 和 --tls-key",
            )
        ]
    try:
        server_ssl_context(cert, key)
    except ValueError as exc:
        return [Finding("error", str(exc), f"TLS 证书 {cert} 与私钥 {key} 无法一起使用")]
    found = []
    try:
        pem = cert.read_bytes()
        pin = spki_pin(pem)
        not_after = datetime.fromtimestamp(certificate_facts(pem_to_der(pem)).not_after, UTC)
    except (OSError, ValueError) as exc:
        return [Finding("error", f"cannot read {cert}: {exc}", f"无法读取证书 {cert}")]
    days = (not_after - now).total_seconds() / 86400
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days <= 0:
        found.append(
            Finding(
                "error",
                f"TLS certificate {cert} expired on {when}: renew it (docs/operating.md#tls)",
                f"TLS 证书已于 {when} 过期: 请更新",
            )
        )
    elif days < RENEW_WITHIN_DAYS:
        found.append(
            Finding(
                "warning",
                f"TLS certificate {cert} expires on {when}, in {days:.0f} days: renew it "
                "with the same key (docs/operating.md#tls)",
                f"TLS 证书将于 {when} 过期 ({days:.0f} 天后): 请用同一私钥续期",
            )
        )
    else:
        found.append(
            Finding("ok", f"TLS certificate valid until {when}", f"TLS 证书有效期至 {when}")
        )
    found.append(
        Finding(
            "ok",
            f"TLS key pin {pin} (tills enrolled here trust this key: keep it on renewal)",
            f"TLS 公钥指纹 {pin} (续期时请保留同一私钥)",
        )
    )
    return found


def _checkpoint_key(path: Path) -> list[Finding]:
    try:
        load_key(path)
    except CheckpointKeyError as exc:
        return [Finding("error", str(exc), f"审计检查点密钥 {path} 无法使用")]
    if not _private(path):
        return [
            Finding(
                "error",
                f"the audit checkpoint key {path} is readable by others: chmod 600 {path}",
                f"审计检查点密钥 {path} 其他用户可读",
            )
        ]
    return [Finding("ok", f"audit checkpoint key {path}", f"审计检查点密钥 {path} 可用")]


def _scripts(data: Path) -> list[Finding]:
    """The published script repository, if any: its root hash, and whether it chains from the
    first root this relay served (a replaced repository stops ``serve``)."""
    from .scripts_repo import FIRST_ROOT, _chain_problem, published_root_hash

    repo = data / "scripts"
    root_hash = published_root_hash(repo)
    if root_hash is None:
        return [
            Finding(
                "warning",
                "no script repository published: tills can run no script "
                "(posassist-scripts publish --to DATA)",
                "尚未发布脚本库: 收银机无法运行维修脚本",
            )
        ]
    anchor = data / FIRST_ROOT
    if anchor.is_file():
        problem = _chain_problem(anchor.read_bytes(), repo)
        if problem is not None:
            return [
                Finding(
                    "error",
                    f"the script repository is not the one this relay was set up with ({problem}):"
                    " serve refuses it; publish the approvers' repository again",
                    "脚本库不是本服务器最初使用的脚本库: 请重新发布审批人的脚本库",
                )
            ]
    return [
        Finding(
            "ok",
            f"script repository published, root hash {root_hash}",
            f"脚本库已发布, 根哈希 {root_hash}",
        )
    ]


def _sqlite_url(path: Path) -> tuple[sa.URL | None, list[Finding]]:
    """The URL to read an existing SQLite file through, or why not (never creates a file)."""
    if not path.is_file():
        return None, [
            Finding(
                "error",
                f"no relay database {path}: run posassist-relay init (a relay on PostgreSQL: "
                "give --database URL)",
                f"没有中继数据库 {path}: 请先运行 init",
            )
        ]
    try:
        uri = f"file:{quote(str(path.resolve()))}"
        with contextlib.closing(sqlite3.connect(f"{uri}?mode=rw", uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return None, [
            Finding(
                "error", f"{path} is not a SQLite database ({exc})", f"{path} 不是 SQLite 数据库"
            )
        ]
    # mode=rw, as audit verify: it never creates a file (the file exists), and unlike a read-only
    # connection the last one to close removes the WAL files it opened
    return sa.URL.create("sqlite", database=uri, query={"mode": "rw", "uri": "true"}), []


async def _database(url: sa.URL, shown: str) -> list[Finding]:
    storage = None
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            storage = open_storage(url, busy_timeout=DATABASE_TIMEOUT)
            missing = await storage.missing_tables()
            current = None if missing else await storage.current_revision()
    except TimeoutError:
        return [
            Finding(
                "error",
                f"the database {shown} did not answer within {DATABASE_TIMEOUT:g} s",
                f"数据库 {shown} 在 {DATABASE_TIMEOUT:g} 秒内没有响应",
            )
        ]
    except Exception as exc:  # any driver's refusal: say it in one line, with its words
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [
            Finding(
                "error",
                f"cannot reach the database {shown}: {reason}",
                f"无法连接数据库 {shown}",
            )
        ]
    finally:
        if storage is not None:
            await storage.close()
    head = head_revision()
    if "alembic_version" in missing:
        return [
            Finding(
                "error",
                f"{shown} has no posassist schema: run posassist-relay init --database …",
                f"{shown} 中没有 posassist 数据表: 请先运行 init",
            )
        ]
    if missing:
        return [
            Finding(
                "error",
                f"{shown} lacks tables {', '.join(missing)}: restore it from the backup",
                f"{shown} 缺少数据表: 请从备份恢复",
            )
        ]
    if current != head:
        return [
            Finding(
                "warning",
                f"{shown} is at schema {current}; serve will migrate it to {head} at start "
                "(back it up first: docs/operating.md#upgrading)",
                f"{shown} 的数据表版本为 {current}, 启动时将升级到 {head}: 请先备份",
            )
        ]
    return [
        Finding("ok", f"database {shown} at schema {head}", f"数据库 {shown} 可用, 版本 {head}")
    ]


def _local(
    data: Path,
    database: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    checkpoint_key: Path | None,
    now: datetime,
) -> tuple[list[Finding], tuple[sa.URL, str] | None]:
    """The findings that need no database server, and the database to ask (None: none to ask)."""
    found = _data_dir(data)
    found += _tls(tls_cert, tls_key, now)
    if data.is_dir() or checkpoint_key is not None:
        found += _checkpoint_key(checkpoint_key or data / "audit-checkpoint.key")
    if data.is_dir():
        found += _scripts(data)
    if not database:
        if not data.is_dir():
            return found, None
        sqlite_url, problems = _sqlite_url(data / "relay.db")
        return found + problems, None if sqlite_url is None else (
            sqlite_url,
            str(data / "relay.db"),
        )
    try:
        url = sa.make_url(database)
    except sa.exc.ArgumentError:
        return [*found, Finding("error", f"not a database URL: {database}", "数据库地址无效")], None
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        sqlite_url, problems = _sqlite_url(path)
        return found + problems, None if sqlite_url is None else (sqlite_url, str(path))
    return found, (url, url.render_as_string(hide_password=True))


async def check_config(
    data: Path,
    database: str = "",
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    checkpoint_key: Path | None = None,
    now: datetime | None = None,
) -> list[Finding]:
    """Every finding, in the order an operator fixes them."""
    found, target = _local(
        data, database, tls_cert, tls_key, checkpoint_key, now or datetime.now(UTC)
    )
    if target is not None:
        found += await _database(*target)
    return found
