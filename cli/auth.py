"""Who acts from the command line: a person who logs in, never a bare name.

`--user NAME` (`--by NAME` for alerts) names them; the password comes from the BIDLENS_PASSWORD
environment variable (scripts, the demo; never echoed) or, at a terminal, a prompt. It is the panel's
login (lockout, the throttle per source, the audit trail), with the source "cli:HOST". The core then
reloads the person in the transaction of what they do, as it does for the panel.
"""

from __future__ import annotations

import getpass
import socket
import sys

from app.service import Control, LoginFailed
from control.config import load_settings
from control.domain import ConflictError, InvalidValue, User
from control.permissions import ActorRefused, PermissionDenied

PASSWORD_ENV = "BIDLENS_PASSWORD"
# What a command's person or the core may refuse; the command says why and exits 2.
REFUSALS = (LoginFailed, ActorRefused, PermissionDenied, InvalidValue, ConflictError)


def add_login(parser, *, flag: str = "--user", required: bool = True, default: str | None = None) -> None:
    parser.add_argument(flag, dest="user", required=required, default=default, metavar="NAME",
                        help=f"who acts; logs in with the password from {PASSWORD_ENV} or a prompt")


def password_for(username: str) -> str:
    password = load_settings().password
    if password:
        return password
    if not sys.stdin.isatty():
        raise InvalidValue(PASSWORD_ENV, "", "no password: set it, or run the command at a terminal to be asked")
    return getpass.getpass(f"password for {username}: ")


def login(control: Control, username: str) -> User:
    """The person named, logged in; LoginFailed (one answer whatever was wrong) otherwise."""
    if not username:
        raise InvalidValue("user", username, "name who acts (--user NAME, or --by NAME for alerts)")
    return control.login(username, password_for(username), source=f"cli:{socket.gethostname()}")


def login_or_machine(control: Control, username: str | None) -> User | None:
    """The person named, logged in; or, with no name, the machine itself (None), which the core lets
    manage users and tokens only while the store has no active admin (bootstrap)."""
    return None if username is None else login(control, username)
