"""Changing provider without reinstalling (``posassist-agent switch-provider``,
docs/agent.md#changing-provider): with the merchant's consent the till enrols with another
provider's relay, then tells the old relay (``device.handover``), then retires the old identity.

Order matters, so that a failure changes nothing: the new enrolment first (its key only in
memory, nothing written, until the new relay accepted it), then the new identity written beside
the old one (``switch.new/``), then the old relay told over a connection signed with the old
identity, then the swap: the old identity and everything of the old provider moved to
``retired/<old device>/``, the new one put in place. Settings, printers and backups stay.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from posassist.client.files import private_dir, write_private
from posassist.protocol import PosAssistError
from posassist.protocol.enrolment import EnrolmentInvite

from . import journal
from .config import load_identity
from .errors import ConfigError, RelayRefusedError, SwitchRefused

if TYPE_CHECKING:
    from pathlib import Path

    from .config import Identity

__all__ = [
    "PROVIDER_FILES",
    "RETIRED",
    "STAGING",
    "Switched",
    "complete_pending",
    "pending_switch",
    "switch_provider",
    "tell_old_relay",
]

#: Where a retired identity goes: ``retired/<device id>/``.
RETIRED = "retired"
#: Where the new identity is written before the swap.
STAGING = "switch.new"
#: What belongs to one provider, moved to ``retired/<device id>/`` when the till leaves it: the
#: identity, the script repository it trusts (and the job results its relay asked about), the
#: tickets its help window showed. Everything else in the data folder is the merchant's.
PROVIDER_FILES = ("agent.json", "agent.key", "agent.pub", "scripts", "help/tickets.json")
#: What the new enrolment writes (``scripts/`` only with a root hash).
NEW_FILES = ("agent.json", "agent.key", "agent.pub", "scripts")
#: Seconds to reach the old relay and hear its answer, each step.
TELL_TIMEOUT = 10.0
ACTION = "provider.switch"
#: The switch's journal in ``switch.new/``, written once the new relay accepted the till.
JOURNAL = "switch.json"


class Switched(NamedTuple):
    """How a switch ended."""

    old_device_id: str
    new_device_id: str
    new_relay_url: str
    #: ``told``; or why the old relay was not told: ``older_relay`` (protocol 6 or older),
    #: ``unreachable: …``, ``refused: <code>``
    told: str
    #: the old relay's time of the handover, when it said
    handed_over_at: Optional[float]
    retired: Path


def switch_provider(
    data_dir: Path,
    token_text: str,
    root_hash: Optional[str],
    confirm: Callable[[EnrolmentInvite], bool],
    tell_timeout: float = TELL_TIMEOUT,
) -> Switched:
    """Move this till to the relay ``token_text`` names; see the module docstring.

    ``confirm`` asks the merchant (or stands for a local admin's ``--yes``); False: nothing is
    changed, the refusal is recorded in the local audit log and SwitchRefused raised.
    Raises like ``enroll`` for a bad, used, expired or revoked token, a root that is not the one
    named, or a new relay that can't be reached: then too nothing is changed.
    """
    from .enrol import _checked_root_hash, install, register
    from .runstate import read_running

    running = read_running(data_dir)
    if running is not None:  # its result belongs to the provider that asked for it
        raise ConfigError(
            f"a vetted script runs now ({running.get('what')}); change provider once it has "
            "ended (posassist-agent wait-idle); nothing changed"
        )
    pending = complete_pending(data_dir, tell_timeout)  # an interrupted switch: finish it
    if pending is not None:
        return pending
    old = load_identity(data_dir)  # ConfigError: nothing to switch from
    old_config = json.loads((data_dir / "agent.json").read_text(encoding="utf-8"))
    invite = EnrolmentInvite.decode(token_text)  # InvalidEnrolmentToken: nothing asked
    wanted = _checked_root_hash(root_hash)
    if invite.relay_id == old_config.get("relay_id"):
        raise ConfigError(
            f"this token is for relay {invite.relay_id}, which this till already uses; "
            "nothing changed"
        )
    detail = {
        "old_device": old.device_id,
        "old_relay": old_config.get("relay_id"),
        "new_relay": invite.relay_id,
        "new_relay_url": invite.relay_url,
    }
    if not confirm(invite):
        journal.record(data_dir, ACTION, "refused", dict(detail, reason="merchant said no"))
        raise SwitchRefused("the merchant did not agree; nothing changed")
    staging = data_dir / STAGING
    if staging.exists():  # never accepted by a relay, or it would hold the journal: start over
        _remove_unaccepted(staging)
    try:
        identity, root = register(invite, wanted)  # nothing written until it is accepted
    except PosAssistError as exc:
        journal.record(
            data_dir, ACTION, "failed", dict(detail, reason=type(exc).__name__, error=str(exc))
        )
        raise
    try:
        install(private_dir(staging), identity, root, invite, wanted)
        state = dict(
            detail,
            new_device=identity.device_id,
            new_files=[name for name in NEW_FILES if (staging / name).exists()],
            retired=_retired_name(data_dir, old.device_id),
            old_relay_url=old.relay_url,
            pid=os.getpid(),
            pid_started=_started(os.getpid()),
            told=None,
        )
        _write_state(staging, state)  # from here on the switch is rolled forward, never undone
    except OSError as exc:
        raise _swap_error(data_dir, exc) from exc
    return _finish(data_dir, state, old, tell_timeout)


def pending_switch(data_dir: Path) -> Optional[Dict[str, Any]]:
    """The journal of a switch the new relay accepted but that did not end (``switch.new/``
    holds it), or None. A switch whose process still runs is not pending: it is under way."""
    from .runstate import _alive

    try:
        state = json.loads(_read_small(data_dir / STAGING / JOURNAL))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if not (data_dir / STAGING).exists():
            return None
        raise _swap_error(data_dir, exc) from exc
    if not isinstance(state, dict) or not isinstance(state.get("new_device"), str):
        raise _swap_error(data_dir, ValueError(f"{JOURNAL} is damaged"))
    pid = state.get("pid")
    if (
        type(pid) is int
        and pid != os.getpid()
        and 0 < pid < 2**31
        and _alive(pid)
        and _started(pid) == state.get("pid_started")  # not a pid reused after a reboot
    ):
        raise ConfigError(
            "正在更换服务商 (另一个进程) / a provider switch is under way in process "
            f"{pid}; try again once it has ended"
        )
    return state


def complete_pending(data_dir: Path, tell_timeout: float = TELL_TIMEOUT) -> Optional[Switched]:
    """Finish a switch that was interrupted after the new relay accepted the till (a kill, a
    power cut, a full disk): tell the old relay if it was not told, swap, retire. None: nothing
    was pending. Raises ConfigError (clear words) if the disk still refuses; the next try goes on
    from where this one stopped."""
    state = pending_switch(data_dir)
    if state is None:
        return None
    old = None
    if state.get("told") is None:
        try:
            old = load_identity(data_dir)
        except ConfigError:
            old = None
        if old is not None and old.device_id != state.get("old_device"):
            old = None
    return _finish(data_dir, state, old, tell_timeout)


def _finish(
    data_dir: Path, state: Dict[str, Any], old: Optional[Identity], tell_timeout: float
) -> Switched:
    staging = data_dir / STAGING
    try:
        if state.get("told") is None:
            if old is None:
                told, handed_over_at = "unreachable: old identity unreadable", None
            else:
                told, handed_over_at = asyncio.run(tell_old_relay(old, tell_timeout))
            state.update(told=told, handed_over_at=handed_over_at)
            _write_state(staging, state)
        retired = _swap(data_dir, staging, state)
        hidden = ("new_files", "pid", "pid_started", "retired")
        record = {k: v for k, v in state.items() if k not in hidden}
        record["switched_at"] = time.time()
        write_private(retired / "handover.json", json.dumps(record, indent=2))
        shutil.rmtree(str(staging))
    except OSError as exc:
        raise _swap_error(data_dir, exc) from exc
    journal.record(data_dir, ACTION, "ok", record)
    new = load_identity(data_dir)
    return Switched(
        str(state["old_device"]),
        new.device_id,
        new.relay_url,
        str(state["told"]),
        state.get("handed_over_at"),
        retired,
    )


def _started(pid: int) -> Optional[float]:
    import psutil  # type: ignore[import-untyped]

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OverflowError, ValueError):
        return None


def _swap_error(data_dir: Path, exc: BaseException) -> ConfigError:
    return ConfigError(
        "更换服务商未完成, 新身份保存在 switch.new, 修复后再运行 posassist-agent run 即可完成 / "
        f"the provider switch did not finish ({type(exc).__name__}: {exc}); the new identity "
        f"is kept in {data_dir / STAGING}: fix the cause, then posassist-agent run (or "
        "switch-provider again) completes it"
    )


def _read_small(path: Path, limit: int = 64 * 1024) -> str:
    from .runstate import read_regular

    return read_regular(path, limit)


def _write_state(staging: Path, state: Dict[str, Any]) -> None:
    write_private(staging / JOURNAL, json.dumps(state, indent=2))


def _remove_unaccepted(staging: Path) -> None:
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(str(staging))
    else:
        staging.unlink()


def _retired_name(data_dir: Path, old_device_id: str) -> str:
    name, n = old_device_id, 1
    while (data_dir / RETIRED / name).exists():  # the same device retired twice
        n += 1
        name = f"{old_device_id}.{n}"
    return name


def _swap(data_dir: Path, staging: Path, state: Dict[str, Any]) -> Path:
    """The old provider's files to ``retired/<device>/``, the new identity into place. Each step
    can be repeated: a swap cut short goes on from where it stopped."""
    new_files = [str(name) for name in state.get("new_files", []) if name in NEW_FILES]
    private_dir(data_dir / RETIRED)
    retired = data_dir / RETIRED / str(state["retired"])
    private_dir(retired)
    for name in PROVIDER_FILES:
        if name in new_files and not (staging / name).exists():
            continue  # the new one is in place already
        source = data_dir / name
        if source.exists() or source.is_symlink():
            target = retired / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(str(source), str(target))
    # agent.json last: until it is in place the till's identity is not the new one
    for name in sorted(new_files, key=lambda name: name == "agent.json"):
        source = staging / name
        if source.exists():
            os.replace(str(source), str(data_dir / name))
    _give_back(data_dir, [retired, *(data_dir / name for name in NEW_FILES)])
    return retired


def _give_back(data_dir: Path, paths: List[Path]) -> None:
    """Run as root (``sudo`` on a Linux till): what was written belongs to the data folder's
    owner, the agent's own user, or the service could not read its new key."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    owner = os.stat(str(data_dir))
    if owner.st_uid == 0:
        return
    for top in [data_dir / RETIRED, *paths]:
        if not top.exists():
            continue
        for path in [top, *(top.rglob("*") if top.is_dir() else [])]:
            os.chown(str(path), owner.st_uid, owner.st_gid, follow_symlinks=False)


async def tell_old_relay(identity: Identity, timeout: float) -> Tuple[str, Optional[float]]:
    """Send ``device.handover`` over a connection signed with ``identity``; ``("told", time)``
    or why not (see :class:`Switched`). Never raises for the relay's sake: the switch goes on."""
    from websockets.exceptions import WebSocketException

    try:
        return await asyncio.wait_for(_tell(identity, timeout), timeout * 3)
    except RelayRefusedError as exc:
        if exc.code == "handed_over":  # told before (a switch interrupted after telling it)
            return "told", None
        return "refused: " + exc.code, None
    except (OSError, asyncio.TimeoutError, WebSocketException, PosAssistError) as exc:
        return "unreachable: " + type(exc).__name__, None


async def _tell(identity: Identity, timeout: float) -> Tuple[str, Optional[float]]:
    from posassist.client.connection import open_connection
    from posassist.protocol import DeviceHandedOver, DeviceHandover, ErrorReply, Role
    from posassist.protocol.states import SINCE_VERSION

    from .connection import SOFTWARE, AgentConnection, agent_url

    agent = AgentConnection(identity)
    wss = identity.relay_url.startswith("wss://")
    async with open_connection(
        agent_url(identity.relay_url),
        Role.AGENT,
        SOFTWARE,
        agent.authenticate,
        tls_pin=identity.tls_pin if wss else None,
        handshake_timeout=timeout,
        session=agent.session,
    ) as connection:
        if agent.opened().version < SINCE_VERSION[DeviceHandover.TAG]:
            return "older_relay", None  # it would refuse the tag (docs/protocol.md#versions)
        request = DeviceHandover(id=connection.session.next_id(), device_id=identity.device_id)
        async for reply in connection.request(request, timeout):
            if isinstance(reply, DeviceHandedOver):
                return "told", reply.handed_over_at
            if isinstance(reply, ErrorReply):
                return "refused: " + reply.code, None
    return "unreachable: no answer", None  # pragma: no cover - a request ends with a reply
