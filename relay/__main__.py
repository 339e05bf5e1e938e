"""``posassist-relay``: init, serve, audit verify, and the operator's tenancy administration.

Runs on uvloop where the platform has it; SIGTERM and SIGINT shut down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from aiohttp import web

from posassist.client.files import write_private
from posassist.client.prompt import NEW_PASSWORD_ENV, secret_from
from posassist.protocol import PosAssistError
from posassist.protocol.enrolment import EnrolmentInvite
from posassist.protocol.errors import EXIT_USAGE, BadArgument, error_line
from posassist.protocol.messages import DEVICE_ID, name_problem, username_problem
from posassist.protocol.signing import fingerprint
from posassist.protocol.text import printable

from . import __version__
from .app import close_sockets, create_app, drain_routes
from .audit import RELAY_CREATED, Checkpoint, CheckpointError, Outcome, VerifyResult, verify_store
from .checkpoints import (
    CHECKPOINTS_FILE,
    KEY_FILE,
    append_checkpoint,
    create_key,
    load_key,
    read_checkpoints,
    sign_checkpoint,
)
from .config import RelayConfig
from .errors import CheckpointKeyError, Conflict, NotFound, StorageError
from .limits import GUARD, ConnectionLimits, fit_to_descriptors, raise_descriptor_limit
from .logs import configure_logging
from .passwords import hash_password
from .storage import Role, Scope, ScopeKind, SqlStorage, open_storage
from .storage.engine import SYNC_MODES

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Sequence

OPERATOR = "operator:cli"


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` within [low, high] (NaN refused), else a usage
    error naming the range."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # also false for NaN
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posassist-relay", description="posassist relay")
    parser.add_argument("--version", action="version", version=f"posassist-relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_data(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data", type=Path, required=True, help="data directory")
        p.add_argument("--database", default="", help="postgresql://… (default: SQLite in DATA)")
        _checkpoint_options(p)
        return p

    init = with_data(commands.add_parser("init", help="create the database and the first admin"))
    init.add_argument("--admin-user", default="admin")
    init.add_argument(
        "--admin-password-file",
        type=Path,
        help="read the password from here (default: print a one-time password)",
    )

    serve = with_data(commands.add_parser("serve", help="accept agents and consoles"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=_bounded(int, 0, 65535), default=8765, help="0 picks a free port"
    )
    serve.add_argument(
        "--metrics-port",
        type=_bounded(int, 0, 65535),
        default=0,
        help="serve /metrics (plain HTTP) on this port, never on --port (default 0: a free one; "
        "the URL is written to DATA/metrics.url; Prometheus wants a fixed one, e.g. 9108)",
    )
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address --metrics-port listens on (an operator network; default 127.0.0.1)",
    )
    serve.add_argument("--public-url", default="", help="ws(s):// URL put in enrolment tokens")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument(
        "--heartbeat",
        type=_bounded(float, 1.0, 3600.0),  # what auth.accepted may carry (docs/protocol.md)
        default=20.0,
        help="seconds between heartbeats (1-3600)",
    )
    serve.add_argument("--request-timeout", type=_bounded(float, 0.1, 86400.0), default=60.0)
    serve.add_argument(
        "--max-run-timeout",
        type=_bounded(float, 0.0, 86400.0),
        default=3600.0,
        help="longest script run timeout that holds a request open (0-86400 s)",
    )
    serve.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    limits = serve.add_argument_group(
        "limits before sign-in", "see docs/relay.md#limits-before-sign-in"
    )
    limits.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds to send a request head"
    )
    limits.add_argument(
        "--idle-timeout", type=float, default=15.0, help="seconds idle between requests"
    )
    limits.add_argument(
        "--http-request-timeout",
        type=float,
        default=30.0,
        help="seconds for a plain HTTP request in the relay, its body included",
    )
    limits.add_argument(
        "--max-unauthenticated",
        type=int,
        default=1024,
        help="connections not signed in, in total (0: no cap)",
    )
    limits.add_argument(
        "--max-unauthenticated-per-address",
        type=int,
        default=256,
        help="connections not signed in from one address (0: no cap)",
    )
    limits.add_argument(
        "--max-handshakes-in-flight",
        type=_bounded(int, 0, 1_000_000),
        default=0,
        help="agent sign-ins worked on at once; more are answered 503 with a Retry-After "
        "(load shedding, docs/relay.md#load-shedding; 0, the default: none)",
    )
    limits.add_argument(
        "--refusal-window",
        type=float,
        default=60.0,
        help="seconds over which refusals before sign-in are summarised in the audit log",
    )
    serve.add_argument(
        "--flap-window",
        type=_bounded(float, 1.0, 86400.0),
        default=60.0,
        help="seconds over which a device's connections replacing each other are counted",
    )
    serve.add_argument(
        "--flap-threshold",
        type=_bounded(int, 1, 1_000_000),
        default=5,
        help="replacements of one device in a window beyond which it is flapping "
        "(docs/relay.md#flapping-agents)",
    )
    serve.add_argument(
        "--webhook-timeout",
        type=_bounded(float, 0.1, 300.0),
        default=10.0,
        help="seconds an alert webhook's receiver has to answer (docs/webhooks.md)",
    )
    serve.add_argument(
        "--webhook-retry-scale",
        type=_bounded(float, 0.001, 100.0),
        default=1.0,
        help="factor on the webhook retry schedule (1 s, 5 s, 30 s, 2 min, 10 min)",
    )
    serve.add_argument(
        "--webhook-allow-private",
        action="store_true",
        help="let webhooks reach loopback, private and link-local addresses (off: refused)",
    )
    serve.add_argument(
        "--checkpoint-interval", type=float, default=60.0, help="seconds between signed audit heads"
    )
    serve.add_argument(
        "--sync",
        choices=SYNC_MODES,
        default="normal",
        help="SQLite durability: normal (default; commits survive a killed relay and reach the "
        "disk within a second) or full (every commit waits for the disk)",
    )

    check = commands.add_parser(
        "check-config",
        help="is this relay ready to serve? data, identity, TLS, database; reads only",
        description="Check a relay's data directory, relay.json, TLS files, checkpoint key and "
        "database (reachable, initialised, pending migrations) before serving. Creates nothing. "
        "Exit 0: ready (warnings allowed); 1: an error to fix first.",
    )
    check.add_argument("--data", type=Path, required=True, help="data directory")
    check.add_argument("--database", default="", help="postgresql://… (default: SQLite in DATA)")
    check.add_argument("--tls-cert", type=Path)
    check.add_argument("--tls-key", type=Path)
    check.add_argument("--checkpoint-key", type=Path, help="default: DATA/audit-checkpoint.key")

    audit = commands.add_parser("audit", help="the hash-chained audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="exit 0 if the chain is intact, 1 naming the first bad record; reads only",
        description="Verify an existing relay database's audit chain. Never creates or migrates "
        "a database: a directory or URL without one is an error (exit 2).",
    )
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="a relay data directory (its SQLite relay.db)")
    where.add_argument("--database", help="sqlite:///PATH or postgresql://…")
    _checkpoint_options(verify)
    verify.add_argument(
        "--expect-key",
        metavar="FINGERPRINT",
        help="the checkpoint key's fingerprint as `relay init` printed it (SHA256:…): a key "
        "replaced together with the log and its checkpoints then fails (exit 1)",
    )

    for noun, parent in (
        ("organisation", None),
        ("merchant", "organisation"),
        ("store", "merchant"),
    ):
        p = commands.add_parser(
            noun, help=f"create an {noun}" if noun[0] in "aeiou" else f"create a {noun}"
        )
        sub = p.add_subparsers(dest="action", required=True)
        create = with_data(sub.add_parser("create"))
        create.add_argument("--name", required=True)
        if parent:
            create.add_argument(f"--{parent}", required=True, dest="parent")

    enrolment = commands.add_parser("enrolment", help="one-time enrolment tokens for a store")
    sub = enrolment.add_subparsers(dest="action", required=True)
    create = with_data(sub.add_parser("create"))
    create.add_argument("--store", required=True)
    create.add_argument("--ttl", type=float, default=24 * 3600.0, help="seconds it stays valid")
    create.add_argument("--relay-url", required=True, help="ws(s):// URL agents should use")
    create.add_argument("--tls-cert", type=Path, help="the relay's TLS certificate (wss only)")

    user = commands.add_parser("user", help="technician and merchant accounts")
    sub = user.add_subparsers(dest="action", required=True)
    create = with_data(
        sub.add_parser(
            "create",
            help="create a user with a role and a scope (audited)",
            description="Create a user. The password is read from --password-file "
            "or asked for on a terminal; at least 10 characters.",
        )
    )
    create.add_argument("--username", required=True, help="the name the user signs in with")
    create.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="what the user may do",
    )
    create.add_argument(
        "--scope",
        required=True,
        help="what the user sees: root, or kind:id (organisation:org_…, merchant:mer_…, "
        "store:sto_…)",
    )
    create.add_argument("--password-file", type=Path, help="read the password from here")
    password = with_data(
        sub.add_parser(
            "password",
            help="set a user's password, e.g. to replace the one-time admin password (audited); "
            "signs the user out everywhere",
            description="Set a user's password (at least 10 characters) and revoke the user's "
            "sign-in tokens. The password is read from --password-file or asked "
            "for on a terminal.",
        )
    )
    password.add_argument("username")
    password.add_argument("--password-file", type=Path, help="read the new password from here")
    unlock = with_data(
        sub.add_parser(
            "unlock",
            help="forget a user's failed sign-ins, from every address (audited); running relays "
            "follow within a second",
        )
    )
    unlock.add_argument("username")

    device = commands.add_parser("device", help="devices")
    sub = device.add_subparsers(dest="action", required=True)
    with_data(sub.add_parser("list"))
    revoke = with_data(sub.add_parser("revoke"))
    revoke.add_argument("device_id")
    return parser


def _checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-key",
        type=Path,
        help=f"the audit checkpoint signing key, never in the database (default: DATA/{KEY_FILE})",
    )
    p.add_argument(
        "--checkpoint-file",
        type=Path,
        help=f"the signed audit checkpoints, appended (default: DATA/{CHECKPOINTS_FILE})",
    )


def _config(args: argparse.Namespace, **overrides: Any) -> RelayConfig:
    return RelayConfig.load(
        args.data,
        database_url=args.database,
        checkpoint_key=args.checkpoint_key,
        checkpoint_file=args.checkpoint_file,
        **overrides,
    )


async def _with_storage(config: RelayConfig, work: Callable[[SqlStorage], Any]) -> Any:
    # A one-shot operator command waits for the disk before it says it is done.
    storage = open_storage(config.database, sync="full")
    try:
        await storage.migrate()
        return await work(storage)
    finally:
        await storage.close()


def _password(path: Path | None, prompt: str) -> str:
    """The file's password (its length checked by the caller), else $POSASSIST_NEW_PASSWORD,
    else typed at a terminal; without any: NoTerminal, exit 2 (client/prompt.py)."""
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return secret_from(None, NEW_PASSWORD_ENV, prompt)


async def _init(
    args: argparse.Namespace, storage: SqlStorage, config: RelayConfig, password: str
) -> int:
    import time

    try:
        await storage.get_user(args.admin_user)
    except NotFound:
        pass
    else:
        print(f"error: already initialised ({args.admin_user} exists)", file=sys.stderr)
        return 2
    given = args.admin_password_file is not None
    hashed = await asyncio.to_thread(hash_password, password)
    await storage.create_user(args.admin_user, hashed, Role.ADMIN, Scope.root(), now=time.time())
    created = await storage.append(
        actor=OPERATOR,
        action=RELAY_CREATED,
        target=f"user:{args.admin_user}",
        outcome=Outcome.OK,
        now=time.time(),
    )
    # The first checkpoint anchors the log's beginning: from now on, a log that lost its
    # creation record, or both audit tables, fails `audit verify` (docs/relay.md).
    key = create_key(config.checkpoint_key_path)
    append_checkpoint(
        config.checkpoint_file_path,
        sign_checkpoint(
            key, relay_id=config.relay_id, seq=created.seq, hash=created.hash, at=created.at
        ),
    )
    print(f"relay initialised in {args.data} ({storage.dialect})")
    print(f"audit checkpoint key {fingerprint(key.public_key())} in {config.checkpoint_key_path}")
    if not given:
        print(f"admin user: {args.admin_user}")
        print(f"one-time admin password (shown once, change it): {password}")
        print(
            f"change it with: posassist-relay user password {args.admin_user} --data {args.data} "
            "--password-file FILE"
        )
    return 0


def _invite_problem(relay_url: str, pin: str | None) -> str | None:
    """Why an enrolment token for ``relay_url`` can't be made, or None."""
    if not relay_url.startswith(("ws://", "wss://")):
        return f"--relay-url must be ws:// or wss://, not {relay_url[:64]!r}"
    if relay_url.startswith("wss://") and pin is None:
        return "a wss:// relay needs --tls-cert (its public-key pin goes in the token)"
    return None


async def _admin(args: argparse.Namespace, storage: SqlStorage, config: RelayConfig) -> int:
    import time

    now = time.time()
    target: str
    if args.command == "organisation":
        org = await storage.create_organisation(args.name, now=now)
        print(org.id)
        target = f"organisation:{org.id}"
    elif args.command == "merchant":
        merchant = await storage.create_merchant(args.parent, args.name, now=now)
        print(merchant.id)
        target = f"merchant:{merchant.id}"
    elif args.command == "store":
        store = await storage.create_store(args.parent, args.name, now=now)
        print(store.id)
        target = f"store:{store.id}"
    elif args.command == "enrolment":
        pin = None
        if args.tls_cert is not None:
            from .tls import spki_pin

            pin = spki_pin(args.tls_cert.read_bytes())
        # Checked before a token is stored: a token nobody can use is not made.
        problem = _invite_problem(args.relay_url, pin)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        from .scripts_repo import UntrustedRootError, anchored_root_hash

        try:  # a replaced script repository gets no token (docs/scripts.md#trust)
            root_hash = anchored_root_hash(config.scripts_dir)
        except UntrustedRootError as exc:
            await storage.append(
                actor=OPERATOR,
                action="enrolment.create",
                target=f"store:{args.store}",
                outcome=Outcome.REFUSED,
                detail={"reason": "untrusted-root"},
                now=now,
            )
            raise exc from None
        _record, secret = await storage.create_enrolment(
            args.store, config.relay_id, now=now, ttl=args.ttl
        )
        invite = EnrolmentInvite(
            relay_url=args.relay_url,
            relay_id=config.relay_id,
            secret=secret,
            tls_pin=pin,
            root_hash=root_hash,
        )
        print(invite.encode())
        target = f"store:{args.store}"
    elif args.command == "user" and args.action == "unlock":
        try:
            user = await storage.get_user(args.username)
        except NotFound:
            print(f"error: no user {args.username}", file=sys.stderr)
            return 2
        await storage.record_login_success(user.id)  # clears any lock stored by older relays
        print(f"user {args.username} unlocked (running relays forget its failed sign-ins)")
        target = f"user:{args.username}"
    elif args.command == "user" and args.action == "password":
        try:
            user = await storage.get_user(args.username)
        except NotFound:
            print(f"error: no user {args.username}", file=sys.stderr)
            return 2
        password = _password(args.password_file, f"new password for {args.username}: ")
        if len(password) < 10:
            print("error: the password must be at least 10 characters", file=sys.stderr)
            return 2
        hashed = await asyncio.to_thread(hash_password, password)
        await storage.set_password_hash(user.id, hashed)
        revoked = await storage.revoke_user_tokens(user.id, now=now)
        print(f"password of {args.username} changed; {revoked} sign-in token(s) revoked")
        target = f"user:{args.username}"
    elif args.command == "user":
        scope = _scope(args.scope)
        if scope is None:
            return 2
        if not await storage.scope_exists(scope):
            print(f"error: no {scope.kind} {scope.id} (--scope {args.scope})", file=sys.stderr)
            return 2
        password = _password(args.password_file, f"password for {args.username}: ")
        if len(password) < 10:
            print("error: the password must be at least 10 characters", file=sys.stderr)
            return 2
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            await storage.create_user(args.username, hashed, Role(args.role), scope, now=now)
        except Conflict:
            print(f"error: user {args.username} already exists", file=sys.stderr)
            return 2
        print(f"user {args.username} ({args.role}, {args.scope})")
        target = f"user:{args.username}"
    elif args.action == "list":
        for d in await storage.list_devices(Scope.root()):
            moved = "" if d.handed_over_at is None else f"\thanded over {d.handed_over_at}"
            print(f"{d.id}\t{d.store_id}\t{d.status}\tlast seen {d.last_seen}{moved}")
        return 0
    else:
        try:
            await storage.revoke_device(args.device_id, now=now)
        except NotFound:
            print(f"error: no device {args.device_id}", file=sys.stderr)
            return 2
        print(f"device {args.device_id} revoked (a running relay disconnects it within a second)")
        target = f"device:{args.device_id}"
    await storage.append(
        actor=OPERATOR,
        action=f"{args.command}.{args.action}",
        target=target,
        outcome=Outcome.OK,
        now=now,
    )
    if args.command == "device":  # revoked: its open alerts close (readme-walk 15 M8)
        from .storage.health import HealthStore

        await HealthStore(storage).resolve_device_alerts(
            args.device_id, OPERATOR, "device revoked", now=now
        )
    return 0


def _scope(text: str) -> Scope | None:
    """``root`` or ``kind:id`` as a Scope; None (having said why) when it is neither."""
    kind, _, scope_id = text.partition(":")
    kinds = [k.value for k in ScopeKind]
    if kind not in kinds:
        print(f"error: --scope {text}: the kind must be one of {', '.join(kinds)}", file=sys.stderr)
        return None
    try:
        return Scope(ScopeKind(kind), scope_id or None)
    except ValueError:
        print(f"error: --scope {text}: use root, or kind:id (store:sto_…)", file=sys.stderr)
        return None


class NothingToVerifyError(PosAssistError):
    """``audit verify`` found no relay database where pointed; the text says what is missing."""

    exit_code = EXIT_USAGE
    public_reason = "nothing verified"
    public_reason_zh = "没有可校验的审计记录"


def _existing_database(data: Path | None, url_text: str | None) -> tuple[sa.URL, str]:
    """The database to verify and how to name it, once a SQLite file is known to exist and hold
    the audit tables: it is never created (sqlite3 would make an empty file for a typo)."""
    if data is not None:
        if not data.is_dir():
            raise NothingToVerifyError(f"no relay data directory {data}")
        path = data / "relay.db"
        if not path.is_file():
            raise NothingToVerifyError(
                f"no relay database {path} (a relay on PostgreSQL: use --database URL)"
            )
    else:
        assert url_text is not None  # argparse: exactly one of --data, --database
        try:
            url = sa.make_url(url_text)
        except sa.exc.ArgumentError as exc:
            raise NothingToVerifyError(f"not a database URL: {url_text}") from exc
        if url.get_backend_name() != "sqlite":
            return url, url.render_as_string(hide_password=True)
        if url.database in (None, "", ":memory:"):
            raise NothingToVerifyError("an in-memory SQLite database has no audit log")
        path = Path(url.database)
        if not path.is_file():
            raise NothingToVerifyError(f"no SQLite database {path}")
    uri = f"file:{quote(str(path.resolve()))}"
    # Before SqlStorage opens it: its connections turn on WAL mode, a write to a stray file.
    try:
        with contextlib.closing(sqlite3.connect(f"{uri}?mode=rw", uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise NothingToVerifyError(f"{path} is not a SQLite database ({exc})") from exc
    if not {"alembic_version", "audit", "audit_head"} <= {name for (name,) in rows}:
        raise NothingToVerifyError(f"{path} has no posassist schema (never initialised)")
    # mode=rw, not ro: the file exists (rw never creates one), and a read-only connection would
    # leave the WAL files behind (only a writer may remove them). verify_store only reads.
    return sa.URL.create("sqlite", database=uri, query={"mode": "rw", "uri": "true"}), str(path)


def _checkpoints(args: argparse.Namespace) -> tuple[list[Checkpoint], str] | None:
    """The signed checkpoints ``audit verify`` checks the chain against, and the fingerprint of
    the key that verified them; None when there is no key to check them with (a database given
    by URL without ``--checkpoint-key``)."""
    key_path: Path | None = args.checkpoint_key
    file_path: Path | None = args.checkpoint_file
    if args.data is not None:
        key_path = key_path or args.data / KEY_FILE
        file_path = file_path or args.data / CHECKPOINTS_FILE
    if key_path is None:
        return None
    if file_path is None:
        raise NothingToVerifyError("--checkpoint-key needs --checkpoint-file with --database")
    public_key = load_key(key_path).public_key()
    found = read_checkpoints(file_path, public_key)
    for number in found.damaged:  # a crash's torn write: said, skipped (docs/relay.md)
        print(
            f"warning: {file_path} line {number} is not a checkpoint (a write cut short?): "
            f"skipped / 检查点文件第 {number} 行已损坏, 已跳过",
            file=sys.stderr,
        )
    return found.checkpoints, fingerprint(public_key)


def _normal_fingerprint(text: str) -> str:
    """A key fingerprint however it was copied: with or without ``SHA256:``, spaces, case."""
    text = text.strip()
    text = text[len("SHA256:") :] if text.upper().startswith("SHA256:") else text
    return "".join(text.split()).lower()


async def _verify_existing(
    url: sa.URL, shown: str, anchor: tuple[list[Checkpoint], str] | None
) -> VerifyResult:
    storage = open_storage(url)
    try:
        missing = await storage.missing_tables()
        if missing:
            raise NothingToVerifyError(
                f"{shown} has no posassist schema (missing tables: {', '.join(missing)})"
            )
        if await storage.current_revision() is None:
            raise NothingToVerifyError(f"{shown} has no posassist schema (never migrated)")
        checkpoints, key = anchor if anchor is not None else ([], None)
        return await verify_store(
            storage, checkpoints=checkpoints, first_action=RELAY_CREATED, checkpoint_key=key
        )
    except StorageError as exc:
        raise NothingToVerifyError(f"cannot read {shown}: {exc}") from exc
    finally:
        await storage.close()


async def _audit_verify(args: argparse.Namespace) -> int:
    """Verify an existing database's chain; creates and migrates nothing (see the parser)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its version check is no news
    try:
        where = _existing_database(args.data, args.database)
        missing = None
    except NothingToVerifyError as exc:
        where, missing = None, exc
    try:
        anchor = _checkpoints(args)
        if args.expect_key is not None:
            expected = _normal_fingerprint(args.expect_key)
            if anchor is None:
                raise NothingToVerifyError("--expect-key needs the checkpoint key")
            if _normal_fingerprint(anchor[1]) != expected:
                print(
                    f"audit checkpoint key replaced: it is {anchor[1]}, not the one expected "
                    f"/ 审计检查点密钥已被替换"
                )
                return 1
    except (CheckpointError, CheckpointKeyError) as exc:
        if missing is not None:
            raise missing from None  # no database and nothing else either: say so
        if isinstance(exc, CheckpointKeyError):
            raise
        print(f"audit checkpoints unusable: {exc} / 审计检查点无效")
        return 1
    try:
        if missing is not None:
            raise missing
        assert where is not None
        result = await _verify_existing(*where, anchor)
    except NothingToVerifyError as exc:
        checkpoints = anchor[0] if anchor is not None else []
        if not checkpoints:
            raise
        # Signed checkpoints say there was a log: its absence is a broken chain, not a typo.
        print(
            f"audit log gone: {exc}; {len(checkpoints)} signed checkpoint(s) say it reached "
            f"seq {checkpoints[-1].seq} / 审计日志已被删除"
        )
        return 1
    print(result.describe())
    if anchor is None:
        print(
            "warning: not checked against signed checkpoints (give --checkpoint-key and "
            "--checkpoint-file): a rewritten database would pass / 未校验签名检查点",
            file=sys.stderr,
        )
    elif result.ok:
        checkpoints, key = anchor
        last = f", the last at seq {checkpoints[-1].seq}" if checkpoints else ""
        # Compare the key with the one `relay init` printed: someone holding the whole data
        # directory can replace key, file and log together, but not that note.
        print(f"anchored by {len(checkpoints)} signed checkpoint(s){last}, key {key}")
    return 0 if result.ok else 1


def _warn_if_shared(data_dir: Path) -> None:
    """An existing data directory keeps its mode (docs/relay.md#files); say so at every start if
    other users can reach into it: it holds the database, keys and the checkpoint file."""
    import stat

    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(data_dir.stat().st_mode)
        if mode & 0o077 and sys.platform != "win32":
            logging.getLogger("posassist.relay").warning(
                "data directory %s is %04o: other users can reach the database and keys in it "
                "(chmod 700 %s)",
                data_dir,
                mode,
                data_dir,
            )


def _fit_caps(config: RelayConfig) -> RelayConfig:
    """``config`` with connection caps that fit this process's file descriptors (raised to the
    hard limit first): a stranger's idle sockets must never take the last descriptor, which
    stops /healthz, every agent's reconnect and the database's own files
    (docs/relay.md#limits-before-sign-in)."""
    from dataclasses import replace

    descriptors = raise_descriptor_limit()
    fitted = fit_to_descriptors(ConnectionLimits.of(config), descriptors)
    caps = (fitted.max_unauthenticated, fitted.max_unauthenticated_per_address)
    if caps == (config.max_unauthenticated, config.max_unauthenticated_per_address):
        return config
    logging.getLogger("posassist.relay").warning(
        "%d file descriptors: at most %d connections not signed in, %d per address "
        "(raise LimitNOFILE for more; docs/relay.md#limits-before-sign-in)",
        descriptors,
        *caps,
    )
    return replace(config, max_unauthenticated=caps[0], max_unauthenticated_per_address=caps[1])


class NotInitialised(BadArgument):
    """``--data`` names a folder ``posassist-relay init`` never set up (a typo, the wrong
    mount): refused before anything is created there, so a mistyped path never becomes a new,
    empty relay."""

    public_reason = "not a relay data directory"
    public_reason_zh = "不是已初始化的服务器数据目录, 请先运行 posassist-relay init"


def _require_initialised(data: Path, database_url: str) -> None:
    """NotInitialised unless ``data`` holds what ``init`` made: the relay's identity
    (relay.json) and, on SQLite, its database. Reads only; creates nothing."""
    missing = [] if (data / "relay.json").is_file() else ["relay.json"]
    if not database_url and not (data / "relay.db").is_file():
        missing.append("relay.db")
    if missing:
        raise NotInitialised(
            f"{data} has no {' or '.join(missing)}: run `posassist-relay init --data {data}` "
            "first, or check the path"
        )


class DataDirInUse(PosAssistError):
    """Another ``serve`` holds the data directory's lock (docs/relay.md, one relay per data dir)."""

    exit_code = EXIT_USAGE
    public_reason = "another relay is serving this data directory"
    public_reason_zh = "另一个服务器进程正在使用此数据目录"


#: The file in the data directory a serving relay holds an exclusive lock on.
SERVE_LOCK = "serve.lock"


def _hold_data_dir(data: Path) -> int:
    """Take the data directory's exclusive lock, before ``serve`` reads or writes anything else.

    The lock is the kernel's (flock): it goes when the process ends, however it ends, so a lock
    file left by a relay that died never blocks the next start. Returns the open descriptor,
    which the caller keeps open for as long as it serves.
    """
    import fcntl
    import os

    data.parent.mkdir(parents=True, exist_ok=True)
    data.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(data / SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise DataDirInUse(
            f"{data} (process {holder or '?'}); stop it first, or give another --data"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


#: Connections the kernel queues for accept (capped by net.core.somaxconn).
LISTEN_BACKLOG = 4096


async def serve(config: RelayConfig) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and drain for the grace period."""
    config = _fit_caps(config)
    _warn_if_shared(config.data_dir)
    ssl_context = None
    if config.tls_cert and config.tls_key:
        from .tls import server_ssl_context

        ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=config.shutdown_grace, access_log=None)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    # Every connection goes through the guard: deadlines and caps until it signs in
    # (relay/limits.py); aiohttp's own keep-alive timer is a second bound on idle connections.
    guard = app[GUARD]
    listener = await loop.create_server(
        guard.protocol_factory(
            runner.server, access_log=None, keepalive_timeout=config.idle_timeout
        ),
        config.host,
        config.port,
        ssl=ssl_context,
        # Before the TLS handshake the guard does not see a connection; this bounds it instead.
        ssl_handshake_timeout=config.header_timeout if ssl_context else None,
        reuse_address=True,
        # A restarted relay meets thousands of tills at once: they wait in the kernel's queue
        # (up to net.core.somaxconn) instead of having their SYNs dropped and retried seconds
        # later (asyncio's default is 100; docs/notes/16b-status.md).
        backlog=LISTEN_BACKLOG,
    )
    guard.start()
    port = listener.sockets[0].getsockname()[1]
    from .state import STATE

    state = app[STATE]
    state.config = config.with_port(port)
    url = state.config.public_url
    # the signals first: relay.url and metrics.url say "ready", and a reload (SIGHUP) or a stop
    # sent the moment they appear must find their handlers, not the default (death)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ssl_context is not None:
        # a renewed certificate (same key) for new connections; the ones open stay up
        loop.add_signal_handler(signal.SIGHUP, _reload_tls, ssl_context, config)
    else:
        loop.add_signal_handler(signal.SIGHUP, _no_tls_to_reload)
    from .metrics import METRICS, metrics_handler

    # /metrics shows fleet size and refusals: never on the agents' port, only on its own
    # listener (127.0.0.1 unless --metrics-host names an operator network)
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics_handler(app[METRICS]))
    metrics_runner = web.AppRunner(metrics_app, access_log=None)
    await metrics_runner.setup()
    site = web.TCPSite(metrics_runner, config.metrics_host, config.metrics_port)
    await site.start()
    bound = metrics_runner.addresses[0]
    host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    metrics_url = f"http://{host}:{bound[1]}/metrics"
    write_private(config.data_dir / "metrics.url", metrics_url)
    _release_startup_memory()
    write_private(config.data_dir / "relay.url", url)  # ready: the signals are handled already
    print(f"posassist relay {config.relay_id} listening on {url}", flush=True)  # the first line
    print(f"posassist relay metrics on {metrics_url}", flush=True)
    try:
        await stop.wait()
    finally:
        print("posassist relay shutting down", flush=True)
        # Stop accepting, let requests in flight finish (their replies still arrive), and only
        # then let aiohttp close everything (it ignores incoming data from the moment it starts).
        listener.close()
        await guard.stop()
        await drain_routes(app)
        # Every peer told "going away" (1001) while aiohttp still reads their close replies:
        # once its shutdown starts it drops them, and each close waited out close_timeout.
        await close_sockets(app)
        await runner.cleanup()
        await metrics_runner.cleanup()


def _no_tls_to_reload() -> None:
    """SIGHUP on a relay without TLS: nothing to reload, and no reason to stop."""
    logging.getLogger("posassist.relay").info("reload asked: no TLS certificate to reload")


def _reload_tls(context: ssl.SSLContext, config: RelayConfig) -> None:
    """SIGHUP: load the certificate and key files again into the live TLS context, so that new
    connections get a renewed certificate while open ones carry on (docs/operating.md#tls).

    Refused, keeping the old one, if the files don't load together or the key changed: every
    enrolled till trusts the relay by its key's pin, and would refuse a new key.
    """
    from .tls import server_ssl_context, spki_pin

    assert config.tls_cert is not None
    assert config.tls_key is not None
    try:
        pin = spki_pin(config.tls_cert.read_bytes())
        server_ssl_context(config.tls_cert, config.tls_key)  # both load, and match
    except (OSError, ValueError) as exc:
        log = logging.getLogger("posassist.relay")
        log.error("TLS certificate not reloaded, the old one stays: %s", exc)
        return
    log = logging.getLogger("posassist.relay")
    if pin != config.tls_pin:
        log.error(
            "TLS certificate not reloaded, the old one stays: %s has another key (pin %s, tills "
            "trust %s); renew it with the same key",
            config.tls_cert,
            pin,
            config.tls_pin,
        )
        return
    context.load_cert_chain(config.tls_cert, config.tls_key)
    log.info("TLS certificate reloaded from %s (pin %s unchanged)", config.tls_cert, pin)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or uvloop not installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _release_startup_memory() -> None:
    """Hand what start-up freed back to the system: imports and the schema check leave about
    1.4 MB of free heap that glibc keeps (docs/notes/16-status.md). Elsewhere, nothing."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            ctypes.CDLL(None).malloc_trim(0)


def _published_root_hash(repo_dir: Path) -> str | None:
    """The anchored root hash of a published script repository, or None when there is none:
    TUF (relay/scripts_repo.py) is imported only when a repository is published, so an idle
    relay without one never loads it (tests/relay/test_idle_imports.py)."""
    if not (repo_dir / "metadata" / "root.json").is_file():
        return None
    from .scripts_repo import anchored_root_hash

    return anchored_root_hash(repo_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("INFO", json=getattr(args, "log_json", False))
    try:
        if args.command not in ("init", "audit", "check-config"):  # those check for themselves
            _require_initialised(args.data, args.database)
        if args.command == "serve":
            lock = _hold_data_dir(args.data)  # noqa: F841 - held (open) until the process ends
            tls_pin = None
            if args.tls_cert:
                from .tls import spki_pin

                tls_pin = spki_pin(args.tls_cert.read_bytes())
            config = _config(
                args,
                host=args.host,
                port=args.port,
                metrics_host=args.metrics_host,
                metrics_port=args.metrics_port,
                public_url=args.public_url,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_pin=tls_pin,
                root_hash=_published_root_hash(args.data / "scripts"),
                heartbeat_interval=args.heartbeat,
                request_timeout=args.request_timeout,
                max_run_timeout=args.max_run_timeout,
                database_sync=args.sync,
                audit_checkpoint_interval=args.checkpoint_interval,
                header_timeout=args.header_timeout,
                idle_timeout=args.idle_timeout,
                http_request_timeout=args.http_request_timeout,
                max_unauthenticated=args.max_unauthenticated,
                max_unauthenticated_per_address=args.max_unauthenticated_per_address,
                max_handshakes_in_flight=args.max_handshakes_in_flight,
                refusal_window=args.refusal_window,
                flap_window=args.flap_window,
                flap_threshold=args.flap_threshold,
                webhook_timeout=args.webhook_timeout,
                webhook_retry_scale=args.webhook_retry_scale,
                webhook_allow_private=args.webhook_allow_private,
            )
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(serve(config))
            return 0
        if args.command == "audit":
            return asyncio.run(_audit_verify(args))
        if args.command == "check-config":
            return asyncio.run(_check_config(args))
        device_id = getattr(args, "device_id", None)
        if device_id is not None and not DEVICE_ID.fullmatch(device_id):  # before any storage
            raise BadArgument("DEVICE_ID must be letters, digits and . _ : - (at most 64)")
        _check_names(args)  # before any storage: nothing is created under a bad name
        if args.command == "init":
            # the password is checked before the data directory or the database is touched
            given = args.admin_password_file is not None
            password = (
                _password(args.admin_password_file, "") if given else secrets.token_urlsafe(12)
            )
            if len(password) < 10:
                print("error: the admin password must be at least 10 characters", file=sys.stderr)
                return 2
            config = _config(args)
            return int(
                asyncio.run(_with_storage(config, lambda s: _init(args, s, config, password)))
            )
        config = _config(args)
        return int(asyncio.run(_with_storage(config, lambda s: _admin(args, s, config))))
    except PosAssistError as exc:  # the one place errors become words and an exit status
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as exc:  # a file or value given on the command line
        print(f"error: {exc} / 参数或文件有误", file=sys.stderr)
        return EXIT_USAGE


async def _check_config(args: argparse.Namespace) -> int:
    """Print every finding, one line each; exit 1 if any is an error (docs/operating.md)."""
    from .checkconfig import check_config

    logging.getLogger("alembic").setLevel(logging.WARNING)
    found = await check_config(
        args.data,
        args.database,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        checkpoint_key=args.checkpoint_key,
    )
    for finding in found:
        print(printable(finding.line(), multiline=False))
    return 1 if any(f.level == "error" for f in found) else 0


def _check_names(args: argparse.Namespace) -> None:
    """A username or organisation/merchant/store name to be created: refused (exit 2) if the
    protocol or a terminal could not carry it as is (found in the outside attack, F9)."""
    if args.command == "init":
        problem = username_problem(args.admin_user)
        if problem is not None:
            raise BadArgument(f"--admin-user: {problem}")
        return
    if getattr(args, "action", None) != "create":
        return
    if args.command == "user":
        problem = username_problem(args.username)
        if problem is not None:
            raise BadArgument(f"--username: {problem}")
    elif args.command in ("organisation", "merchant", "store"):
        problem = name_problem(args.name)
        if problem is not None:
            raise BadArgument(f"--name: {problem}")


if __name__ == "__main__":
    sys.exit(main())
