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
from typing import TYPE_CHECKING, Callable, List, NamedTuple, Optional, Tuple

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

    old = load_identity(data_dir)  # ConfigError: nothing to switch from
    running = read_running(data_dir)
    if running is not None:  # its result belongs to the provider that asked for it
        raise ConfigError(
            f"a vetted script runs now ({running.get('what')}); change provider once it has "
            "ended (posassist-agent wait-idle); nothing changed"
        )
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
    if staging.exists():  # an interrupted switch: its identity was never used
        shutil.rmtree(str(staging))
    try:
        identity, root = register(invite, wanted)  # nothing written until it is accepted
    except PosAssistError as exc:
        journal.record(
            data_dir, ACTION, "failed", dict(detail, reason=type(exc).__name__, error=str(exc))
        )
        raise
    install(private_dir(staging), identity, root, invite, wanted)
    told, handed_over_at = asyncio.run(tell_old_relay(old, tell_timeout))
    retired = _swap(data_dir, staging, old.device_id)
    record = dict(
        detail,
        new_device=identity.device_id,
        told=told,
        handed_over_at=handed_over_at,
        switched_at=time.time(),
        old_relay_url=old.relay_url,
    )
    write_private(retired / "handover.json", json.dumps(record, indent=2))
    journal.record(data_dir, ACTION, "ok", record)
    return Switched(
        old.device_id, identity.device_id, identity.relay_url, told, handed_over_at, retired
    )


def _swap(data_dir: Path, staging: Path, old_device_id: str) -> Path:
    """The old provider's files to ``retired/<device>/``, the new identity into place."""
    private_dir(data_dir / RETIRED)
    retired = data_dir / RETIRED / old_device_id
    n = 1
    while retired.exists():  # the same device retired twice (switched back and forth)
        n += 1
        retired = data_dir / RETIRED / f"{old_device_id}.{n}"
    private_dir(retired)
    for name in PROVIDER_FILES:
        source = data_dir / name
        if source.exists():
            target = retired / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(str(source), str(target))
    for name in NEW_FILES:
        source = staging / name
        if source.exists():
            os.replace(str(source), str(data_dir / name))
    shutil.rmtree(str(staging))
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
