"""The rule pool's shadow score on ingested decisions: pool_bid and pool_pred_roi filled from the
pool in force for the rows a bidder sent without them (guards.shadow, docs/GUARDS.md)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from sqlalchemy import Engine

from guards.pool_store import load_active_pool
from guards.shadow import shadow_score


def shadow_filler(engine: Engine) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`enrich` for app.ingest.ingest_frame: the bidder's own pool figures win when it sent them."""
    def fill(accepted: pd.DataFrame) -> pd.DataFrame:
        if accepted.empty:
            return accepted
        with engine.connect() as conn:
            active = load_active_pool(conn)
        if active is None:
            return accepted
        score = shadow_score(accepted, active[1])
        out = accepted.copy()
        for column in ("pool_bid", "pool_pred_roi"):
            mine = out[column] if column in out else pd.Series(float("nan"), index=out.index)
            out[column] = pd.to_numeric(mine, errors="coerce").fillna(score[column])
        return out
    return fill
