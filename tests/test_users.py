import pytest
from sqlalchemy import select

from app.service import LoginFailed
from control.domain import Role
from control.users import LOCKOUT_S, MAX_FAILED_LOGINS
from store import schema as s


def test_passwords_are_stored_hashed_and_logins_checked(control, engine):
    control.add_user(None, "mia", "Mia", Role.MANAGER, "correct horse")
    with engine.connect() as conn:
        stored = conn.execute(select(s.users.c.password_hash)).scalar()
    assert "correct horse" not in stored and stored.startswith("scrypt$")
    assert control.login("mia", "correct horse").role is Role.MANAGER
    with pytest.raises(LoginFailed, match="wrong username or password"):
        control.login("mia", "wrong")
    with pytest.raises(LoginFailed, match="wrong username or password"):
        control.login("nobody", "wrong")


def test_repeated_failures_lock_the_account_for_a_while(control, clock):
    control.add_user(None, "olivia", "Olivia", Role.OPERATOR, "s3cret-pass")
    for _ in range(MAX_FAILED_LOGINS - 1):
        with pytest.raises(LoginFailed):
            control.login("olivia", "guess")
    with pytest.raises(LoginFailed, match="locked"):
        control.login("olivia", "guess")
    with pytest.raises(LoginFailed, match="locked"):
        control.login("olivia", "s3cret-pass")  # even the right password waits out the lock
    clock.advance(LOCKOUT_S)
    assert control.login("olivia", "s3cret-pass").username == "olivia"


def test_short_passwords_are_refused(control):
    with pytest.raises(ValueError, match="at least 8"):
        control.add_user(None, "x", "X", Role.OPERATOR, "short")
