"""Helpers for the starter-catalog tests: load a shipped script, run it through ScriptRunner.

Scripts reach fixed absolute paths (tools, /sys, config files, temp folders). In these tests they
are re-rooted under a tmp dir with ``POSASSIST_TEST_ROOT``, which only a test can set: the
runner builds the script environment from scratch in ``minimal_env`` and manifest parameters
only ever become ``POSASSIST_PARAM_*`` (docs/scripts.md#test-root).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import posassist.agent.scripts.process as process_module
import posassist.agent.scripts.runner as runner_module
from posassist.agent.profile import load_profile
from posassist.agent.scripts.backup import BackupStore
from posassist.agent.scripts.consent import ConsentDecision
from posassist.agent.scripts.runner import RunEvent, RunResult, ScriptRunner
from posassist.protocol.manifest import Manifest, parse_manifest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from posassist.agent.scripts.process import OutputChunk

CATALOG = Path(__file__).resolve().parents[2] / "catalog"
SCRIPT_IDS = sorted(p.parent.name for p in CATALOG.glob("*/manifest.json"))


def load(script_id: str) -> tuple[Manifest, Path]:
    folder = CATALOG / script_id
    raw = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return parse_manifest(raw), folder


class Granting:
    """The merchant says yes (the consent flow itself is tested in tests/agent)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ask(self, manifest: Manifest, params: Mapping[str, Any]) -> ConsentDecision:
        self.asked.append(manifest.id)
        return ConsentDecision.GRANTED


class Run:
    def __init__(self, result: RunResult, events: list[RunEvent], chunks: list[OutputChunk]):
        self.result = result
        self.events = events
        self.chunks = chunks

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def stdout(self) -> str:
        return b"".join(c.data for c in self.chunks if c.stream == "stdout").decode()

    @property
    def stderr(self) -> str:
        return b"".join(c.data for c in self.chunks if c.stream == "stderr").decode()

    def result_json(self) -> dict[str, Any]:
        line = [x for x in self.stdout.splitlines() if x.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Run({self.result!r}, out={self.stdout!r}, err={self.stderr!r})"


class Catalog:
    """Runs shipped catalog scripts for real, re-rooted at ``root``."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.data = tmp_path / "data"
        (self.data / "pos").mkdir(parents=True)
        self.consent = Granting()
        self.runner = ScriptRunner(
            backups=BackupStore(tmp_path / "backups"),
            consent=self.consent,
            profile=load_profile("demo", self.data),
        )
        real = process_module.minimal_env
        root = str(self.root)

        def env(workdir: str, extra: dict[str, str], platform: str | None = None) -> Any:
            out = real(workdir, extra, platform)
            out["POSASSIST_TEST_ROOT"] = root
            return out

        monkeypatch.setattr(runner_module, "minimal_env", env)

    def path(self, absolute: str) -> Path:
        """Where ``absolute`` lives under the test root (parents created)."""
        p = self.root / absolute.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def tool(self, absolute: str, body: str) -> Path:
        """A stand-in executable: logs its argv to <root>/calls.log, then runs ``body``."""
        p = self.path(absolute)
        log = self.root / "calls.log"
        p.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            "    f.write(json.dumps(sys.argv) + '\\n')\n" + textwrap.dedent(body),
            encoding="utf-8",
        )
        p.chmod(0o755)
        return p

    def calls(self) -> list[list[str]]:
        log = self.root / "calls.log"
        if not log.exists():
            return []
        rows = [json.loads(x) for x in log.read_text().splitlines()]
        return [[os.path.relpath(r[0], self.root).join(["/", ""]), *r[1:]] for r in rows]

    async def run(self, script_id: str, params: Mapping[str, Any]) -> Run:
        manifest, folder = load(script_id)
        return await self.run_manifest(manifest, folder, params)

    async def run_manifest(
        self, manifest: Manifest, folder: Path, params: Mapping[str, Any]
    ) -> Run:
        events: list[RunEvent] = []
        chunks: list[OutputChunk] = []

        async def on_event(e: RunEvent) -> None:
            events.append(e)

        async def on_output(c: OutputChunk) -> None:
            chunks.append(c)

        result = await self.runner.run(
            manifest, folder, params, on_event=on_event, on_output=on_output
        )
        return Run(result, events, chunks)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    return Catalog(tmp_path, monkeypatch)
