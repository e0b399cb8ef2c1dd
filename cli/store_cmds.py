"""Store and user commands: init, user add, user grant / revoke, audit verify, config."""

from __future__ import annotations

import os

from app.service import Control
from app.wiring import open_control
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import InvalidValue, Role
from control.permissions import GRANTABLE, Action, PermissionDenied
from control.users import generate_password
from store.migrate import current_revisions

DEMO_USERS = (
    ("operator", "运营 Olivia", Role.OPERATOR),
    ("operator2", "运营 Oscar", Role.OPERATOR),
    ("engineer", "算法 Ethan", Role.ENGINEER),
    ("manager", "主管 Mia", Role.MANAGER),
    ("manager2", "主管 Max", Role.MANAGER),
    ("admin", "管理员 Ada", Role.ADMIN),
)


def ensure_demo_users(control: Control, password: str = "") -> list[dict]:
    """Create the demo users that do not exist yet; returns the ones created, with passwords."""
    existing = {u.username for u in control.users()}
    created = []
    for username, display, role in DEMO_USERS:
        if username in existing:
            continue
        secret = password or generate_password()
        control.add_user(None, username, display, role, secret)
        created.append({"username": username, "role": role.value, "password": secret})
    return created


def cmd_init(args) -> int:
    control = open_control()
    revisions = current_revisions(control.engine)
    created = ensure_demo_users(control, control.settings.demo_password) if args.demo_users else []
    lines = [f"store ready at {control.engine.url.render_as_string(hide_password=True)} "
             f"(schema {', '.join(revisions)})"]
    lines += [f"  demo user {u['username']:<10} {u['role']:<9} password: {u['password']}" for u in created]
    emit(args, {"db": control.engine.url.render_as_string(hide_password=True),
                "revisions": revisions, "users_created": created}, "\n".join(lines))
    return 0


def cmd_user_add(args) -> int:
    control = open_control()
    password = args.password or os.environ.get("BIDLENS_NEW_USER_PASSWORD") or generate_password()
    try:
        user = control.add_user(None, args.username, args.display_name or args.username,
                                Role(args.role), password)
    except (InvalidValue, ValueError) as exc:
        return fail(str(exc))
    shown = None if args.password else password
    emit(args, {"username": user.username, "role": user.role.value, "password": shown},
         f"user {user.username} ({user.role.value}) created" + (f"; password: {shown}" if shown else ""))
    return 0


def cmd_user_grant(args) -> int:
    control = open_control()
    try:
        user = control.set_grant(control.user(args.user), args.username, Action(args.action), args.grant)
    except (InvalidValue, PermissionDenied) as exc:
        return fail(str(exc))
    emit(args, {"username": user.username, "grants": sorted(user.grants)},
         f"user {user.username}: grants {', '.join(sorted(user.grants)) or 'none'}")
    return 0


def cmd_audit_verify(args) -> int:
    report = open_control().verify_audit()
    emit(args, {"ok": report.ok, "entries": report.entries, "first_broken_id": report.first_broken_id,
                "problem": report.problem},
         f"audit chain intact: {report.entries} entries" if report.ok else
         f"audit chain BROKEN at entry {report.first_broken_id}: {report.problem}")
    return 0 if report.ok else 1


def cmd_config(args) -> int:
    settings = load_settings()
    items = settings.public_items()
    emit(args, items, "\n".join(f"{k} = {v}" for k, v in items.items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("init", help="create or migrate the store; optionally create the demo users")
    p.add_argument("--demo-users", action="store_true",
                   help="create one user per role (passwords from BIDLENS_DEMO_PASSWORD or random, printed)")
    add_json_flag(p)
    p.set_defaults(func=cmd_init)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    p = user.add_parser("add", help="add a user")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--display-name")
    p.add_argument("--password", help="default: BIDLENS_NEW_USER_PASSWORD or a random one, printed")
    add_json_flag(p)
    p.set_defaults(func=cmd_user_add)

    for name, grant, text in (("grant", True, "grant one person an action beyond their role (admin; audited)"),
                              ("revoke-grant", False, "take a granted action back (admin; audited)")):
        p = user.add_parser(name, help=text)
        p.add_argument("username")
        p.add_argument("--action", required=True, choices=sorted(a.value for a in GRANTABLE))
        p.add_argument("--user", required=True, help="the admin doing it")
        add_json_flag(p)
        p.set_defaults(func=cmd_user_grant, grant=grant)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="verify the hash chain; names the first broken entry")
    add_json_flag(p)
    p.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser("config", help="print the settings in force (secrets redacted)")
    add_json_flag(p)
    p.set_defaults(func=cmd_config)
