"""Service tokens: created once, stored hashed, revocable, permission-checked and audited."""

from __future__ import annotations

import json

import pytest

from app.service import Control
from app.tokens import Grant, Tokens, hash_token
from cli.main import main
from control.clock import ManualClock
from control.config import Settings
from control.domain import InvalidValue, Role, User
from control.permissions import ActorRefused, PermissionDenied
from store import repo
from tests.api_support import NOW, make_store
from tests.helpers import add_users


@pytest.fixture()
def tokens(tmp_path):
    return Tokens(make_store(tmp_path), ManualClock(NOW))


def test_only_the_hash_is_stored_and_the_secret_authenticates(tokens):
    token, secret = tokens.create(None, "bidder", "sim")
    with tokens.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM api_tokens").scalar()
    assert stored == hash_token(secret) and secret not in stored
    assert tokens.authenticate(secret) == token
    assert tokens.authenticate(secret[:-1]) is None
    assert tokens.authenticate(None) is None
    assert token.may(Grant.WRITE_DATA) and token.may(Grant.READ_POLICY)


def test_a_reader_only_reads_and_a_revoked_token_does_nothing(tokens):
    reader, secret = tokens.create(None, "reader")
    assert reader.may(Grant.READ_POLICY) and not reader.may(Grant.WRITE_DATA)
    revoked = tokens.revoke(None, reader.token_id)
    assert not revoked.active and not revoked.may(Grant.READ_POLICY)
    assert tokens.authenticate(secret) is None


def test_only_admins_manage_tokens_and_every_change_is_audited(tokens):
    admin = User("ada", "Ada", Role.ADMIN)
    manager = User("mia", "Mia", Role.MANAGER)
    add_users(tokens.engine, admin, manager)
    with pytest.raises(PermissionDenied):
        tokens.create(manager, "bidder")
    token, _ = tokens.create(admin, "bidder", "prod-bidder")
    with pytest.raises(PermissionDenied):
        tokens.revoke(manager, token.token_id)
    with pytest.raises(PermissionDenied):
        tokens.list(manager)
    tokens.revoke(admin, token.token_id)
    tokens.revoke(admin, token.token_id)  # already revoked: no second entry
    with pytest.raises(InvalidValue):
        tokens.revoke(admin, 999)
    with pytest.raises(InvalidValue):
        tokens.create(admin, "superuser")
    with tokens.engine.connect() as conn:
        audit = repo.load_audit(conn, entity="api_token")
    assert Control(tokens.engine, tokens.clock, Settings()).verify_audit().ok
    assert [(e.actor, e.action) for e in audit] == [("ada", "api_token.create"), ("ada", "api_token.revoke")]
    assert all("token" not in json.dumps(e.after).replace("token_id", "") for e in audit)
    with pytest.raises(ActorRefused, match="until the store has an admin"):  # the machine, once an admin exists
        tokens.create(None, "bidder")
    assert tokens.create_for_machine("bidder", "the demo's simulator")[0].created_by == "system"


def test_the_cli_creates_lists_and_revokes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    assert main(["token", "create", "--role", "bidder", "--name", "sim", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["token"].startswith("blt_") and created["role"] == "bidder"
    assert main(["token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["sim"] and "token" not in listed[0]
    assert created["token"] not in json.dumps(listed)
    assert main(["token", "revoke", str(created["token_id"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is False
    assert main(["token", "revoke", "42"]) == 2
    with make_store(tmp_path).connect() as conn:
        assert {e.actor for e in repo.load_audit(conn, entity="api_token")} == {"system"}
