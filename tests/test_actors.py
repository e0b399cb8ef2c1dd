"""Every action by a verified person (issue 16), on SQLite and PostgreSQL: the core reloads its actor in
the acting transaction; the CLI logs in; admins deactivate, demote and reset users; nobody who wrote any
version of an override reviews it."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select, update

from app.alert_desk import acknowledge_alert
from app.service import Control, LoginFailed
from cli.main import main
from control.config import Settings
from control.domain import InvalidValue, OverrideField, OverrideStatus, Role, User
from control.overrides import FourEyesViolation
from control.permissions import ActorRefused, PermissionDenied
from store import repo
from store import schema as s
from store.engine import make_engine
from store.migrate import alembic_config
from tests.guards_helpers import init_cli_store
from tests.helpers import PASSWORD, add_users, decision_frame, seed_campaigns

OPERATOR = User("olivia", "Olivia", Role.OPERATOR)
MANAGER = User("manager", "Mia", Role.MANAGER)
MANAGER2 = User("max", "Max", Role.MANAGER)
MANAGER3 = User("meng", "Meng", Role.MANAGER)
ADMIN = User("ada", "Ada", Role.ADMIN)


@pytest.fixture
def seeded(control, engine, clock):
    seed_campaigns(engine)
    repo.write_decisions(engine, decision_frame(6).assign(bid=1.0), received_ts=clock())
    add_users(engine, OPERATOR, MANAGER, MANAGER2, MANAGER3, ADMIN)
    return control


def propose(control, clock, actor=OPERATOR):
    return control.propose_override(actor, campaign_id="c1", audience_package="gifting", field=OverrideField.BID,
                                    value=1.5, reason="CVR fell in gifting", expires_ts=clock() + 3600)


def test_a_demoted_managers_session_cannot_approve(seeded, clock):
    """Issue 16: a session whose user was since demoted (or deactivated) still approved an override."""
    proposal = propose(seeded, clock)
    session_user = MANAGER  # what the session remembers from its login
    seeded.set_user_role(ADMIN, "manager", Role.OPERATOR)
    with pytest.raises(ActorRefused, match="is now operator, not manager"):
        seeded.approve_override(session_user, proposal.override_id, proposal.version)
    seeded.set_user_role(ADMIN, "manager", Role.MANAGER)
    seeded.set_user_active(ADMIN, "manager", False)
    with pytest.raises(ActorRefused, match="deactivated"):
        seeded.approve_override(session_user, proposal.override_id, proposal.version)
    assert seeded.overrides()[0].status is OverrideStatus.PROPOSED
    with pytest.raises(LoginFailed):
        seeded.login("manager", PASSWORD)  # a deactivated user does not log in either


@pytest.mark.parametrize("forged", [User("manager ", "Mia", Role.MANAGER), User("MANAGER", "Mia", Role.MANAGER),
                                    User("nobody", "No One", Role.MANAGER), User("olivia", "Olivia", Role.MANAGER)])
def test_a_hand_made_user_acts_for_nobody(seeded, clock, forged):
    """Issue 16: the core trusted whatever User object it was passed; a hand-made User("manager ", ...)
    approved an override."""
    proposal = propose(seeded, clock)
    with pytest.raises(ActorRefused):
        seeded.approve_override(forged, proposal.override_id, proposal.version)
    with pytest.raises(ActorRefused):
        seeded.set_kill_switch(forged, True, "forged")
    with pytest.raises(ActorRefused):
        acknowledge_alert(seeded, forged, 1)
    assert not seeded.kill_switch().global_on


def test_nobody_who_wrote_any_version_reviews_it(seeded, clock):
    """Issue 16: the original proposer approved after someone else re-submitted the same proposal (an
    edit moved proposed_by)."""
    proposal = propose(seeded, clock, actor=MANAGER)
    edited = seeded.edit_override(MANAGER2, proposal.override_id, proposal.version, value=1.4,
                                  reason="a little lower", expires_ts=clock() + 3600)
    assert edited.proposed_by == "max" and edited.authors == ("manager", "max")
    for author in (MANAGER, MANAGER2):
        with pytest.raises(FourEyesViolation, match="proposed or edited"):
            seeded.approve_override(author, edited.override_id, edited.version)
    assert seeded.approve_override(MANAGER3, edited.override_id, edited.version).status is OverrideStatus.APPROVED


def test_admins_deactivate_demote_and_reset_users_and_keep_one_admin(seeded, engine):
    with pytest.raises(PermissionDenied):
        seeded.set_user_active(MANAGER, "olivia", False)
    user = seeded.reset_password(ADMIN, "olivia", "a brand new password")
    assert user.username == "olivia"
    with pytest.raises(LoginFailed):
        seeded.login("olivia", PASSWORD)
    assert seeded.login("olivia", "a brand new password").username == "olivia"
    with pytest.raises(InvalidValue, match="last active admin"):
        seeded.set_user_role(ADMIN, "ada", Role.MANAGER)
    with pytest.raises(InvalidValue, match="username='ghost'"):
        seeded.set_user_active(ADMIN, "ghost", False)
    with pytest.raises(ActorRefused, match="until the store has an admin"):
        seeded.add_user(None, "sneaky", "Sneaky", Role.ADMIN, PASSWORD)  # the machine, once an admin exists
    with engine.connect() as conn:
        entries = [e for e in repo.load_audit(conn, entity="user") if e.action.startswith("user.")
                   and e.action not in ("user.login", "user.login_failed")]
        stored = conn.execute(select(s.users.c.password_hash).where(s.users.c.username == "olivia")).scalar()
    assert [(e.actor, e.action, e.entity_id) for e in entries] == [("ada", "user.reset_password", "olivia")]
    assert entries[0].after == {"username": "olivia", "display_name": "Olivia", "role": "operator",
                                "active": True, "password": "reset"}
    assert stored not in json.dumps([e.after for e in entries])


@pytest.fixture
def cli_store(tmp_path, monkeypatch):
    engine = init_cli_store(tmp_path, monkeypatch)  # mia (manager) and olivia (operator), no admin yet
    return engine


def test_the_cli_acts_only_as_a_person_who_logs_in(cli_store, monkeypatch, capsys):
    """Issue 16: `bidlens guard kill on --user manager` acted as anyone named, with no password; `alerts ack
    --by` took a name that does not exist."""
    kill = ["guard", "kill", "on", "--reason", "pause all", "--user", "mia", "--json"]
    monkeypatch.delenv("BIDLENS_PASSWORD")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(kill) == 2 and "BIDLENS_PASSWORD" in capsys.readouterr().err  # no password, no terminal
    monkeypatch.setenv("BIDLENS_PASSWORD", "not her password")
    assert main(kill) == 2 and "wrong username or password" in capsys.readouterr().err
    monkeypatch.setenv("BIDLENS_PASSWORD", "correct horse battery")
    assert main([*kill[:-3], "--user", "nobody"]) == 2
    assert main(["alerts", "ack", "1", "--by", "nobody"]) == 2
    assert "wrong username or password" in capsys.readouterr().err
    assert main(kill) == 0 and json.loads(capsys.readouterr().out)["global"] is True
    with cli_store.connect() as conn:
        audit = [(e.actor, e.action) for e in repo.load_audit(conn)]
    assert ("mia", "kill_switch.set") in audit and ("system", "user.login_failed") in audit
    assert "not her password" not in json.dumps([e.after for e in repo.load_audit(cli_store.connect())])


def test_cli_user_commands_are_an_admins_and_audited(cli_store, monkeypatch, capsys):
    assert main(["user", "add", "ada", "--role", "admin", "--password", "admin password"]) == 0  # bootstrap
    assert main(["user", "add", "eve", "--role", "admin", "--password", "eve's password"]) == 2  # not any more
    assert "until the store has an admin" in capsys.readouterr().err
    assert main(["user", "add", "Mia", "--role", "manager", "--user", "ada"]) == 2  # BIDLENS_PASSWORD is mia's
    monkeypatch.setenv("BIDLENS_PASSWORD", "admin password")
    assert main(["user", "add", "MIA", "--role", "manager", "--user", "ada"]) == 2
    assert "already exists as 'mia'" in capsys.readouterr().err
    assert main(["user", "role", "mia", "operator", "--user", "ada", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "operator"
    assert main(["user", "deactivate", "olivia", "--user", "ada", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is False
    monkeypatch.setenv("BIDLENS_NEW_USER_PASSWORD", "olivia's new password")
    assert main(["user", "reset-password", "olivia", "--user", "ada", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["password"] is None  # given, so not printed
    assert main(["user", "activate", "olivia", "--user", "ada"]) == 0
    assert main(["user", "deactivate", "olivia", "--user", "mia"]) == 2  # mia is no admin
    monkeypatch.setenv("BIDLENS_PASSWORD", "olivia's new password")
    assert main(["guard", "kill", "on", "--reason", "x", "--user", "olivia"]) == 2  # an operator may not
    assert "may not kill_switch" in capsys.readouterr().err
    with cli_store.connect() as conn:
        changes = [(e.actor, e.action, e.entity_id) for e in repo.load_audit(conn, entity="user")
                   if e.action not in ("user.login", "user.login_failed", "user.add")]
    assert changes == [("ada", "user.role", "mia"), ("ada", "user.deactivate", "olivia"),
                       ("ada", "user.reset_password", "olivia"), ("ada", "user.activate", "olivia")]


def test_the_migration_fills_usernames_and_override_authors_from_the_audit_trail(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    command.upgrade(alembic_config(engine), "0003_decision_slot_index")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (username, display_name, role, password_hash, active, "
                             "failed_logins, locked_until_ts, created_ts) VALUES ('Mia', 'Mia', 'manager', 'x', 1, "
                             "0, 0, 0)")
        conn.exec_driver_sql("INSERT INTO overrides (override_id, campaign_id, field, value, reason, status, "
                             "proposed_by, proposed_ts, expires_ts, review_comment, version) VALUES "
                             "(1, 'c1', 'bid', 1.5, 'r', 'proposed', 'max', 0, 10, '', 2)")
        for entry_id, actor, action in ((1, "Mia", "override.propose"), (2, "max", "override.edit")):
            conn.exec_driver_sql(
                "INSERT INTO audit_log (entry_id, ts, actor, action, entity, entity_id, prev_hash, hash) "
                f"VALUES ({entry_id}, 0, '{actor}', '{action}', 'override', '1', '', '')")
    command.upgrade(alembic_config(engine), "heads")
    with engine.connect() as conn:
        assert conn.execute(select(s.users.c.username_key)).scalar() == "mia"
        assert repo.get_override(conn, 1).authors == ("Mia", "max")
    with engine.begin() as conn, pytest.raises(Exception, match="UNIQUE"):
        conn.execute(update(s.users).values(username_key="mia").where(s.users.c.username == "Mia"))
        repo.insert_user(conn, User("MIA", "x", Role.ADMIN), "x", 0)


def test_the_core_reloads_the_actor_for_guard_tokens_and_thresholds(seeded, engine, clock):
    from app.tokens import Tokens
    from app.wiring import guard_service
    from guards.thresholds import ThresholdEdit

    service = guard_service(seeded)
    seeded.set_user_active(ADMIN, "max", False)
    with pytest.raises(ActorRefused):
        service.force(MANAGER2, "c1", "pool", "818")
    with pytest.raises(ActorRefused):
        service.set_thresholds(MANAGER2, ThresholdEdit("roi", "c1", {"floor": 2.5}, "thin"))
    with pytest.raises(ActorRefused):
        service.submit_rule_pool(MANAGER2, "")
    with pytest.raises(ActorRefused):
        Tokens(engine, clock).create(dataclasses.replace(ADMIN, username="ADA"), "bidder")
    assert Tokens(engine, clock).create(ADMIN, "bidder")[0].created_by == "ada"
    assert service.force(MANAGER, "c1", "pool", "818")  # the active one acts

    with pytest.raises(ActorRefused):  # a stale session's user: Control, same check
        Control(engine, clock, Settings()).propose_override(
            dataclasses.replace(OPERATOR, role=Role.MANAGER), campaign_id="c1", audience_package=None,
            field=OverrideField.BID, value=1.2, reason="x", expires_ts=clock() + 60)
