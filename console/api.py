"""The relay's HTTP API as the console's commands call it: one exchange per request, a store
or merchant found by name, and ids shown as names (read once per command)."""

from __future__ import annotations

import asyncio
from typing import Any

from posassist.client import http
from posassist.client.render import device_label
from posassist.protocol.errors import BadArgument

__all__ = ["Names", "exchange", "pick_node", "store_names"]


def exchange(
    session: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    max_bytes: int = http.MAX_ANSWER,
) -> http.Response:
    answer = asyncio.run(
        http.fetch(
            method,
            http.http_url(session["relay"]) + path,
            json_body=body,
            token=session["token"],
            pin=session.get("tls_pin"),
            ca_file=session.get("tls_ca"),
            timeout=120.0 if max_bytes > http.MAX_ANSWER else http.DEFAULT_TIMEOUT,
            max_bytes=max_bytes,
        )
    )
    return answer.raise_for_status()


def pick_node(session: dict[str, str], kind: str, text: str) -> dict[str, Any]:
    """The store or merchant named ``text`` (an id, or a name that is unique in your scope)."""
    if not 0 < len(text) <= 200:
        raise BadArgument(f"{kind}: give its id or its name")
    listed = exchange(session, "GET", f"/v1/{kind}s").json()[f"{kind}s"]
    by_id = [row for row in listed if row["id"] == text]
    found = by_id or [row for row in listed if row.get("name") == text]
    if len(found) == 1:
        return dict(found[0])
    if not found:
        hint = "posassist store list" if kind == "store" else "an admin's scope holds merchants"
        raise BadArgument(f"no {kind} {text!r} that you may see ({hint})")
    ids = ", ".join(row["id"] for row in found)
    raise BadArgument(f"{len(found)} {kind}s are called {text!r}: give the id ({ids})")


class Names:
    """Ids to names (and stores to their time zones), read once per command when needed."""

    def __init__(self, session: dict[str, str]) -> None:
        self.session = session
        self._lists: dict[str, list[dict[str, Any]]] = {}

    def rows(self, kind: str) -> list[dict[str, Any]]:
        if kind not in self._lists:
            key = "devices" if kind == "device" else f"{kind}s"
            self._lists[kind] = list(exchange(self.session, "GET", f"/v1/{key}").json()[key])
        return self._lists[kind]

    def name(self, kind: str, node_id: Any) -> str:
        if node_id is None:
            return "-"
        for row in self.rows(kind):
            if row.get("id") == node_id:
                return str(row.get("name") or node_id)
        return str(node_id)

    def zone(self, store_id: Any) -> str | None:
        for row in self.rows("store"):
            if row.get("id") == store_id:
                return row.get("timezone") or None
        return None

    def device(self, device_id: Any) -> dict[str, Any]:
        for row in self.rows("device"):
            if row.get("id") == device_id:
                return row
        return {}

    def device_label(self, device_id: Any) -> str:
        """``人民路店 / till-1`` (store name and host name), or the id if unknown."""
        row = self.device(device_id)
        if not row:
            return str(device_id)
        return device_label(self.name("store", row.get("store_id")), row.get("facts"), device_id)

    def scope(self, scope: dict[str, Any]) -> str:
        kind, node = scope.get("kind"), scope.get("id")
        if kind == "root":
            return "root / 全部"
        if kind in ("organisation", "merchant", "store"):
            return f"{kind} {self.name(kind, node)}"
        return f"{kind} {node}"


def store_names(session: dict[str, str]) -> dict[str, str]:
    """Store ids to names within the caller's scope ({} from a relay that can't list them)."""
    try:
        listed = exchange(session, "GET", "/v1/stores").json()["stores"]
    except http.HttpStatusError:
        return {}
    return {row["id"]: row.get("name") or row["id"] for row in listed}
