"""`dicom-node users …` and `dicom-node tokens …`: who may use the API and the dashboard.

Non-interactive on purpose (provisioning scripts, 3 a.m.): a password comes on standard
input (``--password-stdin``), never as an argument that ``ps`` and shell histories
would show, and ``tokens create`` prints the token alone on its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from dicom_node.cli.common import command_config
from dicom_node.ops.accounts import (
    AccountRefused,
    add_user,
    create_token,
    disable_user,
    list_users,
    revoke_token,
    set_password,
)
from storage.database import Database
from storage.models import Role


def _password(args: argparse.Namespace) -> str | None:
    """The password from standard input (its first line), or None without the option."""
    if not args.password_stdin:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        print("dicom-node: --password-stdin: standard input held no password", file=sys.stderr)
        raise SystemExit(2)
    return line


def _run(args: argparse.Namespace) -> int:
    config = command_config(args)
    password = _password(args) if "password_stdin" in args else None
    db = Database(config.database_url)
    now = datetime.now(UTC)
    try:
        with db.session() as session:
            lines = _act(args, session, password, now)
    except AccountRefused as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _act(
    args: argparse.Namespace, session: Session, password: str | None, now: datetime
) -> list[str]:
    """What the command does, and the lines it prints."""
    command = args.accounts_command
    if command == "users add":
        user = add_user(session, args.name, Role(args.role), password, now)
        how = "password" if password is not None else "tokens only (no password)"
        return [f"user {user.name} added, role {user.role.value}, signs in with {how}"]
    if command == "users list":
        rows = list_users(session)
        if args.json:
            return [json.dumps(row) for row in rows]
        return [
            f"{r['name']}\t{r['role']}\t{'disabled' if r['disabled'] else 'active'}"
            f"\t{r['tokens']} token(s)\t{'password' if r['password'] else 'no password'}"
            for r in rows
        ]
    if command == "users passwd":
        assert password is not None
        set_password(session, args.name, password)
        return [f"user {args.name}: password changed, dashboard sessions signed out"]
    if command == "users disable":
        disable_user(session, args.name, now)
        return [f"user {args.name}: disabled; tokens and sessions no longer work"]
    if command == "tokens create":
        token_id, token = create_token(session, args.name, args.label, now)
        return [f"token {token_id} for {args.name} (shown once; store it now):", token]
    revoke_token(session, args.id, now)
    return [f"token {args.id}: revoked"]


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config: list[argparse.ArgumentParser],
) -> None:
    """The users and tokens commands, on the CLI's sub-command list."""
    users = sub.add_parser("users", help="who may use the API and dashboard").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add a user", parents=config)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else: tokens only)",
    )
    add.set_defaults(func=_run, accounts_command="users add")
    listing = users.add_parser("list", help="users, roles and token counts", parents=config)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_run, accounts_command="users list")
    passwd = users.add_parser("passwd", help="set a user's password", parents=config)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", required=True)
    passwd.set_defaults(func=_run, accounts_command="users passwd")
    disable = users.add_parser("disable", help="lock a user out at once", parents=config)
    disable.add_argument("name")
    disable.set_defaults(func=_run, accounts_command="users disable")

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser(
        "create", help="a new token for a user; printed alone on the last line", parents=config
    )
    create.add_argument("name", help="the user the token acts for")
    create.add_argument("--label", default="", help="what the token is for")
    create.set_defaults(func=_run, accounts_command="tokens create")
    revoke = tokens.add_parser("revoke", help="a token stops working at once", parents=config)
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_run, accounts_command="tokens revoke")
