"""Small builders shared by the tests."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from control.domain import AudiencePackage, Campaign
from control.users import hash_password
from store import repo

PROMOTION_START = 1_786_982_400


def seed_campaigns(engine, n: int = 3) -> list[Campaign]:
    campaigns = [Campaign(f"c{i}", f"Campaign {i}", "beauty", daily_budget=10_000, budget_cap=20_000,
                          avg_order_value=150, gross_margin=0.3) for i in range(1, n + 1)]
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, campaigns)
        repo.upsert_audience_packages(conn, [AudiencePackage("gifting", "送礼", "Gifting"),
                                             AudiencePackage("pets", "宠物", "Pets")])
    return campaigns


def decision_frame(n: int, bucket_ts: int = PROMOTION_START, seed: int = 1,
                   campaigns=("c1", "c2", "c3")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bid = np.round(rng.uniform(0.5, 3.0, n), 4)
    return pd.DataFrame({
        "campaign_id": [campaigns[i % len(campaigns)] for i in range(n)],
        "audience_package": ["gifting" if i % 2 else "pets" for i in range(n)],
        "bucket_ts": bucket_ts,
        "model_version": "v1",
        "bid": bid,
        "budget_share": 0.05,
        "audience_on": True,
        "pred_ctr": 0.02,
        "pred_cvr": 0.03,
        "pred_value": bid * 2.1,
        "pred_roi": 2.1,
    })


PASSWORD = "correct horse battery"


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


def add_users(engine, *users) -> None:
    """Make hand-written users real users of the store (the core acts only for those), password PASSWORD."""
    with engine.begin() as conn:
        for user in users:
            repo.insert_user(conn, user, _password_hash(), PROMOTION_START)
