"""Passwords and logins: slow hashes, lockout after repeated failures.

scrypt (stdlib) with per-password salt; the stored string carries its parameters
so they can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_FAILED_LOGINS = 5
LOCKOUT_S = 15 * 60


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                            n=int(n), r=int(r), p=int(p), dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class LoginState:
    failed_logins: int = 0
    locked_until_ts: int = 0


@dataclass(frozen=True, slots=True)
class LoginResult:
    ok: bool
    state: LoginState
    message: str


def attempt_login(state: LoginState, password_ok: bool, now_ts: int) -> LoginResult:
    """Apply one login attempt to a user's lockout state (pure)."""
    if now_ts < state.locked_until_ts:
        return LoginResult(False, state, "account locked; try again later")
    if password_ok:
        return LoginResult(True, LoginState(), "ok")
    failed = state.failed_logins + 1
    if failed >= MAX_FAILED_LOGINS:
        return LoginResult(False, LoginState(0, now_ts + LOCKOUT_S),
                           f"{failed} failed attempts: account locked for {LOCKOUT_S // 60} min")
    return LoginResult(False, LoginState(failed, 0), "wrong username or password")
