"""The script runner with real subprocesses: python scripts written into tmp dirs (issue 6)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]
import pytest

from posassist.agent.profile import PosProfile
from posassist.agent.scripts.backup import BackupStore, sha256_file
from posassist.agent.scripts.consent import ConsentDecision
from posassist.agent.scripts.process import MAX_CHUNK, OutputChunk
from posassist.agent.scripts.runner import RunEvent, ScriptRunner
from posassist.protocol.manifest import Manifest, parse_manifest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX runner tests")


def manifest(**overrides: Any) -> Manifest:
    raw: dict[str, Any] = {
        "id": "test-script",
        "version": "1.0.0",
        "title": {"zh": "测试脚本", "en": "Test script"},
        "description": {"zh": "测试", "en": "A test"},
        "changes": {"zh": "无", "en": "Nothing"},
        "platforms": ["linux", "windows"],
        "interpreter": "python",
        "entry": "main.py",
        "files": ["main.py"],
        "risk": "A",
        "consent": False,
        "unattended": True,
        "preconditions": [],
        "params": {},
        "timeout": 30,
        "max_output": 1024 * 1024,
        "backup": [],
        "expected_duration": 1,
    }
    raw.update(overrides)
    return parse_manifest(raw)


def script_dir(tmp_path: Path, code: str, **files: str) -> Path:
    folder = tmp_path / "verified"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(code), encoding="utf-8")
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


class Recorder:
    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.chunks: list[OutputChunk] = []

    async def event(self, event: RunEvent) -> None:
        self.events.append(event)

    async def output(self, chunk: OutputChunk) -> None:
        self.chunks.append(chunk)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def stdout(self) -> bytes:
        return b"".join(c.data for c in self.chunks if c.stream == "stdout")


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def runner(tmp_path: Path) -> ScriptRunner:
    return ScriptRunner(
        backups=BackupStore(tmp_path / "data" / "backups"),
        placeholders={"DATA": str(tmp_path / "data"), "POS_DATA": str(tmp_path / "pos")},
    )


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for a parent (PID 1 here may not reap)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        await asyncio.sleep(0.05)
    return gone(pid)


# --- running ------------------------------------------------------------------------------------


async def test_script_runs_with_params_as_argv_and_env_in_a_minimal_environment(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", "must-not-leak")
    m = manifest(
        params={
            "port": {"type": "string", "pattern": "COM[0-9]"},
            "cut": {"type": "boolean", "pass_as": "env"},
        }
    )
    folder = script_dir(
        tmp_path,
        """
        import json, os, sys
        print(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}))
        """,
    )
    result = await runner.run(
        m, folder, {"port": "COM3", "cut": True}, on_event=rec.event, on_output=rec.output
    )
    assert result.status == "succeeded", rec.events
    assert result.exit_code == 0
    import json

    seen = json.loads(rec.stdout())
    assert seen["argv"] == ["--port", "COM3"]
    assert seen["env"]["POSASSIST_PARAM_CUT"] == "true"
    assert "AGENT_SECRET" not in seen["env"]
    assert seen["cwd"] != str(folder)  # a fresh copy, never the verified folder
    assert not os.path.exists(seen["cwd"])  # noqa: ASYNC240 - and removed afterwards
    assert rec.kinds == ["started", "finished"]
    started = rec.events[0].detail
    assert os.path.isabs(started["argv"][0])
    assert started["argv"][0] == sys.executable


async def test_failing_script_reports_failed_with_its_exit_code(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    folder = script_dir(tmp_path, "import sys; sys.stderr.write('boom'); sys.exit(7)")
    result = await runner.run(manifest(), folder, {}, on_event=rec.event, on_output=rec.output)
    assert (result.status, result.exit_code) == ("failed", 7)
    assert [(c.stream, c.data) for c in rec.chunks] == [("stderr", b"boom")]


async def test_hanging_script_is_killed_with_its_grandchildren_at_the_timeout(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    pids = tmp_path / "pids"
    child = (
        "import os, subprocess, sys, time\n"
        # the grandchild even leaves the session, so killpg alone would miss it
        "gc = subprocess.Popen(\n"
        "    [sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(600)']\n"
        ")\n"
        f"open({str(pids)!r}, 'w').write('%d %d' % (os.getpid(), gc.pid))\n"
        "time.sleep(600)\n"
    )
    folder = script_dir(
        tmp_path,
        """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "child.py"])
        print("waiting", flush=True)
        time.sleep(600)
        """,
        **{"child.py": child},
    )
    started = time.monotonic()
    result = await runner.run(
        manifest(timeout=1, files=["main.py", "child.py"]),
        folder,
        {},
        on_event=rec.event,
        on_output=rec.output,
    )
    took = time.monotonic() - started
    assert result.status == "timed_out"
    assert took < 5
    child_pid, grandchild_pid = (int(p) for p in pids.read_text().split())
    assert await wait_gone(child_pid)
    assert await wait_gone(grandchild_pid)
    assert rec.stdout() == b"waiting\n"
    assert rec.events[-1].detail["status"] == "timed_out"


async def test_cancel_kills_the_tree_and_reports_cancelled(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    pidfile = tmp_path / "pid"
    folder = script_dir(
        tmp_path,
        f"""
        import subprocess, sys, time
        gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(gc.pid))
        print("ready", flush=True)
        time.sleep(600)
        """,
    )
    cancel = asyncio.Event()

    async def output(chunk: OutputChunk) -> None:
        await rec.output(chunk)
        if b"ready" in chunk.data:
            cancel.set()

    result = await runner.run(manifest(), folder, {}, on_output=output, cancel=cancel)
    assert result.status == "cancelled"
    assert await wait_gone(int(pidfile.read_text()))


async def test_flooding_script_is_capped_and_never_held_whole(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    flood = 32 * 1024 * 1024
    folder = script_dir(
        tmp_path,
        f"""
        import sys
        block = b"x" * 65536
        for _ in range({flood} // 65536):
            sys.stdout.buffer.write(block)
        sys.stderr.write("done")
        """,
    )
    sizes: list[int] = []

    async def output(chunk: OutputChunk) -> None:
        sizes.append(len(chunk.data))
        assert chunk.seq == len(sizes) - 1

    cap = 100_000
    tracemalloc.start()
    try:
        result = await runner.run(manifest(max_output=cap), folder, {}, on_output=output)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "succeeded"
    assert sum(sizes) == result.output_bytes == cap
    assert all(s <= MAX_CHUNK for s in sizes)
    assert result.dropped_bytes == flood + len("done") - cap
    assert peak < 4 * 1024 * 1024, peak  # 32 MiB went through; never more than a few chunks held
    assert "output capped" in result.detail


# --- refusals: nothing runs ---------------------------------------------------------------------

MARKER_SCRIPT = """
import pathlib, sys
pathlib.Path(sys.argv[0]).resolve()
pathlib.Path({marker!r}).write_text("ran")
"""


def marker_script(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    return script_dir(tmp_path, MARKER_SCRIPT.format(marker=str(marker))), marker


@pytest.mark.parametrize(
    ("names", "value"),
    [
        (("note", "config"), "; rm -rf /"),
        (("note", "config"), "$(touch /tmp/pwned)"),
        (("note", "config"), "`touch /tmp/pwned`"),
        (("note", "config"), "a\nb"),
        (("config",), "../../etc/shadow"),
        (("config",), "pos/../../etc/shadow"),
        (("config",), "/etc/shadow"),
        (("mode",), "fast; reboot"),
        (("copies",), "2"),
    ],
)
async def test_shell_and_traversal_parameters_are_refused_before_anything_runs(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder, names: tuple[str, ...], value: str
) -> None:
    folder, marker = marker_script(tmp_path)
    m = manifest(
        params={
            "note": {"type": "string"},
            "config": {"type": "path"},
            "mode": {"type": "enum", "enum": ["fast", "slow"]},
            "copies": {"type": "integer", "min": 1, "max": 3},
        },
        backup=["${DATA}/config.ini"],
    )
    for name in names:
        result = await runner.run(m, folder, {name: value}, on_event=rec.event)
        assert result.status == "refused"
        assert result.refusal is not None
        assert result.refusal.code == "invalid_params"
        assert value not in result.refusal.text  # never echoed
    assert not marker.exists()
    assert set(rec.kinds) == {"refused"}
    assert not (tmp_path / "data" / "backups").exists()  # not even a backup was made


async def test_proper_parameters_reach_the_script_verbatim(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    folder = script_dir(tmp_path, "import sys; print(repr(sys.argv[1:]))")
    m = manifest(params={"config": {"type": "path"}, "note": {"type": "string"}})
    result = await runner.run(
        m, folder, {"config": "pos/app.ini", "note": "a b=c"}, on_output=rec.output
    )
    assert result.status == "succeeded"
    assert rec.stdout().strip() == repr(["--config", "pos/app.ini", "--note", "a b=c"]).encode()


async def test_sale_open_refuses_and_nothing_runs(tmp_path: Path, rec: Recorder) -> None:
    sale_flag = tmp_path / "sale.open"
    sale_flag.write_text("receipt 42")
    runner = ScriptRunner(
        backups=BackupStore(tmp_path / "backups"),
        profile=PosProfile(name="t", display_name="T", sale_open_file=str(sale_flag)),
    )
    folder, marker = marker_script(tmp_path)
    m = manifest(preconditions=[{"kind": "no_sale_open"}])
    result = await runner.run(m, folder, {}, on_event=rec.event)
    assert result.status == "refused"
    assert result.refusal is not None
    assert result.refusal.code == "sale_open"
    assert "交易" in result.refusal.zh
    assert "sale is open" in result.refusal.en
    assert not marker.exists()
    assert rec.kinds == ["refused"]
    # after checkout the same request runs
    sale_flag.unlink()
    assert (await runner.run(m, folder, {})).status == "succeeded"
    assert marker.read_text() == "ran"


async def test_no_sale_open_without_a_profile_is_refused(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    folder, marker = marker_script(tmp_path)
    result = await runner.run(manifest(preconditions=[{"kind": "no_sale_open"}]), folder, {})
    assert result.refusal is not None
    assert result.refusal.code == "sale_unknown"
    assert not marker.exists()


async def test_running_process_refuses_process_stopped(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    folder, marker = marker_script(tmp_path)
    me = psutil.Process().name()
    m = manifest(preconditions=[{"kind": "process_stopped", "process": me}])
    result = await runner.run(m, folder, {})
    assert result.refusal is not None
    assert result.refusal.code == "process_running"
    assert not marker.exists()


class Answer:
    def __init__(self, decision: ConsentDecision | None) -> None:
        self.decision = decision
        self.asked: list[str] = []

    async def ask(self, manifest: Manifest, params: Any) -> ConsentDecision:
        self.asked.append(manifest.title[0])
        if self.decision is None:
            await asyncio.sleep(600)
        assert self.decision is not None
        return self.decision


@pytest.mark.parametrize(
    ("decision", "code"),
    [(ConsentDecision.DENIED, "consent_denied"), (None, "consent_timed_out")],
)
async def test_consent_denied_or_timed_out_refuses_and_nothing_runs(
    tmp_path: Path, rec: Recorder, decision: ConsentDecision | None, code: str
) -> None:
    answer = Answer(decision)
    runner = ScriptRunner(
        backups=BackupStore(tmp_path / "backups"), consent=answer, consent_timeout=0.3
    )
    folder, marker = marker_script(tmp_path)
    result = await runner.run(
        manifest(consent=True, backup=[str(tmp_path / "x")]), folder, {}, on_event=rec.event
    )
    assert result.status == "refused"
    assert result.refusal is not None
    assert result.refusal.code == code
    assert answer.asked == ["测试脚本"]
    assert rec.kinds == ["consent_asked", "consent_answered", "refused"]
    assert not marker.exists()
    assert not (tmp_path / "backups").exists()


async def test_default_policy_denies_unless_the_manifest_allows_unattended(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    folder, marker = marker_script(tmp_path)
    denied = await runner.run(
        manifest(consent=True, unattended=False), folder, {}, on_event=rec.event
    )
    assert denied.refusal is not None
    assert denied.refusal.code == "consent_denied"
    assert not marker.exists()
    granted = await runner.run(manifest(consent=True, unattended=True), folder, {})
    assert granted.status == "succeeded"
    assert marker.exists()


async def test_unattended_request_for_an_attended_script_is_refused(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    folder, marker = marker_script(tmp_path)
    result = await runner.run(manifest(unattended=False), folder, {}, unattended=True)
    assert result.refusal is not None
    assert result.refusal.code == "unattended_not_allowed"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"platforms": ["windows"]}, "wrong_platform"),
        ({"interpreter": "powershell"}, "wrong_interpreter"),
        ({"interpreter": "cmd"}, "wrong_interpreter"),
    ],
)
async def test_script_for_another_os_is_refused(
    tmp_path: Path, runner: ScriptRunner, overrides: dict[str, Any], code: str
) -> None:
    folder, marker = marker_script(tmp_path)
    result = await runner.run(manifest(**overrides), folder, {})
    assert result.refusal is not None
    assert result.refusal.code == code
    assert not marker.exists()


async def test_sh_script_runs_with_bin_sh(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    folder = tmp_path / "verified"
    folder.mkdir()
    (folder / "fix.sh").write_text('printf "%s|" "$@"\n')
    m = manifest(
        interpreter="sh", entry="fix.sh", files=["fix.sh"], params={"note": {"type": "string"}}
    )
    result = await runner.run(m, folder, {"note": "a b"}, on_output=rec.output, on_event=rec.event)
    assert result.status == "succeeded"
    assert rec.stdout() == b"--note|a b|"
    assert rec.events[0].detail["argv"][0] == "/bin/sh"


async def test_missing_or_linked_script_file_is_refused(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    folder, marker = marker_script(tmp_path)
    (tmp_path / "elsewhere.py").write_text("print(1)")
    os.symlink(tmp_path / "elsewhere.py", folder / "helper.py")
    result = await runner.run(manifest(files=["main.py", "helper.py"]), folder, {})
    assert result.refusal is not None
    assert result.refusal.code == "files_missing"
    assert not marker.exists()


# --- backup and restore -------------------------------------------------------------------------

CONFIG = b"[printer]\r\nport=COM3\r\n\x00\xff\xfe binary tail \xe6\x94\xb6\xe9\x93\xb6\n"


async def test_failed_script_after_changing_a_backed_up_file_is_restored_byte_for_byte(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    pos = tmp_path / "pos"
    pos.mkdir()
    config = pos / "config.ini"
    config.write_bytes(CONFIG)
    config.chmod(0o640)
    created = pos / "new.ini"
    folder = script_dir(
        tmp_path,
        f"""
        import sys
        open({str(config)!r}, "wb").write(b"port=COM7\\n")
        open({str(created)!r}, "w").write("left behind")
        sys.exit(3)
        """,
    )
    m = manifest(backup=["${POS_DATA}/config.ini", "${POS_DATA}/new.ini"])
    result = await runner.run(m, folder, {}, on_event=rec.event)
    assert (result.status, result.exit_code) == ("failed", 3)
    assert config.read_bytes() == CONFIG
    assert oct(config.stat().st_mode & 0o777) == oct(0o640)
    assert not created.exists()  # did not exist before: removed
    assert rec.kinds == ["backup_made", "started", "finished", "restored"]
    assert result.restore is not None
    assert result.restore.verified
    assert result.restore.restored == (str(config),)
    assert result.restore.removed == (str(created),)
    assert result.backup_id is not None
    assert result.backup_id == rec.events[0].detail["backup_id"]
    index = (tmp_path / "data" / "backups" / result.backup_id / "index.json").read_text()
    import hashlib

    assert hashlib.sha256(CONFIG).hexdigest() in index


async def test_timed_out_script_restores_its_backup(tmp_path: Path, runner: ScriptRunner) -> None:
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    folder = script_dir(
        tmp_path,
        f"""
        import time
        open({str(config)!r}, "ab").write(b"half written")
        time.sleep(600)
        """,
    )
    result = await runner.run(manifest(timeout=1, backup=["${POS_DATA}/config.ini"]), folder, {})
    assert result.status == "timed_out"
    assert config.read_bytes() == CONFIG


async def test_succeeded_script_keeps_its_changes_and_a_technician_can_restore_later(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    folder = script_dir(tmp_path, f"open({str(config)!r}, 'wb').write(b'port=COM7')")
    result = await runner.run(manifest(backup=["${POS_DATA}/config.ini"]), folder, {})
    assert result.status == "succeeded"
    assert config.read_bytes() == b"port=COM7"
    assert result.backup_id is not None
    restored = await runner.restore(result.backup_id, on_event=rec.event)
    assert restored.verified
    assert config.read_bytes() == CONFIG
    assert rec.kinds == ["restored"]
    again = await runner.restore(result.backup_id)  # idempotent
    assert again.unchanged == (str(config),)


async def test_backup_of_a_symlink_is_refused_and_nothing_runs(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    (tmp_path / "pos").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("not yours")
    os.symlink(secret, tmp_path / "pos" / "config.ini")
    folder, marker = marker_script(tmp_path)
    result = await runner.run(manifest(backup=["${POS_DATA}/config.ini"]), folder, {})
    assert result.refusal is not None
    assert result.refusal.code == "backup_failed"
    assert not marker.exists()


async def test_restore_replaces_a_symlink_planted_by_the_script_without_touching_its_target(
    tmp_path: Path, runner: ScriptRunner
) -> None:
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    folder = script_dir(
        tmp_path,
        f"""
        import os, sys
        os.unlink({str(config)!r})
        os.symlink({str(victim)!r}, {str(config)!r})
        sys.exit(1)
        """,
    )
    result = await runner.run(manifest(backup=["${POS_DATA}/config.ini"]), folder, {})
    assert result.status == "failed"
    assert not config.is_symlink()
    assert config.read_bytes() == CONFIG
    assert victim.read_bytes() == b"keep me"


async def test_damaged_backup_is_not_restored(tmp_path: Path, runner: ScriptRunner) -> None:
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    store = runner.backups
    record = store.backup([str(config)])
    copy = record.entries[0].copy
    (store.root / record.id / copy).write_bytes(b"tampered")
    config.write_bytes(b"changed")
    from posassist.agent.errors import BackupError

    with pytest.raises(BackupError, match="damaged"):
        await runner.restore(record.id)
    assert config.read_bytes() == b"changed"
    with pytest.raises(BackupError, match="malformed"):
        await runner.restore("../../etc")
    assert sha256_file(str(config))[1] == len(b"changed")


async def test_preconditions_are_checked_again_after_consent(tmp_path: Path, rec: Recorder) -> None:
    sale_flag = tmp_path / "sale.open"

    class OpensASaleWhileAsking:
        async def ask(self, manifest: Manifest, params: Any) -> ConsentDecision:
            sale_flag.write_text("a customer walked in")
            return ConsentDecision.GRANTED

    runner = ScriptRunner(
        backups=BackupStore(tmp_path / "backups"),
        consent=OpensASaleWhileAsking(),
        profile=PosProfile(name="t", display_name="T", sale_open_file=str(sale_flag)),
    )
    folder, marker = marker_script(tmp_path)
    m = manifest(consent=True, preconditions=[{"kind": "no_sale_open"}])
    result = await runner.run(m, folder, {}, on_event=rec.event)
    assert result.refusal is not None
    assert result.refusal.code == "sale_open"
    assert rec.kinds == ["consent_asked", "consent_answered", "refused"]
    assert not marker.exists()


async def test_a_cancelled_run_restores_its_backup_off_the_event_loop(
    tmp_path: Path, runner: ScriptRunner, rec: Recorder
) -> None:
    import threading

    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    folder = script_dir(
        tmp_path,
        f"""
        import time
        open({str(config)!r}, "ab").write(b"half written")
        print("written", flush=True)
        time.sleep(600)
        """,
    )
    threads: list[threading.Thread] = []
    restore = runner.backups.restore

    def recording_restore(backup_id: str):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return restore(backup_id)

    runner.backups.restore = recording_restore  # type: ignore[method-assign]
    written = asyncio.Event()

    async def output(chunk: OutputChunk) -> None:
        if b"written" in chunk.data:
            written.set()

    task = asyncio.ensure_future(
        runner.run(manifest(backup=["${POS_DATA}/config.ini"]), folder, {}, on_output=output)
    )
    await asyncio.wait_for(written.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert config.read_bytes() == CONFIG
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()  # a worker, not the event loop's thread
