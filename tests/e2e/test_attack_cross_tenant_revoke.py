"""Attack finding F0 with real processes: a technician of organisation A asks the relay to revoke
organisation B's till. The relay refuses (403) and the till stays connected: the relay's
revocation follower acts only on revocations that were done."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import invite, ok, provision, py, start_agent, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def _post(
    url: str, path: str, body: object, token: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.replace("ws://", "http://") + path, json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_for(path: Path, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in the relay log"
        time.sleep(0.05)  # polling a file for a line, with a deadline


@pytest.mark.slow
def test_a_technician_of_another_organisation_cannot_disconnect_a_till(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store_a = provision(data)
    org_b = ok(py("relay", "organisation", "create", "--data", str(data), "--name", "OrgB"))
    merchant_b = ok(
        py(
            "relay",
            "merchant",
            "create",
            "--data",
            str(data),
            "--name",
            "B",
            "--organisation",
            org_b,
        )
    )
    store_b = ok(
        py(
            "relay",
            "store",
            "create",
            "--data",
            str(data),
            "--name",
            "B1",
            "--merchant",
            merchant_b,
        )
    )
    secret = tmp_path / "tech-a.pw"
    secret.write_text("tech A password 123")
    ok(
        py(
            "relay",
            "user",
            "create",
            "--data",
            str(data),
            "--username",
            "techA",
            "--role",
            "technician",
            "--scope",
            f"store:{store_a}",
            "--password-file",
            str(secret),
        )
    )
    log_path = tmp_path / "relay.log"
    with log_path.open("w") as log:
        relay, url = start_relay(data, log=log)
    agents = []
    try:
        ok(py("agent", "enroll", invite(data, store_b, url), "--data", str(tmp_path / "tillB")))
        ok(py("agent", "enroll", invite(data, store_a, url), "--data", str(tmp_path / "tillA")))
        victim, victim_id = start_agent(tmp_path / "tillB")
        agents.append(victim)
        witness, witness_id = start_agent(tmp_path / "tillA")
        agents.append(witness)
        status, body = _post(
            url, "/v1/login", {"username": "techA", "password": secret.read_text()}
        )
        assert status == 200, body
        token = str(body["token"])
        for _ in range(2):  # the attacker repeats it
            status, body = _post(url, f"/v1/devices/{victim_id}/revoke", {}, token)
            assert status == 403, body
        # A real revocation from the command line, after the refused ones: once the relay has
        # acted on it, its follower has read past the refused records.
        ok(py("relay", "device", "revoke", "--data", str(data), witness_id))
        _wait_for(log_path, f"device {witness_id} revoked: disconnecting it")
        assert f"device {victim_id} revoked" not in log_path.read_text()
        assert victim.poll() is None  # the other organisation's till runs on, connected
        listing = ok(py("relay", "device", "list", "--data", str(data)))
        (row,) = [line for line in listing.splitlines() if line.startswith(victim_id)]
        assert "\tactive\t" in row
    finally:
        for agent in agents:
            stop(agent)
        stop(relay)
