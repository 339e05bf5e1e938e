"""A technician's restore rewrites the POS's files, so it waits for checkout like a script with
``no_sale_open``: refused while the POS profile says a sale is open, nothing touched, and the
relay told ``refused`` with the reason in both languages."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from posassist.agent.errors import ScriptRefusedError
from posassist.agent.profile import PosProfile
from posassist.agent.scripts.backup import BackupStore
from posassist.agent.scripts.runner import ScriptRunner
from posassist.protocol import messages as m
from tests.agent.test_cancel import Sent, _service
from tests.agent.test_runner import manifest, script_dir

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX runner tests")

CONFIG = b"[printer]\nport=COM3\n"


def _till(tmp_path: Path, profile: PosProfile | None) -> tuple[ScriptRunner, Path, str]:
    """A runner, the POS's config file, and a backup of it taken before a change."""
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    runner = ScriptRunner(
        backups=BackupStore(tmp_path / "backups"),
        placeholders={"POS_DATA": str(tmp_path / "pos")},
        profile=profile,
    )
    backup = runner.backups.backup([str(config)])
    config.write_bytes(b"port=COM7")
    return runner, config, backup.id


async def test_a_restore_waits_for_checkout(tmp_path: Path) -> None:
    sale_flag = tmp_path / "sale.open"
    sale_flag.write_text("receipt 42")
    profile = PosProfile(name="t", display_name="T", sale_open_file=str(sale_flag))
    runner, config, backup_id = _till(tmp_path, profile)
    with pytest.raises(ScriptRefusedError) as refused:
        await runner.restore(backup_id)
    assert refused.value.refusal.code == "sale_open"
    assert config.read_bytes() == b"port=COM7"  # nothing touched
    sale_flag.unlink()  # checkout
    assert (await runner.restore(backup_id)).verified
    assert config.read_bytes() == CONFIG


async def test_a_till_that_cannot_tell_a_sale_still_restores(tmp_path: Path) -> None:
    runner, config, backup_id = _till(tmp_path, None)
    assert (await runner.restore(backup_id)).verified
    assert config.read_bytes() == CONFIG


async def test_the_relay_hears_refused_with_both_languages(tmp_path: Path) -> None:
    sale_flag = tmp_path / "sale.open"
    sale_flag.write_text("receipt 42")
    profile = PosProfile(name="t", display_name="T", sale_open_file=str(sale_flag))
    runner, config, backup_id = _till(tmp_path, profile)
    service = _service(tmp_path, runner, manifest(), script_dir(tmp_path, "pass"))
    sent = Sent()
    request = m.ScriptRestoreRequest(id=5, device_id="dev-1", backup_id=backup_id, job_id="j-1")
    await service.restore(request, sent, lambda: 1.0)
    finished = await sent.wait_for(m.ScriptFinished, 5)
    assert (finished.status, finished.job_id) == ("refused", "j-1")
    assert "结账" in finished.detail
    assert "sale is open" in finished.detail
    assert config.read_bytes() == b"port=COM7"
