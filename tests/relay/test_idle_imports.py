"""The idle relay's import set: what `posassist-relay serve` on SQLite has loaded, unused.

Its RSS budget (≤ 70 MB, issue 16) is mostly modules; these stay out until they are used
(docs/notes/16-status.md): Alembic and Mako (only when a migration is pending), TUF and
securesystemslib (only when a script repository is published), the PostgreSQL driver and
SQLAlchemy's PostgreSQL dialect (only for a postgresql:// database), cryptography (its audit
checkpoints are signed and checked with ssl's OpenSSL, client/signer.py; passwords are hashed with
hashlib's scrypt; it loads with the first agent's sign-in, which it verifies).
A real relay process, provisioned by the real commands.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from posassist.relay.storage import head_revision
from posassist.relay.storage.sql import shipped_head
from tests.e2e.cli import provision

ROOT = Path(__file__).resolve().parents[2]

#: Runs ``posassist-relay`` as ``-m`` does; on SIGUSR1 writes ``sorted(sys.modules)`` to the
#: file named by argv[1], then says so on stdout.
HARNESS = """
import json, runpy, signal, sys
out = sys.argv.pop(1)
def dump(*_):
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    print("modules written", flush=True)
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "posassist-relay"
runpy.run_module("posassist.relay", run_name="__main__", alter_sys=True)
"""

#: Loaded when used, never by an idle relay on SQLite (a prefix matches the package and below).
NOT_AT_IDLE = (
    "alembic",
    "mako",
    "tuf",
    "securesystemslib",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.ext.asyncio",
    "cryptography",  # agents' sign-ins are verified with it (tests/relay/test_relay_core.py)
    "jinja2",  # the web console's templates load with its first page
    # and its pages with their first request (relay/web/routes.py): tests/relay/test_web_*.py
    "posassist.relay.web.pages",
    "posassist.relay.web.jobs",
    "posassist.relay.web.admin",
    "posassist.relay.web.words",
    "posassist.relay.fleet",
)

#: Proof that the dump is of a serving relay, not of an interpreter that did nothing.
AT_IDLE = (
    "posassist.relay.app",
    # its routes are there from the start, so a repository published later is served (issue
    # 17); what reads and signs TUF metadata loads with the first published repository
    "posassist.relay.scripts_repo",
    "posassist.relay.web.routes",  # every route of the web console is there from the start
    "posassist.relay.storage.sql",
    "sqlalchemy.dialects.sqlite",
    "aiohttp.web",
)


def _loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted({p for p in prefixes for m in modules if m == p or m.startswith(p + ".")})


def test_an_idle_relay_on_sqlite_has_not_imported_what_it_does_not_use(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)  # migrated by `init`: serve finds nothing pending
    dump = tmp_path / "modules.json"
    url_file = data / "relay.url"
    url_file.unlink(missing_ok=True)
    relay = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(dump), "serve", "--data", str(data), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        line = relay.stdout.readline()  # "posassist relay … listening on ws://…"
        assert "listening on" in line, line + relay.stderr.read()  # type: ignore[union-attr]
        relay.send_signal(signal.SIGUSR1)
        said = [relay.stdout.readline() for _ in range(2)]  # "… metrics on …" may come first
        assert "modules written\n" in said, said
        assert relay.poll() is None
    finally:
        relay.terminate()
        relay.communicate(timeout=30)
    modules = json.loads(dump.read_text())
    assert _loaded(modules, AT_IDLE) == sorted(AT_IDLE)
    assert _loaded(modules, NOT_AT_IDLE) == []


def test_the_newest_migration_file_names_alembics_head() -> None:
    # the relay skips Alembic when the database is at shipped_head(): it must be the real head
    assert shipped_head() == head_revision()


async def test_a_database_behind_the_shipped_migrations_is_still_migrated(
    tmp_path: Path,
) -> None:
    """The fast path skips only a database at the head: one a revision back is upgraded."""
    from alembic import command

    from posassist.relay.storage import open_storage
    from posassist.relay.storage.sql import _alembic_config

    head = shipped_head()
    assert head is not None
    older = f"{int(head) - 1:04d}"
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), older))
        assert await storage.current_revision() == older
        await storage.migrate()
        assert await storage.current_revision() == head
        await storage.migrate()  # at the head now: the fast path, nothing changes
        assert await storage.current_revision() == head
    finally:
        await storage.close()
