"""Store and user commands: init, user add|deactivate|activate|role|reset-password|grant|revoke-grant, audit
verify, config."""

from __future__ import annotations

import os

from app.service import Control
from app.wiring import open_control
from cli.auth import REFUSALS, add_login, login, login_or_machine
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import Role
from control.permissions import GRANTABLE, Action
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
    """Create the demo users that do not exist yet; returns the ones created, with passwords.

    Only while the store has no active admin (the machine may not make users after that: an admin does)."""
    users = control.users()
    if any(u.role is Role.ADMIN and u.active for u in users):
        return []
    existing = {u.username for u in users}
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


def _new_password(args) -> tuple[str, str | None]:
    """(the password, itself again if it must be printed: it was made up here)."""
    given = args.password or os.environ.get("BIDLENS_NEW_USER_PASSWORD")
    password = given or generate_password()
    return password, None if given else password


def cmd_user_add(args) -> int:
    control = open_control()
    password, shown = _new_password(args)
    try:
        user = control.add_user(login_or_machine(control, args.user), args.username,
                                args.display_name or args.username, Role(args.role), password)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"username": user.username, "role": user.role.value, "password": shown},
         f"user {user.username} ({user.role.value}) created" + (f"; password: {shown}" if shown else ""))
    return 0


def cmd_user_change(args) -> int:
    """deactivate, activate, role, reset-password: an admin's change to a user, audited."""
    control = open_control()
    shown = None
    try:
        admin = login(control, args.user)
        if args.user_command == "role":
            user = control.set_user_role(admin, args.username, Role(args.role))
        elif args.user_command == "reset-password":
            password, shown = _new_password(args)
            user = control.reset_password(admin, args.username, password)
        else:
            user = control.set_user_active(admin, args.username, args.user_command == "activate")
    except REFUSALS as exc:
        return fail(str(exc))
    state = "active" if user.active else "deactivated"
    emit(args, {"username": user.username, "role": user.role.value, "active": user.active, "password": shown},
         f"user {user.username}: {user.role.value}, {state}" + (f"; new password: {shown}" if shown else ""))
    return 0


def cmd_user_grant(args) -> int:
    control = open_control()
    try:
        user = control.set_grant(login(control, args.user), args.username, Action(args.action), args.grant)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"username": user.username, "grants": sorted(user.grants)},
         f"user {user.username}: grants {', '.join(sorted(user.grants)) or 'none'}")
    return 0


def cmd_audit_verify(args) -> int:
    report = open_control().verify_audit()
    anchored = (f", anchored outside the store through entry {report.anchored_id}" if report.anchored_id
                else ", not anchored before (anchored now)")
    emit(args, {"ok": report.ok, "entries": report.entries, "first_broken_id": report.first_broken_id,
                "problem": report.problem, "code": report.code, "anchored_id": report.anchored_id},
         f"audit chain intact: {report.entries} entries, signed{anchored}" if report.ok else
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
    p = user.add_parser("add", help="add a user (an admin; without --user only while the store has no admin)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--display-name")
    p.add_argument("--password", help="default: BIDLENS_NEW_USER_PASSWORD or a random one, printed")
    add_login(p, required=False)
    add_json_flag(p)
    p.set_defaults(func=cmd_user_add)
    for name, what in (("deactivate", "deactivate a user: their sessions and commands stop at once"),
                       ("activate", "activate a deactivated user again"),
                       ("role", "give a user another role (they log in again)"),
                       ("reset-password", "set a new password (BIDLENS_NEW_USER_PASSWORD, --password, or a "
                                          "random one, printed)")):
        p = user.add_parser(name, help=f"{what} (an admin; audited)")
        p.add_argument("username")
        if name == "role":
            p.add_argument("role", choices=[r.value for r in Role])
        if name == "reset-password":
            p.add_argument("--password", help="default: BIDLENS_NEW_USER_PASSWORD or a random one, printed")
        add_login(p)
        add_json_flag(p)
        p.set_defaults(func=cmd_user_change)

    for name, grant, text in (("grant", True, "grant one person an action beyond their role (admin; audited)"),
                              ("revoke-grant", False, "take a granted action back (admin; audited)")):
        p = user.add_parser(name, help=text)
        p.add_argument("username")
        p.add_argument("--action", required=True, choices=sorted(a.value for a in GRANTABLE))
        add_login(p)  # an admin
        add_json_flag(p)
        p.set_defaults(func=cmd_user_grant, grant=grant)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="verify the signed chain against its anchors outside the store; "
                                        "names the first broken entry")
    add_json_flag(p)
    p.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser("config", help="print the settings in force (secrets redacted)")
    add_json_flag(p)
    p.set_defaults(func=cmd_config)
