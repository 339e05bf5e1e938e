"""The operator's ``posassist`` commands as an operator runs them: the installed ``posassist``
console script in a subprocess against a real ``posassist-relay serve`` process, over plain
HTTP and over TLS trusted by a CA file (``login --ca-file``, kept for every later command, the
websocket included). Bad input: no terminal, Ctrl-D at the prompt, a delete without ``--yes``,
the wrong CA, a relay that is down; each one line, its exit status, nothing changed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from posassist.relay.passwords import verify_password
from tests.e2e.cli import ADMIN_PASSWORD, ROOT, provision, start_relay, stop
from tests.relay.certs import make_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

#: The installed console script, next to this interpreter (not ``python -m``).
POSASSIST = str(Path(sys.executable).parent / "posassist")


class Operator:
    """``posassist`` with a home of its own; stdin is never a terminal unless a test makes one."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("POSASSIST_PASSWORD", "POSASSIST_NEW_PASSWORD")
        }
        self.env.update(POSASSIST_HOME=str(home), **env)

    def __call__(
        self, *args: str, cwd: Path = ROOT, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [POSASSIST, *args],
            cwd=cwd,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def ok(self, *args: str, cwd: Path = ROOT, **env: str) -> str:
        result = self(*args, cwd=cwd, **env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def at_terminal(self, typed: bytes, *args: str) -> str:
        """Run with stdin on a pty where ``typed`` waits; exit 2 expected: its one error line."""
        master, slave = pty.openpty()
        try:
            os.write(master, typed)  # read by input() once it asks (no flush, unlike getpass)
            result = subprocess.run(
                [POSASSIST, *args],
                cwd=ROOT,
                env=self.env,
                stdin=slave,
                capture_output=True,
                text=True,
                timeout=120,
                start_new_session=True,
            )
        finally:
            os.close(slave)
            os.close(master)
        assert "Traceback" not in result.stdout + result.stderr
        assert "[y/N]" in result.stdout  # it asked
        return _one_line(result, 2)

    def session(self) -> dict[str, str]:
        return dict(json.loads((self.home / "session.json").read_text()))


def _one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    return line


@pytest.mark.slow
def test_an_operator_manages_stores_and_users_with_the_real_console(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)
    relay, url = start_relay(data)
    try:
        admin = Operator(tmp_path / "admin")
        # the password from the environment: nothing asked, nothing stored but the token
        said = admin.ok(
            "login", "--relay", url, "--user", "admin", POSASSIST_PASSWORD=ADMIN_PASSWORD
        )
        assert "signed in as admin" in said
        assert ADMIN_PASSWORD not in (admin.home / "session.json").read_text()

        assert "Noodles" in admin.ok("merchant", "list", "--org", "Acme")
        listed = admin.ok("store", "list")
        assert "Main St" in listed
        assert "Noodles" in listed  # its merchant by name
        admin.ok("store", "rename", "Main St", "人民路店")
        assert "人民路店" in admin.ok("store", "list")

        new_password = tmp_path / "li.pw"
        new_password.write_text("li-wei-first-password\n")
        admin.ok(
            "user", "create", "li.wei", "--role", "technician", "--scope", "store:人民路店",
            "--password-file", str(new_password),
        )  # fmt: skip
        tech = Operator(tmp_path / "li")
        tech.ok("login", "--relay", url, "--user", "li.wei", "--password-file", str(new_password))
        refused = _one_line(tech("user", "list"), 3)  # a technician: the relay's 403, in words
        assert "HTTP 403" in refused

        # no terminal and no --yes: nothing deleted
        line = _one_line(admin("user", "delete", "li.wei"), 2)
        assert "add --yes" in line
        assert "li.wei" in admin.ok("user", "list")
        # at a terminal, Ctrl-D (or anything but y) at the question: nothing deleted
        for typed in (b"\x04", b"n\n"):
            line = admin.at_terminal(typed, "user", "delete", "li.wei")
            assert line == (
                "error: bad argument: not confirmed: nothing was changed / 未确认, 未做任何更改"
                " / 参数有误"
            )
        assert "li.wei" in admin.ok("user", "list")
        admin.ok("user", "delete", "li.wei", "--yes")
        assert "li.wei" not in admin.ok("user", "list")
        assert "HTTP 401" in _one_line(tech("jobs"), 3)  # their sign-in went with them

        history = admin.ok("audit", "--limit", "50")
        assert "user.delete" in history
        assert "store.update" in history  # the rename (PATCH /v1/stores/{id})
        assert "posassist audit --before" in admin.ok("audit", "--limit", "2")
        assert "no jobs / 没有任务" in admin.ok("jobs")
        assert json.loads(admin.ok("jobs", "--json")) == {"jobs": [], "next_cursor": None}

        # own password: no terminal, no file, no variable → one line, exit 2, unchanged
        line = _one_line(admin("password"), 2)
        assert line == (
            "error: no terminal to ask on: give --password-file or set $POSASSIST_PASSWORD"
            " / 没有可输入密码的终端，请用文件提供"
        )
    finally:
        stop(relay)
    # the relay is down now: one line, exit 1, for every command
    line = _one_line(admin("org", "list"), 1)
    assert line.startswith("error: relay unreachable: ")


def test_ctrl_d_at_the_password_prompt_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as sock:  # nothing listens: it must stop before it tries
        sock.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}"
    operator = Operator(tmp_path / "home")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [POSASSIST, "login", "--relay", url, "--user", "admin"],
            cwd=ROOT,
            env=operator.env,
            stdin=slave,  # a terminal, but no controlling one: getpass reads it as stdin
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        assert proc.stderr is not None
        prompt = b""
        deadline = time.monotonic() + 60
        while b"password for admin:" not in prompt:  # getpass flushes input typed before it
            assert time.monotonic() < deadline, prompt
            ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
            chunk = os.read(proc.stderr.fileno(), 1024) if ready else b""
            assert chunk or not ready, prompt  # the console ended without asking
            prompt += chunk
        os.write(master, b"\x04")  # Ctrl-D: end of input, nothing typed
        _out, rest = proc.communicate(timeout=60)
        err = (prompt + rest).decode()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "error: no terminal to ask on: nothing typed; give --password-file or set "
        "$POSASSIST_PASSWORD / 没有可输入密码的终端，请用文件提供"
    )
    assert not (tmp_path / "home" / "session.json").exists()


# --- TLS: a relay whose certificate a private CA signed ----------------------------------------


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _ca(directory: Path, label: str) -> tuple[Path, CertificateIssuerPrivateKeyTypes, x509.Name]:
    key = make_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(label))
        .issuer_name(_name(label))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, _name(label)


def _server_cert(
    directory: Path, ca_key: CertificateIssuerPrivateKeyTypes, issuer: x509.Name
) -> tuple[Path, Path]:
    key = make_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "relay.crt", directory / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_a_tls_relay_is_trusted_by_the_ca_file_login_stored(tmp_path: Path) -> None:
    ca, ca_key, issuer = _ca(tmp_path / "pki", "shop-ca")
    other_ca, _, _ = _ca(tmp_path / "pki", "other-ca")
    cert, key = _server_cert(tmp_path / "pki", ca_key, issuer)
    data = tmp_path / "relay"
    provision(data)
    relay, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    assert url.startswith("wss://")
    try:
        admin = Operator(tmp_path / "admin", POSASSIST_PASSWORD=ADMIN_PASSWORD)
        login = ["login", "--relay", url, "--user", "admin"]
        # not trusted by the system's store, nor by another CA: nothing sent, no session kept
        for extra in ([], ["--ca-file", str(other_ca)]):
            line = _one_line(admin(*login, *extra), 3)
            assert "relay certificate not trusted" in line
        assert not (admin.home / "session.json").exists()
        assert "HTTP" not in _one_line(admin("health", "--relay", url), 3)

        bad = tmp_path / "not-a-cert.pem"
        bad.write_text("hello")
        assert "参数或文件有误" in _one_line(admin(*login, "--ca-file", str(bad)), 2)

        # a relative path is stored as an absolute one
        admin.ok(*login, "--ca-file", os.path.relpath(ca, tmp_path), cwd=tmp_path)
        assert admin.session()["tls_ca"] == str(ca)
        assert "agent(s) connected" in admin.ok("health", "--relay", url)  # the session's CA
        assert "Main St" in admin.ok("store", "list")  # HTTPS, trusted by the stored CA
        assert "Acme" in admin.ok("org", "list")
        # the websocket too: the relay answers the request (no such device), not a TLS failure
        diag = admin("diag", "dev_nowhere", "--timeout", "2")  # trusted: the relay answers
        assert diag.returncode == 3, diag.stdout + diag.stderr  # "not in your scope"
        assert "unreachable" not in diag.stderr
        assert "not trusted" not in diag.stderr
        # another CA named on the command line wins over the session's, and is refused
        line = _one_line(admin("health", "--relay", url, "--ca-file", str(other_ca)), 3)
        assert "relay certificate not trusted" in line
    finally:
        stop(relay)


def test_the_relay_takes_a_new_password_from_the_environment(tmp_path: Path) -> None:
    """``posassist-relay user password`` with no file and no terminal reads
    $POSASSIST_NEW_PASSWORD (client/prompt.py, the same rule as the console's)."""
    data = tmp_path / "relay"
    provision(data)
    env = {**os.environ, "POSASSIST_NEW_PASSWORD": "from-the-environment"}
    result = subprocess.run(
        [sys.executable, "-m", "posassist.relay", "user", "password", "admin", "--data", str(data)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "password of admin changed" in result.stdout
    with sqlite3.connect(data / "relay.db") as db:
        (hashed,) = db.execute(
            "SELECT password_hash FROM users WHERE username = 'admin'"
        ).fetchone()
    assert verify_password("from-the-environment", hashed)
