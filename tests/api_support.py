"""Shared helpers for the API and ingestion tests: a real SQLite store and sample rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from control.domain import AudiencePackage, Campaign
from store import repo
from store.engine import open_store

NOW = 1_786_982_400  # 2026-08-18 00:00 in Beijing (16:00 UTC the day before): "818"
PACKAGES = ("parenting", "moving", "gifting")
CAMPAIGNS = ("c1", "c2", "c3")


def make_store(folder: Path, campaigns=CAMPAIGNS):
    return seeded_store(f"sqlite:///{folder / 'bidlens.db'}", campaigns)


def seeded_store(url: str, campaigns=CAMPAIGNS):
    """A migrated store at `url` that knows the test campaigns and audience packages."""
    engine = open_store(url)
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, [Campaign(c, f"campaign {c}", "toys", 1000.0, 3000.0, 120.0, 0.3)
                                     for c in campaigns])
        repo.upsert_audience_packages(conn, [AudiencePackage(p, p, p) for p in PACKAGES])
    return engine


def without_launch_gate(engine, now_ts: int = NOW) -> None:
    """Switch the launch gate off, as an admin would (audited): the sample rows' version was never launched."""
    from app.launch import Launches
    from control.config import Settings
    from control.domain import Role, User
    from tests.helpers import add_users

    admin = User("root", "Ada", Role.ADMIN)
    with engine.connect() as conn:
        known = repo.get_user_record(conn, admin.username) is not None
    if not known:
        add_users(engine, admin)
    Launches(engine, lambda: now_ts, Settings()).set_gate(admin, False,
                                                          "these tests send decisions of a version never launched")


def decision_rows(n: int, *, bucket_ts: int = NOW - 600, seed: int = 1, campaigns=CAMPAIGNS) -> list[dict]:
    """n decisions, one per slot: every campaign x package at `bucket_ts`, then the minute before, ..."""
    rng = np.random.default_rng(seed)
    rows = []
    per_bucket = len(campaigns) * len(PACKAGES)
    for i in range(n):
        bid = round(float(rng.uniform(0.2, 3.0)), 4)
        rows.append({
            "campaign_id": campaigns[i % len(campaigns)], "audience_package": PACKAGES[(i // len(campaigns)) % 3],
            "bucket_ts": bucket_ts - 60 * (i // per_bucket), "model_version": "m1", "bid": bid, "budget_share": 0.01,
            "audience_on": True, "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": bid * 2.2,
            "pred_roi": 2.2, "pacing": 1.0, "features": {"hour": 20.0, "price": 99.0},
        })
    return rows


def outcome_rows(n: int, *, bucket_ts: int = NOW - 600) -> list[dict]:
    return [{"campaign_id": CAMPAIGNS[i % 3], "audience_package": PACKAGES[i % 3], "bucket_ts": bucket_ts,
             "known_ts": bucket_ts + 60, "impressions": 100, "clicks": 5, "spend": 4.5, "orders": 1,
             "gmv": 120.0} for i in range(n)]


def count(engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table} {where}").scalar()


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows)
