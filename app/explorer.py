"""Queries the decision explorer needs to find a decision; the explanation itself is explain/'s
(explain.store.decision_breakdown, load_window)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from control.domain import BidFormula
from explain.store import bid_formula
from store import schema as s


def decision_model(conn: Connection, decision_id: int) -> tuple[str, dict | None, BidFormula | None]:
    """The model version that made the decision, its registry row (None if never registered) and the bid
    formula its bidder is recorded to bid with."""
    version = conn.execute(select(s.decisions.c.model_version)
                           .where(s.decisions.c.decision_id == decision_id)).scalar()
    row = conn.execute(select(s.models).where(s.models.c.model_version == version)).first()
    return version, None if row is None else dict(row._mapping), bid_formula(conn, version)


def find_decision_id(conn: Connection, campaign_id: str, audience_package: str, bucket_ts: int) -> int | None:
    """The newest decision for the slot at or before `bucket_ts`."""
    d = s.decisions.c
    return conn.execute(select(d.decision_id).where(d.campaign_id == campaign_id,
                                                    d.audience_package == audience_package,
                                                    d.bucket_ts <= bucket_ts)
                        .order_by(d.bucket_ts.desc(), d.decision_id.desc()).limit(1)).scalar()


def slot_buckets(conn: Connection, campaign_id: str, audience_package: str, limit: int = 500) -> list[int]:
    """The slot's decision buckets, newest first (uses ix_decisions_campaign_bucket)."""
    d = s.decisions.c
    q = (select(d.bucket_ts).where(d.campaign_id == campaign_id, d.audience_package == audience_package)
         .order_by(d.bucket_ts.desc()).limit(limit))
    return [r[0] for r in conn.execute(q)]
