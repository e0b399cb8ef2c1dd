"""Store helpers for the bidder API: service tokens and idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update

from store import schema as s
from store.repo import insert_or_nothing


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


# --- idempotency keys: completed in the transaction that stores the request's rows -----------------

PENDING, DONE = "pending", "done"


class AlreadyDone(Exception):
    """Another request with this key completed first: its stored response is `document`."""

    def __init__(self, document: dict):
        super().__init__("this Idempotency-Key was completed by another request")
        self.document = document


def idempotency_document(engine: Engine, key: str) -> dict | None:
    """{"state", "request_hash", "status", "body"} stored for `key`, or None."""
    with engine.connect() as conn:
        return conn.execute(select(s.idempotency_keys.c.response).where(s.idempotency_keys.c.key == key)).scalar()


def complete_idempotency_key(conn: Connection, key: str, request_hash: str, status: int, body: dict,
                             now_ts: int) -> None:
    """In the transaction that stores the request's rows: record `key` with its response; AlreadyDone when
    another request with the key completed first (the caller's rows then roll back).

    A key and its rows commit together, so a request that dies leaves neither. A "pending" claim can only
    be one a request left before that was so (the claim was committed ahead of the rows): taken over."""
    k = s.idempotency_keys
    insert_or_nothing(conn, k, key=key, created_ts=now_ts, response={"state": PENDING, "request_hash": request_hash})
    conn.execute(update(k).where(k.c.key == key).values(created_ts=k.c.created_ts))  # lock it to the commit
    stored = conn.execute(select(k.c.response).where(k.c.key == key)).scalar_one()
    if stored.get("state") == DONE:
        raise AlreadyDone(stored)
    conn.execute(update(k).where(k.c.key == key).values(
        response={"state": DONE, "request_hash": request_hash, "status": status, "body": body}))
