"""The README's "## Usage" commands, run in order as a new operator would run them.

Every line of the section's ``sh`` blocks is run as written, without a shell (shlex), by the
installed commands. Only the environment is substituted: the data folders, the host name, the
listening address and port, and the ids, tokens and hashes earlier commands printed. A line that
cannot run here is skipped only through :data:`NOT_RUN_HERE`, which names the test that covers it;
any other program, or a README line nobody planned for, fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.e2e.cli import communicate, lines

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

#: The programs a README line may call; the posassist ones come from this checkout's venv.
PROGRAMS = {
    "posassist-relay",
    "posassist-scripts",
    "posassist-agent",
    "posassist",
    "openssl",
    "curl",
}

#: README lines that cannot run here (matched by their first words), each with the test that
#: covers it instead. Every entry must match exactly one README line.
NOT_RUN_HERE = {
    ("pip", "install"): "tests/e2e/test_packaging.py installs the agent wheel into Python 3.8",
    ("posassist", "restore"): (
        "needs a backup id from a run that backed up a file, and every catalog script that backs "
        "up asks the merchant's consent, which nobody gives in this walk: "
        "tests/e2e/test_vetted_scripts.py::test_technician_restores_a_backup_byte_for_byte"
    ),
    ("posassist", "cancel"): (
        "needs the job id of a run still in progress, and every catalog script ends in seconds: "
        "tests/e2e/test_script_cancel.py::"
        "test_posassist_cancel_stops_a_real_tills_script_and_its_process_tree"
    ),
}

#: Commands whose exit status says more than done or failed: first words → exits that are fine,
#: and what stdout shows for a non-zero one. ``diag --offline`` exits 1 when a section failed (no
#: POS software or CUPS on this machine); the README says so, and the report names the cause.
EXITS: dict[tuple[str, ...], tuple[set[int], str]] = {
    ("posassist-agent", "diag", "--offline"): ({0, 1}, "no POS profile configured"),
}

#: Commands that keep running: started in the background, waited on until ready.
BACKGROUND = {("posassist-relay", "serve"), ("posassist-agent", "run")}

#: Ids, tokens and hashes in the README, and how to find their real value in a command's output.
PLACEHOLDERS = {
    "org_…": re.compile(r"\borg_[0-9a-f]{8,}\b"),
    "mer_…": re.compile(r"\bmer_[0-9a-f]{8,}\b"),
    "sto_…": re.compile(r"\bsto_[0-9a-f]{8,}\b"),
    "dev_…": re.compile(r"\bdev_[0-9a-f]{8,}\b"),
    "PA1-…": re.compile(r"\bPA1-[A-Za-z0-9_-]+"),
    "K7Q2-…": re.compile(r"(?<=support code / 服务码: )[0-9A-Z]{4}-[0-9A-Z]{4}\b"),
}
ROOT_HASH = "3f…"  # printed by `posassist-scripts root-hash` alone

PASSWORDS = {"admin.pw": "the-operators-admin-password", "li.wei.pw": "li-wei-technician-pw"}
PASSPHRASE = "the-approvers-passphrase"

#: What each command must print (first words → texts its stdout must hold). Reports are checked
#: for what they are about, not for how console/render.py lays them out.
CLAIMS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("posassist-relay", "init"): (
        "admin user: admin",
        "one-time admin password",
        "change it with: posassist-relay user password admin --data ",
    ),
    ("posassist-relay", "user", "password"): ("password of admin changed",),
    ("posassist-relay", "user", "create"): ("user li.wei (technician, store:sto_",),
    ("posassist-relay", "enrolment", "create"): ("PA1-",),
    ("posassist-scripts", "init"): ("root hash",),
    ("posassist-scripts", "publish"): ("published to",),
    ("posassist-scripts", "retire"): ("retired 2 target(s)",),
    ("posassist-agent", "enroll"): ("enrolled as device dev_",),
    ("posassist-agent", "trust-root"): ("root is trusted",),
    ("posassist-agent", "diag"): ("localhost",),  # the network section probed the relay
    ("posassist", "login"): ("signed in as ",),  # admin first, then li.wei (technician)
    ("posassist", "store", "set"): ("time zone / 时区: Asia/Shanghai", "mon-sun 09:00-22:00"),
    ("posassist", "sla", "set"): ("响应时限: 30m", "解决时限: 4h"),
    ("posassist", "tickets"): ("no tickets / 没有工单",),  # nobody has asked yet
    ("posassist", "ticket", "open"): ("accepted / 已接单", "support code / 服务码: "),
    ("posassist", "ticket", "note"): ("waiting for the merchant / 等待商户", "SLA paused"),
    ("posassist", "ticket", "resolve"): ("resolved / 已解决",),
    ("posassist", "ticket", "show"): (
        "小票打印机缺纸",
        "asked the merchant / 提问商户",
        "resolved",
    ),
    ("posassist", "report"): ("report written / 报告已保存: report.html",),
    ("posassist", "health"): ("ok, 1 agent(s) connected",),
    ("posassist", "devices"): ("dev_", " yes "),
    ("posassist", "diag"): ("dev_", "localhost"),
    ("posassist", "scripts", "list"): (
        "clean-temp-folders",
        "printer-status-test",
        "fix-printer-port",
    ),
    ("posassist", "run"): (
        "[verified] signatures verified / 签名已验证: risk A",
        "(dry run)",
        "succeeded (exit 0)",
    ),
    ("posassist-relay", "audit", "verify"): ("audit chain intact",),
    ("posassist-relay", "device", "revoke"): ("revoked",),
    ("curl",): ("posassist_relay_agents_connected 1.0",),
}


def usage_lines(readme: str) -> list[str]:
    """The logical command lines of the fenced ``sh`` blocks under "## Usage", in order:
    continuation lines joined, comment-only and blank lines left out (comments after a
    command are left for shlex)."""
    section = readme.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "README's Usage section has no ```sh block"
    lines: list[str] = []
    pending = ""
    for raw in "\n".join(blocks).splitlines():
        text = pending + raw.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            lines.append(text)
    assert not pending, "a README command ends with a line continuation"
    return lines


def words(line: str) -> list[str]:
    """A line's argv without its comment; the Windows path is written with a backslash, which
    shlex would eat, so it is made POSIX first (it is replaced by a folder anyway)."""
    return shlex.split(line.replace("C:\\posassist", "C:/posassist"), comments=True)


def _matches(argv: list[str], prefix: tuple[str, ...]) -> bool:
    return tuple(argv[: len(prefix)]) == prefix


@dataclass
class Plan:
    """The README's lines sorted into run in the foreground, in the background, or not here."""

    lines: list[str]
    skipped: dict[tuple[str, ...], list[str]] = field(default_factory=dict)


def plan(readme: str) -> Plan:
    """Every Usage line classified; AssertionError for a line that would go untested."""
    result = Plan(lines=usage_lines(readme))
    for line in result.lines:
        argv = words(line)
        skipped = [prefix for prefix in NOT_RUN_HERE if _matches(argv, prefix)]
        if skipped:
            result.skipped.setdefault(skipped[0], []).append(line)
            continue
        assert argv[0] in PROGRAMS, (
            f"README line {line!r} runs {argv[0]!r}: run it in this test or add it, with the test "
            "that covers it, to NOT_RUN_HERE"
        )
    for prefix in NOT_RUN_HERE:
        found = result.skipped.get(prefix, [])
        assert len(found) == 1, f"NOT_RUN_HERE {prefix} matches {len(found)} README lines"
    return result


class Operator:
    """Runs README lines in a folder of its own, substituting only the environment."""

    def __init__(self, home: Path) -> None:
        self.cwd = home / "work"
        self.relay_dir = home / "var-lib-posassist"
        self.till_dir = home / "till"
        self.cwd.mkdir(parents=True)
        (self.cwd / "catalog").symlink_to(ROOT / "catalog")  # the checkout's catalog/
        for name, password in PASSWORDS.items():
            (self.cwd / name).write_text(password + "\n")
        self.env = dict(
            os.environ,
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            HOME=str(home / "home"),
            POSASSIST_HOME=str(home / "technician"),
            POSASSIST_SCRIPTS_PASSPHRASE=PASSPHRASE,
            PYTHONUNBUFFERED="1",
        )
        self.values: dict[str, str] = {}
        self.root_hashes: list[str] = []
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.outputs: list[tuple[str, str]] = []
        self.relay: subprocess.Popen[str] | None = None
        self.relay_log_file: IO[str] | None = None
        self.agent: subprocess.Popen[str] | None = None
        self.agent_said: list[str] = []  # the agent's output up to "connected"

    # -- substitution ---------------------------------------------------------------------

    def argv(self, line: str) -> list[str]:
        text = line.replace("/var/lib/posassist", str(self.relay_dir))
        text = text.replace("C:\\posassist", str(self.till_dir))
        text = text.replace("relay.example", "localhost").replace("0.0.0.0", "127.0.0.1")
        argv = shlex.split(text, comments=True)
        if _matches(argv, ("posassist-relay", "serve")):
            argv[argv.index("--port") + 1] = "0"  # a free port; read back from relay.url
            if "--metrics-port" in argv:  # likewise, from metrics.url
                argv[argv.index("--metrics-port") + 1] = "0"
        out = []
        for arg in argv:
            if ":8765" in arg:
                assert self.port is not None, f"{line!r} uses the relay's port before serve"
                arg = arg.replace(":8765", f":{self.port}")
            if ":9108" in arg:
                assert self.metrics_port is not None, f"{line!r} uses /metrics before serve"
                arg = arg.replace(":9108", f":{self.metrics_port}")
            for placeholder in [*PLACEHOLDERS, ROOT_HASH]:
                if placeholder in arg:
                    assert placeholder in self.values, (
                        f"{line!r} needs {placeholder} before any command printed one"
                    )
                    arg = arg.replace(placeholder, self.values[placeholder])
            assert "…" not in arg, f"{line!r}: no earlier command printed {arg!r}"
            out.append(arg)
        return out

    def remember(self, argv: list[str], stdout: str) -> None:
        """Note the ids, tokens and root hash a command printed, for the lines after it."""
        if _matches(argv, ("posassist-scripts", "root-hash")):
            (self.values[ROOT_HASH],) = re.findall(r"^[0-9a-f]{64}$", stdout, flags=re.MULTILINE)
            self.root_hashes.append(self.values[ROOT_HASH])
            return
        for placeholder, pattern in PLACEHOLDERS.items():
            for value in set(pattern.findall(stdout)):
                old = self.values.setdefault(placeholder, value)
                assert old == value, f"{argv[:3]} printed a second {placeholder}: {value}"

    # -- running --------------------------------------------------------------------------

    def call(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        """A command of the test's own (not a README line), in the operator's folder."""
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=dict(self.env, **env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def run(self, line: str, *, remember: bool = True) -> str:
        """Run one README line; with ``remember`` note what it printed for the lines after it."""
        argv = self.argv(line)
        if any(_matches(argv, prefix) for prefix in BACKGROUND):
            self._start(argv)
            return ""
        result = subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,  # a line that would prompt fails here instead of hanging
            capture_output=True,
            text=True,
            timeout=60,
        )
        allowed, shown = next(
            (exits for prefix, exits in EXITS.items() if _matches(argv, prefix)), ({0}, "")
        )
        assert result.returncode in allowed, (
            f"README command failed (exit {result.returncode}): {line}\n"
            f"argv: {argv}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        if result.returncode != 0:
            assert shown in result.stdout, f"{line!r} exit {result.returncode}:\n{result}"
        for prefix, claims in CLAIMS.items():
            if _matches(argv, prefix):
                for claim in claims:
                    assert claim in result.stdout, f"{line!r} did not print {claim!r}:\n{result}"
        if remember:
            self.remember(argv, result.stdout)
            self.outputs.append((line, result.stdout))
        return result.stdout

    def _start(self, argv: list[str]) -> None:
        if argv[0] == "posassist-relay":
            url_file = self.relay_dir / "relay.url"
            url_file.unlink(missing_ok=True)
            self.relay_log_file = (self.cwd.parent / "relay.log").open("w")
            self.relay = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self.relay_log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
            deadline = time.monotonic() + 30
            while not (url_file.exists() and url_file.read_text()):
                assert self.relay.poll() is None, f"relay exited: {self.relay_log()}"
                assert time.monotonic() < deadline, f"relay did not start: {self.relay_log()}"
                time.sleep(0.05)  # polling a file the relay writes once it listens
            url = url_file.read_text()
            assert url.startswith("wss://"), url  # the README's relay speaks TLS
            self.port = int(url.rsplit(":", 1)[1])
            metrics = self.relay_dir / "metrics.url"
            if metrics.exists():  # --metrics-port: written before relay.url
                self.metrics_port = int(metrics.read_text().rsplit(":", 1)[1].split("/")[0])
            return
        self.agent = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait_for_agent_line("connected to relay", 30)

    def wait_for_agent_line(self, text: str, within: float) -> None:
        """Read the agent's lines into :attr:`agent_said` until one holds ``text``."""
        assert self.agent is not None
        deadline = time.monotonic() + within
        while not any(text in line for line in self.agent_said):
            line = lines(self.agent).readline(max(0.0, deadline - time.monotonic()))
            assert line, f"the agent never said {text!r}: {self.agent_said}"
            self.agent_said.append(line)

    def relay_log(self) -> str:
        return (self.cwd.parent / "relay.log").read_text()

    def stop(self) -> int | None:
        """Stop the agent, then the relay (SIGTERM: a graceful shutdown); the relay's exit."""
        code = None
        for proc in (self.agent, self.relay):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        if self.agent is not None:
            communicate(self.agent, 15)  # reads to the end of the exited agent's output
        if self.relay_log_file is not None:
            self.relay_log_file.close()
        if self.relay is not None:
            code = self.relay.returncode
        return code


@pytest.mark.slow
@pytest.mark.timeout(240)  # ~25 s alone; about fifty processes start, slower on a busy machine
def test_readme_usage_runs_in_order_as_written(tmp_path: Path) -> None:
    assert shutil.which("openssl"), "openssl is needed to make the README's TLS certificate"
    assert shutil.which("curl"), "curl is needed for the README's metrics line"
    steps = plan(README.read_text(encoding="utf-8"))
    operator = Operator(tmp_path)
    retired = False
    try:
        for line in steps.lines:
            argv = words(line)
            if any(_matches(argv, prefix) for prefix in NOT_RUN_HERE):
                continue
            operator.run(line)
            # what the README's comments promise, checked where the walk has got to
            retired = retired or _matches(argv, ("posassist-scripts", "retire"))
            if retired and _matches(argv, ("posassist-scripts", "publish")):
                _the_till_refuses_the_retired_version(operator, steps)
            if _matches(argv, ("posassist-relay", "device", "revoke")):
                _the_revoked_till_is_refused(operator)
            if _matches(argv, ("posassist-relay", "serve")):
                _a_plain_connection_to_the_tls_relay_fails(operator)
        _stores_enrolled_after_the_retirement_need_the_new_root_hash(operator, steps, tmp_path)
        _the_merchant_facing_example_is_the_agents_real_line(operator)
        _the_one_time_admin_password_is_replaced(operator, tmp_path)
    finally:
        relay_exit = operator.stop()
    assert relay_exit == 0, operator.relay_log()


def _a_plain_connection_to_the_tls_relay_fails(operator: Operator) -> None:
    """The README's relay speaks only TLS: the same address over plain ws:// gets nothing."""
    plain = operator.call(["posassist", "health", "--relay", f"ws://localhost:{operator.port}"])
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "relay unreachable" in plain.stderr, plain.stderr
    pinned = operator.call(
        [
            *("posassist", "health", "--relay", f"wss://localhost:{operator.port}"),
            *("--tls-cert", "relay.crt"),
        ]
    )
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr  # the same relay, over TLS


def _the_till_refuses_the_retired_version(operator: Operator, steps: Plan) -> None:
    (run_line,) = [line for line in steps.lines if words(line)[:2] == ["posassist", "run"]]
    again = operator.call(operator.argv(run_line))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "not-found" in again.stdout
    assert "started (job" not in again.stdout


def _the_revoked_till_is_refused(operator: Operator) -> None:
    """Disconnected by the running relay, and refused when it tries again."""
    operator.wait_for_agent_line("the relay refused this device", 30)
    listed = operator.call(["posassist", "devices"])
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("dev_")]
    assert row.split()[1:3] == ["no", "revoked"], row


def _stores_enrolled_after_the_retirement_need_the_new_root_hash(
    operator: Operator, steps: Plan, tmp_path: Path
) -> None:
    first, newest = operator.root_hashes
    assert first != newest
    (token_line,) = [line for line in steps.lines if "enrolment create" in line]
    for root_hash, code in ((first, 3), (newest, 0)):
        token = operator.run(token_line, remember=False).strip()
        till = tmp_path / f"till-{code}"
        enrolled = operator.call(
            ["posassist-agent", "enroll", token, "--data", str(till), "--root-hash", root_hash]
        )
        assert enrolled.returncode == code, enrolled.stdout + enrolled.stderr


def _the_merchant_facing_example_is_the_agents_real_line(operator: Operator) -> None:
    (example,) = re.findall(r"for example\n`([^`]+)`", README.read_text(encoding="utf-8"))
    pattern = re.escape(example).replace("relay\\-1a2b", r"relay-[0-9a-f]+")
    pattern = pattern.replace("dev_…", r"dev_[0-9a-f]+")
    connected = [line.strip() for line in operator.agent_said if "connected to" in line]
    assert connected, operator.agent_said
    assert re.fullmatch(pattern, connected[0]), (example, connected[0])


def _the_one_time_admin_password_is_replaced(operator: Operator, tmp_path: Path) -> None:
    """The password ``relay init`` printed no longer signs in; the operator's own does."""
    (init_output,) = [out for line, out in operator.outputs if "relay init" in line]
    one_time = init_output.split("one-time admin password (shown once, change it): ")[1]
    one_time = one_time.splitlines()[0]
    (operator.cwd / "one-time.pw").write_text(one_time)
    admin_home = str(tmp_path / "admin")
    url = f"wss://localhost:{operator.port}"
    for password_file, code in (("one-time.pw", 3), ("admin.pw", 0)):
        login = operator.call(
            [
                *("posassist", "login", "--relay", url, "--user", "admin"),
                *("--password-file", password_file, "--tls-cert", "relay.crt"),
            ],
            POSASSIST_HOME=admin_home,
        )
        assert login.returncode == code, login.stdout + login.stderr


def test_readme_names_the_agent_wheel_make_agent_wheel_builds() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (pip,) = plan(README.read_text(encoding="utf-8")).skipped[("pip", "install")]
    assert words(pip)[2] == f"posassist_agent-{version}-py3-none-any.whl"


# --- the test's own rules: nothing goes untested silently -------------------------------------

FAKE = """# x

## Usage

```sh
# a comment
posassist-relay audit verify \\
    --data /var/lib/posassist   # trailing comment
{extra}
pip install posassist_agent-0.1.0.dev0-py3-none-any.whl
posassist restore dev_… 20261205T081500Z-1a2b3c4d
posassist cancel job_…
```

## Status
"""


def test_a_readme_line_with_another_program_fails_the_plan() -> None:
    with pytest.raises(AssertionError, match="runs 'rm'"):
        plan(FAKE.format(extra="rm -rf /var/lib/posassist"))


def test_a_not_run_here_entry_that_matches_no_line_fails_the_plan() -> None:
    with pytest.raises(AssertionError, match=r"NOT_RUN_HERE \('pip', 'install'\) matches 0"):
        plan(FAKE.format(extra="").replace("pip install", "posassist-agent diag --data x #"))


def test_the_plan_joins_continuations_and_drops_comments() -> None:
    steps = plan(FAKE.format(extra=""))
    audit = ["posassist-relay", "audit", "verify", "--data", "/var/lib/posassist"]
    assert words(steps.lines[0]) == audit
    assert len(steps.lines) == 4  # audit verify, pip, restore and cancel


def test_a_failing_readme_command_fails_the_walk(tmp_path: Path) -> None:
    """``audit verify`` on a folder no relay was made in exits 2: the walk must stop there."""
    operator = Operator(tmp_path)
    with pytest.raises(AssertionError, match="README command failed \\(exit 2\\)"):
        operator.run(plan(FAKE.format(extra="")).lines[0])
    assert not operator.relay_dir.exists()  # and it made nothing


def test_a_placeholder_no_command_printed_fails_the_walk(tmp_path: Path) -> None:
    operator = Operator(tmp_path)
    with pytest.raises(AssertionError, match="needs dev_… before any command printed one"):
        operator.argv("posassist diag dev_…")
