"""Store helpers for the bidder API: service tokens and idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from store import schema as s


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: int
    name: str
    role: str
    created_ts: int
    created_by: str
    revoked_ts: int | None


def _token(r) -> TokenRecord:
    return TokenRecord(r.token_id, r.name, r.role, r.created_ts, r.created_by, r.revoked_ts)


def insert_token(conn: Connection, name: str, role: str, token_hash: str, created_by: str,
                 now_ts: int) -> TokenRecord:
    token_id = conn.execute(insert(s.api_tokens).values(
        name=name, role=role, token_hash=token_hash, created_ts=now_ts, created_by=created_by)
    ).inserted_primary_key[0]
    return get_token(conn, token_id)


def get_token(conn: Connection, token_id: int) -> TokenRecord | None:
    r = conn.execute(select(s.api_tokens).where(s.api_tokens.c.token_id == token_id)).first()
    return _token(r) if r else None


def token_by_hash(conn: Connection, token_hash: str) -> TokenRecord | None:
    r = conn.execute(select(s.api_tokens).where(s.api_tokens.c.token_hash == token_hash)).first()
    return _token(r) if r else None


def list_tokens(conn: Connection) -> list[TokenRecord]:
    return [_token(r) for r in conn.execute(select(s.api_tokens).order_by(s.api_tokens.c.token_id))]


def set_token_revoked(conn: Connection, token_id: int, now_ts: int) -> None:
    conn.execute(update(s.api_tokens).where(s.api_tokens.c.token_id == token_id).values(revoked_ts=now_ts))


# --- idempotency keys: claimed before the write, completed with the response after it ---------

PENDING = "pending"


def claim_idempotency_key(engine: Engine, key: str, request_hash: str, now_ts: int) -> dict | None:
    """Claim `key` for a new request: None if claimed now, else the stored document.

    The document is {"state": "pending"|"done", "request_hash": ..., "status": ..., "body": ...}.
    """
    try:
        with engine.begin() as conn:
            conn.execute(insert(s.idempotency_keys).values(
                key=key, created_ts=now_ts, response={"state": PENDING, "request_hash": request_hash}))
        return None
    except IntegrityError:
        with engine.connect() as conn:
            return conn.execute(select(s.idempotency_keys.c.response)
                                .where(s.idempotency_keys.c.key == key)).scalar_one()


def complete_idempotency_key(engine: Engine, key: str, request_hash: str, status: int, body: dict) -> None:
    with engine.begin() as conn:
        conn.execute(update(s.idempotency_keys).where(s.idempotency_keys.c.key == key).values(
            response={"state": "done", "request_hash": request_hash, "status": status, "body": body}))


def release_idempotency_key(engine: Engine, key: str) -> None:
    """Forget a claim whose request failed before anything was stored, so a retry can run."""
    with engine.begin() as conn:
        conn.execute(delete(s.idempotency_keys).where(s.idempotency_keys.c.key == key))
