"""Service tokens for machines (the bidder): roles, grants, and their management.

A token is shown once when created; the store keeps only its SHA-256 hash.
Managing tokens is an admin's job (Action.MANAGE_TOKENS), checked here in the
core and audited; `actor` None is the machine itself, recorded as "system": allowed only while the
store has no active admin, or for a token of the machine's own processes (`create_for_machine`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine

from app.service import SYSTEM_ACTOR, acting_admin
from control.audit import AuditRecord
from control.domain import InvalidValue, User, require_text
from control.permissions import Action, require
from store import api_repo, repo

TOKEN_PREFIX = "blt_"


class TokenRole(StrEnum):
    BIDDER = "bidder"  # posts decisions and outcomes, reads the policy and guard states
    READER = "reader"  # reads the policy and guard states


class Grant(StrEnum):
    WRITE_DATA = "write_data"
    READ_POLICY = "read_policy"


GRANTS: dict[TokenRole, frozenset[Grant]] = {
    TokenRole.BIDDER: frozenset({Grant.WRITE_DATA, Grant.READ_POLICY}),
    TokenRole.READER: frozenset({Grant.READ_POLICY}),
}


@dataclass(frozen=True, slots=True)
class ServiceToken:
    token_id: int
    name: str
    role: TokenRole
    created_ts: int
    created_by: str
    revoked_ts: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_ts is None

    def may(self, grant: Grant) -> bool:
        return self.active and grant in GRANTS[self.role]

    def as_json(self) -> dict:
        return {"token_id": self.token_id, "name": self.name, "role": self.role.value,
                "created_ts": self.created_ts, "created_by": self.created_by,
                "revoked_ts": self.revoked_ts, "active": self.active}


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _from_record(r: api_repo.TokenRecord) -> ServiceToken:
    return ServiceToken(r.token_id, r.name, TokenRole(r.role), r.created_ts, r.created_by, r.revoked_ts)


class Tokens:
    """Token management and authentication over the store; the clock is passed in."""

    def __init__(self, engine: Engine, clock: Callable[[], int]):
        self.engine = engine
        self.clock = clock

    def _audit(self, conn, actor: User | None, action: str, token_id: int, before, after) -> None:
        repo.append_audit(conn, AuditRecord(self.clock(), actor.username if actor else SYSTEM_ACTOR,
                                            action, "api_token", str(token_id), before, after))

    def create(self, actor: User | None, role: TokenRole | str, name: str = "") -> tuple[ServiceToken, str]:
        """A new token and its secret (shown once, never stored). `actor` None is the machine itself,
        which may only while the store has no active admin."""
        return self._create(actor, role, name, machine=False)

    def create_for_machine(self, role: TokenRole | str, name: str) -> tuple[ServiceToken, str]:
        """A token for one of the machine's own processes (the demo's simulator playing a bidder), made
        in process whoever administers the store; audited as "system"."""
        return self._create(None, role, name, machine=True)

    def _create(self, actor: User | None, role: TokenRole | str, name: str,
                machine: bool) -> tuple[ServiceToken, str]:
        try:
            role = TokenRole(role)
        except ValueError:
            raise InvalidValue("role", role, f"must be one of {[r.value for r in TokenRole]}") from None
        name = name or f"{role.value}-token"
        require_text("name", name)
        if len(name) > 100:
            raise InvalidValue("name", name, "must be at most 100 characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            actor = acting_admin(conn, actor, Action.MANAGE_TOKENS, machine=machine)
            token = _from_record(api_repo.insert_token(
                conn, name, role.value, hash_token(secret),
                actor.username if actor else SYSTEM_ACTOR, self.clock()))
            self._audit(conn, actor, "api_token.create", token.token_id, None, token.as_json())
        return token, secret

    def revoke(self, actor: User | None, token_id: int) -> ServiceToken:
        with self.engine.begin() as conn:
            actor = acting_admin(conn, actor, Action.MANAGE_TOKENS)
            record = api_repo.get_token(conn, token_id)
            if record is None:
                raise InvalidValue("token_id", token_id, "no such token")
            before = _from_record(record)
            if before.active:
                api_repo.set_token_revoked(conn, token_id, self.clock())
            after = _from_record(api_repo.get_token(conn, token_id))
            if before.active:
                self._audit(conn, actor, "api_token.revoke", token_id, before.as_json(), after.as_json())
        return after

    def list(self, actor: User | None) -> list[ServiceToken]:
        if actor is not None:
            require(actor, Action.MANAGE_TOKENS)
        with self.engine.connect() as conn:
            return [_from_record(r) for r in api_repo.list_tokens(conn)]

    def authenticate(self, secret: str | None) -> ServiceToken | None:
        """The active token with this secret, or None (unknown, malformed or revoked alike)."""
        if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        with self.engine.connect() as conn:
            record = api_repo.token_by_hash(conn, hash_token(secret))
        if record is None or record.revoked_ts is not None:
            return None
        return _from_record(record)
