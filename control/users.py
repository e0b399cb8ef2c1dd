"""Passwords, usernames and logins, as pure rules.

- Passwords are hashed with argon2id at OWASP's minimum parameters (argon2-cffi). Hashes of the
  earlier scheme (stdlib scrypt, N=2^14) still verify, and `needs_rehash` says to replace them at the
  next good login.
- A login first takes one of MAX_FAILED_LOGINS tries (`reserve_try`, applied by the store under a row
  lock) and only then has its password checked: guesses sent in parallel get no more tries than
  guesses sent one after another.
- Unknown users, locked accounts and wrong passwords get the same answer after the same work: the
  caller verifies the password against `dummy_hash()` when there is no real hash to verify.
- A source (a browser's address, a CLI host) may fail at most so many logins per window
  (`reserve_source_try`), whichever usernames it tries.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from control.domain import InvalidValue, Role, User, require_name

# OWASP Password Storage Cheat Sheet, argon2id: m = 19 MiB, t = 2, p = 1 (about 20 ms here).
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_FAILED_LOGINS = 5
LOCKOUT_S = 15 * 60
MAX_USERNAME = 64


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidValue("password", "***", f"must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidValue("password", "***", f"must have at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return HASHER.hash(check_password(password))


def _verify_scrypt(password: str, stored: str) -> bool:
    """The scheme before argon2: scrypt$N$r$p$salt$digest (base64)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash of an older scheme or weaker parameters: replace it after a good login."""
    return stored.startswith("scrypt$") or HASHER.check_needs_rehash(stored)


@functools.cache
def dummy_hash() -> str:
    """A hash nobody knows the password of, verified when a login has no real hash to check."""
    return HASHER.hash(secrets.token_urlsafe(24))


def generate_password() -> str:
    return secrets.token_urlsafe(12)


# --- usernames -----------------------------------------------------------------------------------

def check_username(username: object) -> str:
    """A name people can tell apart (control.domain.require_name), of at most MAX_USERNAME characters."""
    require_name("username", username)
    if len(username) > MAX_USERNAME:
        raise InvalidValue("username", username, f"must have at most {MAX_USERNAME} characters")
    return username


def check_admins_left(before: User, after: User, active_admins: int) -> None:
    """Refuse a change that would leave the store without an active admin: nobody could manage users."""
    was_admin = before.active and before.role is Role.ADMIN
    if was_admin and not (after.active and after.role is Role.ADMIN) and active_admins <= 1:
        raise InvalidValue("username", before.username, "is the last active admin; make another admin first")


def username_key(username: str) -> str:
    """What makes two usernames the same name: case does not ("Mia" is "mia")."""
    return unicodedata.normalize("NFKC", username).casefold()


# --- lockout and the per-source throttle -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoginState:
    failed_logins: int = 0      # tries taken since the last good login (a try is counted before its check)
    locked_until_ts: int = 0


def reserve_try(state: LoginState, now_ts: int) -> tuple[bool, LoginState]:
    """Take one try before the password is checked: (may check it, the state to store).

    The try that reaches MAX_FAILED_LOGINS locks the account at once; a good password then unlocks
    it (`LoginState()`), so one person's sequential tries behave as before."""
    if now_ts < state.locked_until_ts:
        return False, state
    used = (0 if state.locked_until_ts else state.failed_logins) + 1  # a lock that ran out starts afresh
    return True, LoginState(used, now_ts + LOCKOUT_S if used >= MAX_FAILED_LOGINS else 0)


@dataclass(frozen=True, slots=True)
class SourceState:
    window_start_ts: int = 0
    failures: int = 0           # counted before the check, given back after a good login


def reserve_source_try(state: SourceState, now_ts: int, max_failures: int) -> tuple[bool, SourceState]:
    """One more try from this source within its window (LOCKOUT_S long): (allowed, the state to store)."""
    if now_ts - state.window_start_ts >= LOCKOUT_S:
        state = SourceState(now_ts, 0)
    if state.failures >= max_failures:
        return False, state
    return True, SourceState(state.window_start_ts, state.failures + 1)


def refund_source_try(state: SourceState) -> SourceState:
    """A good login gives its try back: only failures count against a source."""
    return SourceState(state.window_start_ts, max(0, state.failures - 1))
