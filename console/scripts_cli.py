"""``posassist-scripts``: the approvers' offline tool for the signed script repository.

Commands: init, add, sign, status, publish, retire, renew, rotate-key, root-hash
(console/scripts_repo.py has the role design). Passphrases come from ``--passphrase-file``,
``$POSASSIST_SCRIPTS_PASSPHRASE`` or a prompt; they never appear on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from posassist.client.prompt import ask_secret
from posassist.protocol.errors import EXIT_FAILURE, PosAssistError, error_line

if TYPE_CHECKING:
    from collections.abc import Sequence

PASSPHRASE_ENV = "POSASSIST_SCRIPTS_PASSPHRASE"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posassist-scripts", description="the vetted-script repository (TUF), offline side"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_dir(name: str, text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=text)
        p.add_argument("dir", type=Path, help="the repository's working directory")
        return p

    def with_passphrase(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passphrase-file", type=Path, help="first line is the key's passphrase")

    init = with_dir("init", "create the repository, its roles and keys")
    init.add_argument("--approver", action="append", required=True, help="repeat per approver")
    init.add_argument("--high-risk-threshold", type=int, default=2)
    with_passphrase(init)
    add = with_dir("add", "stage a script folder (manifest.json and its files)")
    add.add_argument("folder", type=Path)
    sign = with_dir("sign", "add one person's signature to the roles their key may sign")
    sign.add_argument("--key", type=Path, required=True, help="the signer's encrypted key file")
    sign.add_argument("--role", action="append", help="only these roles (default: all)")
    with_passphrase(sign)
    with_dir("status", "who signed what, what is below threshold or expiring")
    publish = with_dir("publish", "write the served repository into the relay's data directory")
    publish.add_argument("--to", type=Path, required=True, help="the relay's --data directory")
    retire = with_dir("retire", "remove a script version (approvers sign again)")
    retire.add_argument("script_id")
    retire.add_argument("version")
    rotate = with_dir("rotate-key", "replace a person's or an online role's key")
    rotate.add_argument("name", help="approver name, root, targets, snapshot or timestamp")
    with_passphrase(rotate)
    renew = with_dir("renew", "new expiry for roles expiring within 14 days (then sign again)")
    renew.add_argument("--role", action="append", help="only these roles, expiring or not")
    with_dir("root-hash", "print the root hash for enrolment tokens")
    return parser


def _passphrase(path: Path | None, prompt: str) -> bytes:
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        return (lines[0] if lines else "").encode()
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV].encode()
    return ask_secret(prompt, f"give --passphrase-file or set ${PASSPHRASE_ENV}").encode()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # tuf is imported only when a command runs, so `--help` stays quick.
    from .scripts_repo import ScriptRepository, init_repository

    try:
        if args.command == "init":
            phrase = _passphrase(args.passphrase_file, "passphrase for the new keys: ")
            repo = init_repository(
                args.dir, args.approver, phrase, high_risk_threshold=args.high_risk_threshold
            )
            print(f"created {args.dir}: people's keys in {args.dir / 'keys'} (encrypted)")
            print(f"root hash (enrolment tokens): {repo.root_hash()}")
            return 0
        repo = ScriptRepository(args.dir)
        if args.command == "add":
            manifest = repo.add_script(args.folder)
            needs = manifest.approvals_needed
            print(
                f"staged {manifest.id} {manifest.version} (risk {manifest.risk}): "
                f"needs {needs} approver signature{'s' if needs > 1 else ''}"
            )
        elif args.command == "sign":
            phrase = _passphrase(args.passphrase_file, f"passphrase for {args.key}: ")
            roles = repo.sign(args.key.read_bytes(), phrase, args.role)
            print(f"signed: {', '.join(roles) or 'nothing (already signed)'}")
        elif args.command == "status":
            return _status(repo)
        elif args.command == "publish":
            out = repo.publish(args.to)
            print(f"published to {out}")
            print(f"root hash (enrolment tokens): {repo.root_hash()}")
        elif args.command == "retire":
            removed = repo.retire(args.script_id, args.version)
            print(
                f"retired {len(removed)} target(s); approvers and the root key's holder must "
                "sign again before publish (the new root keeps tills from ever running it)"
            )
        elif args.command == "renew":
            renewed = repo.renew(args.role)
            if renewed:
                print(
                    f"renewed: {', '.join(renewed)}; their signers must sign again before publish"
                )
            else:
                print("nothing expires within 14 days")
        elif args.command == "rotate-key":
            phrase = _passphrase(args.passphrase_file, "passphrase for the new key: ")
            path, keyid = repo.rotate_key(args.name, phrase)
            print(f"new key for {args.name}: {path} ({keyid[:16]}); sign the changed role again")
        elif args.command == "root-hash":
            print(repo.root_hash())
    except PosAssistError as exc:  # the one place errors become words and an exit status
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file or folder named on the command line
        print(f"error: {exc} / 无法读写文件", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _status(repo: object) -> int:
    from .scripts_repo import ScriptRepository

    assert isinstance(repo, ScriptRepository)
    now = datetime.now(UTC)
    incomplete = 0
    for role in repo.status(now):
        state = "ok" if role.complete else "BELOW THRESHOLD"
        incomplete += not role.complete
        soon = "  EXPIRES SOON" if role.expires_soon(now) else ""
        print(
            f"{role.role:10} v{role.version:<4} {len(role.signed_by)}/{role.threshold} {state}"
            f"  expires {role.expires:%Y-%m-%d}{soon}"
        )
        print(f"    signed by: {', '.join(role.signed_by) or '-'}")
        if not role.complete:
            print(f"    may still sign: {', '.join(role.missing) or '-'}")
        for target in role.targets:
            print(f"    {target.path}  risk {target.risk}  {target.length} bytes")
    print(f"root hash: {repo.root_hash()}")
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
