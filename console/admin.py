"""The operator's half of ``posassist`` (issue 15): the tenant tree, users, passwords, enrolment
tokens, job and audit history, over the relay's admin API (relay/handlers/admin.py, docs/api.md).

Tables show names, not ids (an id column stays for scripts and copy-paste), and every command
takes a name or an id. ``--json`` prints the relay's own answer, unchanged in shape. Times show
in the store's time zone where there is a store, else in this console's, with the zone's name.
Deleting asks first (``--yes`` skips; without a terminal and without ``--yes`` nothing is
deleted). Everything the relay says is printed through the one table helper (console/render.py),
which makes each cell printable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from posassist.client import http
from posassist.client.cli import seconds_from
from posassist.client.prompt import NEW_PASSWORD_ENV, PASSWORD_ENV, secret_from
from posassist.client.render import audit_detail, audit_target
from posassist.client.units import ENROLMENT_TTL
from posassist.protocol.errors import EXIT_REFUSED, BadArgument, PosAssistError

from .api import Names, exchange, pick_node, store_names
from .render import local_time, printable, printable_data, table

__all__ = ["NoSuchDevice", "add_parsers", "command", "confirm", "find_device", "handles"]

#: The tenant tree's commands and the API's word for each.
_NODES = {"org": "organisation", "merchant": "merchant", "store": "store"}
_ROLES = ("admin", "technician", "viewer", "merchant")
_PARENT = {"merchant": ("organisation", "organisation_id"), "store": ("merchant", "merchant_id")}


def handles(args: argparse.Namespace) -> bool:
    """Whether ``args`` is one of this module's commands (console/__main__.py dispatches)."""
    return getattr(args, "admin_command", None) is not None


class UnexpectedAnswer(http.HttpError):
    """The relay answered 2xx with JSON of another shape than its API's (docs/api.md): a relay
    of another version, or not ours. One line, exit 1 (console/__main__.py ``main``)."""

    public_reason = "the relay's answer is not what this console understands"
    public_reason_zh = "服务器的回应无法识别"


def command(args: argparse.Namespace, session: dict[str, str]) -> int:
    return int(_HANDLERS[args.admin_command](args, session))


# --- shared --------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    """The relay's answer as JSON; its strings made printable (``jq -r`` may print them raw)."""
    print(json.dumps(printable_data(value), ensure_ascii=False, indent=2))


def confirm(question: str, yes: bool) -> None:
    """Go on only if ``yes`` (``--yes``) or the person at the terminal types y; otherwise
    BadArgument (exit 2), nothing done. Without a terminal, only ``--yes`` goes on."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadArgument("not at a terminal: add --yes to confirm / 非交互环境, 请加 --yes 确认")
    try:
        answer = input(printable(f"{question} [y/N] ", multiline=False))
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes", "是"):
        raise BadArgument("not confirmed: nothing was changed / 未确认, 未做任何更改")


def _path_id(value: str) -> str:
    return quote(value, safe="")


def _user(session: dict[str, str], text: str) -> dict[str, Any]:
    """The user named ``text`` (username or id) among those you administer."""
    users = exchange(session, "GET", "/v1/users").json()["users"]
    found = [u for u in users if text in (u["id"], u["username"])]
    if not found:
        raise BadArgument(
            f"no user {text!r} that you administer (posassist user list) / 未找到该用户"
        )
    return dict(found[0])


# --- the tenant tree -----------------------------------------------------------------------------


def _node_list(args: argparse.Namespace, session: dict[str, str]) -> int:
    kind = _NODES[args.admin_noun]
    path = f"/v1/{kind}s"
    parent = _PARENT.get(kind)
    names = Names(session)
    if parent and getattr(args, "parent", None):
        found = pick_node(session, parent[0], args.parent)
        path += "?" + urlencode({parent[1]: found["id"]})
    rows = exchange(session, "GET", path).json()[f"{kind}s"]
    if args.json:
        _print_json(rows)
        return 0
    headers: list[str] = ["name / 名称"]
    if parent:
        headers.append(f"{parent[0]} / 上级")
    if kind == "store":
        headers.append("time zone / 时区")
    headers += ["created / 创建时间", "id"]
    lines = []
    for row in rows:
        line: list[Any] = [row.get("name")]
        if parent:
            line.append(names.name(parent[0], row.get(parent[1])))
        zone = row.get("timezone") if kind == "store" else None
        if kind == "store":
            line.append(zone)
        line += [local_time(row.get("created_at"), zone), row.get("id")]
        lines.append(line)
    print(table(headers, lines, empty=f"no {kind}s / 没有记录"))
    return 0


def _node_rename(args: argparse.Namespace, session: dict[str, str]) -> int:
    kind = _NODES[args.admin_noun]
    node = pick_node(session, kind, args.node)
    path = f"/v1/{kind}s/{_path_id(node['id'])}"
    answer = exchange(session, "PATCH", path, {"name": args.new_name}).json()
    if args.json:
        _print_json(answer)
    else:
        print(printable(f"{kind} {node['id']}: {node.get('name')} → {answer['name']} / 已改名"))
    return 0


def _node_delete(args: argparse.Namespace, session: dict[str, str]) -> int:
    kind = _NODES[args.admin_noun]
    node = pick_node(session, kind, args.node)
    confirm(f"delete {kind} {node.get('name')} ({node['id']})? / 确认删除?", args.yes)
    answer = exchange(session, "DELETE", f"/v1/{kind}s/{_path_id(node['id'])}").json()
    if args.json:
        _print_json(answer)
    else:
        print(printable(f"{kind} {node.get('name')} ({node['id']}) deleted / 已删除"))
    return 0


class NoSuchDevice(PosAssistError):
    """No device of that id or host name among those the caller may see (``posassist
    devices`` lists them): one line, exit 3, nothing sent to any till."""

    exit_code = EXIT_REFUSED
    public_reason = "no such device"
    public_reason_zh = "没有这台设备"


def find_device(session: dict[str, str], text: str) -> dict[str, Any]:
    """The device named ``text``: its id, or its host name when exactly one device in your
    scope has it (a host name compared without case, as Windows does); NoSuchDevice if none,
    BadArgument listing the ids if several."""
    devices = exchange(session, "GET", "/v1/devices").json()["devices"]
    for row in devices:
        if row.get("id") == text:
            return dict(row)
    named = [
        r
        for r in devices
        if isinstance(r.get("facts"), dict)
        and str(r["facts"].get("hostname", "")).casefold() == text.casefold()
    ]
    if len(named) == 1:
        return dict(named[0])
    if named:
        ids = ", ".join(str(r.get("id")) for r in named)
        raise BadArgument(
            f"{len(named)} devices are called {text!r}: give the id ({ids}) / "
            "同名设备有多台, 请用设备编号"
        )
    raise NoSuchDevice(
        f"{text!r} is neither the id nor the host name of a device in your scope "
        "(`posassist devices` lists them)"
    )


def _device_action(args: argparse.Namespace, session: dict[str, str]) -> int:
    """``device revoke`` and ``device delete`` (a revoked till out of its store, history kept)."""
    device = find_device(session, args.device)
    names = Names(session)
    label = f"{names.device_label(device['id'])} ({device['id']})"
    path = f"/v1/devices/{_path_id(device['id'])}"
    if args.device_verb == "revoke":
        confirm(f"revoke device {label}? it is refused from now on / 确认注销此设备?", args.yes)
        answer = exchange(session, "POST", path + "/revoke", {}).json()
        said = f"device {label} revoked / 设备已注销"
    else:
        confirm(
            f"delete device {label}? its store no longer holds it and its jobs are no longer "
            "listed; the audit log keeps their history / "
            "确认删除此设备? (作业不再列出, 审计日志保留)",
            args.yes,
        )
        answer = exchange(session, "DELETE", path).json()
        # readme-walk 15 M3: "13 jobs kept" sent people to `posassist jobs`, which cannot list a
        # deleted till's jobs (it has no store, so no scope holds it): say where they are
        kept = answer.get("jobs_kept")
        said = (
            f"device {label} deleted; its jobs ({kept}) are no longer listed, their history stays "
            f"in the audit log (an admin at the root: posassist audit --target "
            f"device:{device['id']}) / 设备已删除; {kept} 条作业不再列出, 记录保留在审计日志中"
        )
    if args.json:
        _print_json(answer)
    else:
        print(printable(said))
    return 0


# --- users ---------------------------------------------------------------------------------------


def _user_state(row: dict[str, Any]) -> str:
    if row.get("disabled"):
        return "disabled / 已停用"
    if row.get("locked"):
        return "locked / 已锁定"
    return "active / 正常"


def _user_list(args: argparse.Namespace, session: dict[str, str]) -> int:
    rows = exchange(session, "GET", "/v1/users").json()["users"]
    if args.json:
        _print_json(rows)
        return 0
    names = Names(session)
    print(
        table(
            ["user / 用户", "role / 角色", "scope / 范围", "state / 状态", "created / 创建", "id"],
            [
                [
                    r["username"],
                    r["role"],
                    names.scope(r.get("scope") or {}),
                    _user_state(r),
                    local_time(r.get("created_at")),
                    r["id"],
                ]
                for r in rows
            ],
            empty="no users / 没有用户",
        )
    )
    return 0


def _scope_body(session: dict[str, str], text: str) -> dict[str, Any]:
    """``root`` or ``store:NAME`` (``organisation:``, ``merchant:``; a name or an id)."""
    if text == "root":
        return {"scope_kind": "root", "scope_id": None}
    kind, sep, node = text.partition(":")
    kind = {"org": "organisation"}.get(kind, kind)
    if not sep or kind not in ("organisation", "merchant", "store") or not node:
        raise BadArgument("--scope is root, or organisation:NAME, merchant:NAME or store:NAME")
    return {"scope_kind": kind, "scope_id": pick_node(session, kind, node)["id"]}


def _new_password(args: argparse.Namespace, what: str) -> str:
    return secret_from(
        args.password_file, NEW_PASSWORD_ENV, f"new password for {what}: ", again=True
    )


def _user_create(args: argparse.Namespace, session: dict[str, str]) -> int:
    body = {"username": args.username, "role": args.role, **_scope_body(session, args.scope)}
    body["password"] = _new_password(args, args.username)
    answer = exchange(session, "POST", "/v1/users", body).json()
    if args.json:
        _print_json(answer)
    else:
        print(printable(f"user {answer['username']} created ({answer['id']}) / 已创建用户"))
    return 0


def _user_action(args: argparse.Namespace, session: dict[str, str]) -> int:
    """rename, delete, reset-password, disable, enable, unlock, revoke-tokens."""
    user = _user(session, args.user)
    path = f"/v1/users/{_path_id(user['id'])}"
    verb, who = args.user_command, user["username"]
    if verb == "rename":
        answer = exchange(session, "PATCH", path, {"username": args.new_name}).json()
        said = f"user {who} is now {answer['username']} / 已改名"
    elif verb == "delete":
        confirm(f"delete user {who} ({user['id']})? / 确认删除用户?", args.yes)
        answer = exchange(session, "DELETE", path).json()
        said = f"user {who} deleted / 已删除用户"
    elif verb == "reset-password":
        password = _new_password(args, who)
        answer = exchange(session, "POST", path + "/password", {"password": password}).json()
        said = f"password of {who} reset; {answer['tokens_revoked']} sign-in(s) ended / 密码已重置"
    else:
        answer = exchange(session, "POST", f"{path}/{verb}", {}).json()
        said = {
            "disable": f"user {who} disabled and signed out / 已停用",
            "enable": f"user {who} enabled / 已启用",
            "unlock": f"user {who} unlocked / 已解锁",
            "revoke-tokens": f"{answer.get('tokens_revoked')} sign-in(s) of {who} ended"
            " / 已注销其所有登录",
        }[verb]
    if args.json:
        _print_json(answer)
    else:
        print(printable(said, multiline=False))
    return 0


def _own_password(args: argparse.Namespace, session: dict[str, str]) -> int:
    """Change your own password: the old one, then the new one (file, variable or terminal)."""
    old = secret_from(
        args.password_file, PASSWORD_ENV, f"current password of {session.get('user')}: "
    )
    new = secret_from(
        args.new_password_file,
        NEW_PASSWORD_ENV,
        "new password / 新密码: ",
        option="--new-password-file",
        again=True,
    )
    answer = exchange(
        session, "POST", "/v1/password", {"old_password": old, "new_password": new}
    ).json()
    if args.json:
        _print_json(answer)
    else:
        print("password changed / 密码已修改")
        others = answer.get("other_tokens_revoked") if isinstance(answer, dict) else None
        if isinstance(others, int) and not isinstance(others, bool) and others > 0:
            print(f"{others} other session(s) signed out / 已退出其他 {others} 个登录")
    return 0


# --- enrolment tokens ----------------------------------------------------------------------------

_ENROLMENT_WORDS = {
    "unused": "unused / 未使用",
    "used": "used / 已使用",
    "expired": "expired / 已过期",
    "revoked": "revoked / 已撤销",
}


def _enrol_list(args: argparse.Namespace, session: dict[str, str]) -> int:
    path = "/v1/enrolments"
    if args.store:
        path += "?" + urlencode({"store_id": pick_node(session, "store", args.store)["id"]})
    rows = exchange(session, "GET", path).json()["enrolments"]
    if args.json:
        _print_json(rows)
        return 0
    names = Names(session)
    lines = []
    for r in rows:
        zone = names.zone(r.get("store_id"))
        used = r.get("used_by_device")
        lines.append(
            [
                names.name("store", r.get("store_id")),
                _ENROLMENT_WORDS.get(r.get("status", ""), r.get("status")),
                local_time(r.get("created_at"), zone),
                local_time(r.get("expires_at"), zone),
                names.device_label(used) if used else None,
                r.get("id"),
            ]
        )
    headers = ["store / 门店", "status / 状态", "created / 创建", "expires / 过期", "device", "id"]
    print(table(headers, lines, empty="no enrolment tokens / 没有登记码"))
    return 0


def _enrol_create(args: argparse.Namespace, session: dict[str, str]) -> int:
    store = pick_node(session, "store", args.store)
    body: dict[str, Any] = {"store_id": store["id"]}
    if args.ttl is not None:
        body["ttl"] = args.ttl
    answer = exchange(session, "POST", "/v1/enrolments", body).json()
    if args.json:
        _print_json(answer)
        return 0
    expires = local_time(answer.get("expires_at"), store.get("timezone"))
    print(printable(f"enrolment token for {store.get('name')} (until {expires}) / 登记码:"))
    print(printable(str(answer["token"]), multiline=False))
    print(printable(f"id {answer['id']}; on the till: posassist-agent enroll TOKEN"))
    return 0


def _enrol_revoke(args: argparse.Namespace, session: dict[str, str]) -> int:
    path = f"/v1/enrolments/{_path_id(args.enrolment)}/revoke"
    answer = exchange(session, "POST", path, {}).json()
    if args.json:
        _print_json(answer)
    else:
        print(printable(f"enrolment token {answer['id']} revoked / 登记码已撤销"))
    return 0


# --- history -------------------------------------------------------------------------------------

_JOB_WORDS = {
    "pending": "pending / 等待",
    "running": "running / 执行中",
    "succeeded": "succeeded / 成功",
    "failed": "failed / 失败",
    "cancelled": "cancelled / 已取消",
}


def _job_script(job: dict[str, Any]) -> str:
    """ "printer-status 1.0.0" for a run; empty for other kinds and jobs older than the column."""
    return " ".join(str(part) for part in (job.get("script"), job.get("version")) if part)


def _jobs(args: argparse.Namespace, session: dict[str, str]) -> int:
    query: dict[str, Any] = {"limit": args.limit}
    if args.before:
        at, _, job_id = args.before.partition("/")
        if not (at.replace(".", "", 1).isdigit() and job_id.startswith("job_")):
            raise BadArgument("--before is the cursor the last page printed (TIME/job_…)")
        query["cursor"] = args.before
    if args.device:
        query["device_id"] = args.device
    answer = exchange(session, "GET", "/v1/jobs?" + urlencode(query)).json()
    if args.json:
        _print_json(answer)
        return 0
    names = Names(session)
    lines = []
    for job in answer["jobs"]:
        zone = names.zone(names.device(job.get("device_id")).get("store_id"))
        lines.append(
            [
                local_time(job.get("created_at"), zone),
                names.device_label(job.get("device_id")),
                job.get("kind"),
                _job_script(job),
                _JOB_WORDS.get(job.get("status", ""), job.get("status")),
                job.get("requested_by"),
                job.get("error"),
                job.get("id"),
            ]
        )
    headers = [
        "when / 时间",
        "device / 设备",
        "job",
        "script / 脚本",
        "status / 状态",
        "by / 操作人",
        "error",
        "id",
    ]
    print(table(headers, lines, empty="no jobs / 没有任务"))
    if answer.get("next_cursor"):
        print(printable(f"older / 更早: posassist jobs --before {answer['next_cursor']}"))
    return 0


def _audit(args: argparse.Namespace, session: dict[str, str]) -> int:
    if getattr(args, "audit_verb", None) == "verify":
        return _audit_verify(args, session)
    query: dict[str, Any] = {"limit": args.limit}
    if args.before:
        if not args.before.isdigit():
            raise BadArgument("--before is a record's number (seq), as the last page printed")
        query["before"] = args.before
    if args.target:
        kind, sep, node = args.target.partition(":")
        kind = {"org": "organisation"}.get(kind, kind)
        if not sep or kind not in ("organisation", "merchant", "store", "device") or not node:
            raise BadArgument("--target is organisation:, merchant:, store: or device: and a name")
        node_id = node if kind == "device" else pick_node(session, kind, node)["id"]
        query["target"] = f"{kind}:{node_id}"
    answer = exchange(session, "GET", "/v1/audit?" + urlencode(query)).json()
    if args.json:
        _print_json(answer)
        return 0
    stores = store_names(session) if answer["records"] else {}
    names = {f"store:{node}": name for node, name in stores.items()}
    named = {str(r.get(k) or "") for r in answer["records"] for k in ("actor", "target")}
    if any(text.startswith("device:") for text in named):  # tills as `store / host`
        tills = Names(session)
        for row in tills.rows("device"):
            names[f"device:{row.get('id')}"] = tills.device_label(row.get("id"))
    lines = [
        [
            r.get("seq"),
            local_time(r.get("at")),
            audit_target(r.get("actor"), names)[0],
            r.get("action"),
            audit_target(r.get("target"), names)[0],
            r.get("outcome"),
            audit_detail(r.get("detail"))[:120],
        ]
        for r in answer["records"]
    ]
    headers = ["seq", "when / 时间", "who / 操作人", "action", "target", "outcome", "detail"]
    print(table(headers, lines, empty="no records / 没有记录"))
    if answer.get("next_before"):
        print(printable(f"older / 更早: posassist audit --before {answer['next_before']}"))
    return 0


def _audit_verify(args: argparse.Namespace, session: dict[str, str]) -> int:
    """The relay walks its whole chain (``POST /v1/audit/verify``): exit 0 intact, 1 broken."""
    answer = exchange(session, "POST", "/v1/audit/verify", {}).json()
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise UnexpectedAnswer("audit verify: no 'ok' in the answer")
    if args.json:
        _print_json(answer)
    elif answer["ok"]:
        print(
            printable(
                f"audit chain intact: {answer.get('records')} records checked, last seq "
                f"{answer.get('last_seq')} / 审计链完整: 已检查 {answer.get('records')} 条记录"
            )
        )
    else:
        print(
            printable(
                f"audit chain BROKEN at seq {answer.get('first_bad')}: {answer.get('reason')} "
                f"({answer.get('records')} records intact before it) / "
                f"审计链已损坏, 第 {answer.get('first_bad')} 条记录起不可信"
            )
        )
    return 0 if answer["ok"] else 1


_HANDLERS = {
    "node-list": _node_list,
    "node-rename": _node_rename,
    "node-delete": _node_delete,
    "device-action": _device_action,
    "user-list": _user_list,
    "user-create": _user_create,
    "user-action": _user_action,
    "password": _own_password,
    "enrol-list": _enrol_list,
    "enrol-create": _enrol_create,
    "enrol-revoke": _enrol_revoke,
    "jobs": _jobs,
    "audit": _audit,
}


# --- the parser ----------------------------------------------------------------------------------


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError("a whole number 1..200")
    return int(text)


def _ttl(text: str) -> float:
    value = seconds_from(text, "--ttl")
    if value is None:
        raise BadArgument("--ttl: a duration like 30m, 24h or 7d")
    if not ENROLMENT_TTL[0] <= value <= ENROLMENT_TTL[1]:  # the relay's bound: refused here
        raise BadArgument("--ttl: 1m .. 30d, e.g. 24h or 7d / 有效期须在 1 分钟到 30 天之间")
    return value


def _verb(verbs: Any, name: str, handler: str, help_text: str, **extra: Any) -> Any:
    parser = verbs.add_parser(name, help=help_text)
    parser.set_defaults(admin_command=handler, **extra)
    parser.add_argument("--json", action="store_true", help="the relay's answer as JSON")
    return parser


def add_store_verbs(store_verbs: Any) -> None:
    """``store rename`` and ``store delete`` beside console/service.py's list, show and set."""
    _node_verbs(store_verbs, "store", listing=False)


def _node_verbs(verbs: Any, noun: str, *, listing: bool = True) -> None:
    kind = _NODES[noun]
    if listing:
        listed = _verb(verbs, "list", "node-list", f"{kind}s you may see", admin_noun=noun)
        if kind == "merchant":
            listed.add_argument("--org", dest="parent", help="only this organisation's")
    article = "an" if kind[0] in "aeiou" else "a"  # readme-walk 15 L10: "a organisation"
    rename = _verb(verbs, "rename", "node-rename", f"rename {article} {kind}", admin_noun=noun)
    rename.add_argument("node", help=f"the {kind}'s name or id")
    rename.add_argument("new_name")
    delete = _verb(verbs, "delete", "node-delete", f"delete an empty {kind}", admin_noun=noun)
    delete.add_argument("node", help=f"the {kind}'s name or id")
    delete.add_argument("--yes", action="store_true", help="do not ask; needed without a terminal")


def add_parsers(commands: Any) -> None:
    """The operator's commands on the console's parser (console/__main__.py)."""
    for noun in ("org", "merchant"):
        parser = commands.add_parser(noun, help=f"{_NODES[noun]}s: list, rename, delete")
        _node_verbs(parser.add_subparsers(dest=f"{noun}_command", required=True), noun)

    user = commands.add_parser("user", help="users: list, create, rename, disable, reset …")
    verbs = user.add_subparsers(dest="user_command", required=True)
    _verb(verbs, "list", "user-list", "users you administer")
    create = _verb(verbs, "create", "user-create", "create a user (password: see --help)")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=_ROLES)
    create.add_argument("--scope", required=True, help="root, or store:NAME, merchant:NAME…")
    create.add_argument(
        "--password-file", type=Path, help=f"the new password (or set {NEW_PASSWORD_ENV})"
    )
    for verb, words in (
        ("rename", "rename a user"),
        ("delete", "delete a user and end their sign-ins"),
        ("reset-password", "set a user's password; ends their sign-ins"),
        ("disable", "disable a user; ends their sign-ins"),
        ("enable", "enable a disabled user"),
        ("unlock", "forget a user's failed sign-ins"),
        ("revoke-tokens", "end every sign-in of a user"),
    ):
        parser = _verb(verbs, verb, "user-action", words)
        parser.add_argument("user", help="the username or id")
        if verb == "rename":
            parser.add_argument("new_name")
        if verb == "delete":
            parser.add_argument("--yes", action="store_true", help="do not ask")
        if verb == "reset-password":
            parser.add_argument(
                "--password-file", type=Path, help=f"the new password (or {NEW_PASSWORD_ENV})"
            )

    password = commands.add_parser("password", help="change your own password")
    password.set_defaults(admin_command="password")
    password.add_argument(
        "--password-file", type=Path, help=f"your current password (or {PASSWORD_ENV})"
    )
    password.add_argument(
        "--new-password-file", type=Path, help=f"the new password (or {NEW_PASSWORD_ENV})"
    )
    password.add_argument("--json", action="store_true")

    device = commands.add_parser("device", help="revoke or delete a till (admins)")
    device_verbs = device.add_subparsers(dest="device_command", required=True)
    for verb, help_text in (
        ("revoke", "refuse the till from now on (it is disconnected at once)"),
        ("delete", "take a revoked till out of its store for good (history: the audit log)"),
    ):
        parser = _verb(device_verbs, verb, "device-action", help_text, device_verb=verb)
        parser.add_argument("device", help="the device's id, or its host name")
        parser.add_argument(
            "--yes", action="store_true", help="do not ask; needed without a terminal"
        )

    enrol = commands.add_parser("enrol-token", help="enrolment tokens: list, create, revoke")
    verbs = enrol.add_subparsers(dest="enrol_command", required=True)
    listed = _verb(verbs, "list", "enrol-list", "tokens of the stores you administer")
    listed.add_argument("--store", help="only this store's (name or id)")
    create = _verb(verbs, "create", "enrol-create", "a one-time token for a store's till")
    create.add_argument("--store", required=True, help="the store's name or id")
    create.add_argument("--ttl", type=_ttl, help="how long it stays valid, e.g. 24h (default)")
    revoke = _verb(verbs, "revoke", "enrol-revoke", "revoke an unused token")
    revoke.add_argument("enrolment", help="the token's id, as `enrol-token list` shows it")

    jobs = commands.add_parser("jobs", help="job history, newest first, a page at a time")
    jobs.set_defaults(admin_command="jobs")
    jobs.add_argument("--device", help="only this device's jobs (its id)")
    jobs.add_argument("--limit", type=_limit, default=50, help="rows per page (1..200)")
    jobs.add_argument("--before", help="the page after this cursor (the last page printed it)")
    jobs.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", help="the audit log, newest first (admins)")
    audit.set_defaults(admin_command="audit")
    audit.add_argument(
        "audit_verb",
        nargs="?",
        choices=["verify"],
        help="verify: the relay checks the whole hash chain (exit 1 if broken)",
    )
    audit.add_argument("--target", help="store:NAME, merchant:NAME, organisation:NAME, device:ID")
    audit.add_argument("--limit", type=_limit, default=50, help="rows per page (1..200)")
    audit.add_argument("--before", help="records before this seq (the last page printed it)")
    audit.add_argument("--json", action="store_true")
