"""Small builders shared by the guard tests: observations, a store with campaigns, synthetic feeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from control.domain import AudiencePackage, Campaign
from guards.observe import Observation
from store import repo
from store.engine import open_store

T0 = 1_786_982_400
PACKAGES = ("pets", "beauty")


def obs(pred_roi: float = 2.5, *, bucket: int | None = T0, pred_spend: float = 100.0,
        realised_roi: float = math.nan, realised_spend: float = 0.0, realised_orders: float = 0.0,
        data_age_s: int | None = 30, campaign_id: str = "c1", spend_pace: float = math.nan,
        inventory_level: float = math.nan, day_elapsed_s: int = 7200,
        value_calibration: float = math.nan, model_calibration: float = math.nan,
        model_calibration_orders: float = 0.0, bought_pred_roi: float | None = None, cusum: float = 0.0,
        pool_pred_roi: float = math.nan, gross_margin: float = 0.5) -> Observation:
    """A campaign observation; the clicks bought are worth the plan's prediction unless told."""
    return Observation(campaign_id=campaign_id, latest_bucket_ts=bucket, pred_roi=pred_roi,
                       pred_spend=pred_spend, spend_per_hour=pred_spend * 60, pool_pred_roi=pool_pred_roi,
                       value_calibration=value_calibration,
                       bought_pred_roi=pred_roi if bought_pred_roi is None else bought_pred_roi,
                       realised_roi=realised_roi, realised_spend=realised_spend,
                       realised_orders=realised_orders, avg_order_value=100.0, data_age_s=data_age_s,
                       day_elapsed_s=day_elapsed_s, spend_pace=spend_pace, inventory_level=inventory_level,
                       model_calibration=model_calibration, model_calibration_orders=model_calibration_orders,
                       cusum=cusum, gross_margin=gross_margin)


def make_store(path_or_url, campaigns=("c1", "c2")):
    """A migrated store with campaigns and audience packages: a SQLite file path, or any store URL."""
    url = str(path_or_url)
    engine = open_store(url if "://" in url else f"sqlite:///{url}")
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, [Campaign(c, c, "pets", 10_000.0, 20_000.0, 100.0, 0.3) for c in campaigns])
        repo.upsert_audience_packages(conn, [AudiencePackage(p, p, p) for p in PACKAGES])
    return engine


def minute_frames(minute: int, roi_by_campaign: dict[str, float], spend: float = 50.0):
    """One bucket of decisions (pred_roi as given; pred_value the GMV per click that ROI means) and its
    outcomes (GMV at that ROI, known at once)."""
    bucket = T0 + 60 * minute
    rows, outs = [], []
    for c, roi in roi_by_campaign.items():
        for p in PACKAGES:
            rows.append({"campaign_id": c, "audience_package": p, "bucket_ts": bucket, "model_version": "t",
                         "bid": 1.0, "budget_share": 0.5, "audience_on": True, "pred_ctr": 0.01,
                         "pred_cvr": 0.02, "pred_value": roi * spend / 20, "pred_roi": roi, "decided_by": "model",
                         "features": {"spend_pace": 1.0, "inventory_level": 0.9}})
            outs.append({"campaign_id": c, "audience_package": p, "bucket_ts": bucket, "known_ts": bucket + 60,
                         "impressions": 100, "clicks": 10, "spend": spend / 2, "orders": int(round(roi * spend / 200)),
                         "gmv": roi * spend / 2})
    return pd.DataFrame(rows), pd.DataFrame(outs)


def feed_minute(engine, minute: int, roi_by_campaign: dict[str, float], *, outcomes: bool = True,
                spend: float = 50.0) -> None:
    """minute_frames written to the store, as a bidder would."""
    decisions, outs = minute_frames(minute, roi_by_campaign, spend)
    repo.write_decisions(engine, decisions, received_ts=T0 + 60 * minute + 60)
    if outcomes:
        repo.write_outcomes(engine, outs)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def init_cli_store(tmp_path, monkeypatch):
    """`bidlens init` in a temporary data folder with campaign c1, package pets, a manager (mia) and an
    operator (olivia), both with the password in BIDLENS_PASSWORD, every setting from the defaults;
    returns the store's engine."""
    from cli.main import main

    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BIDLENS_DB_URL", raising=False)
    monkeypatch.delenv("BIDLENS_GUARD_CONFIG", raising=False)
    assert main(["init"]) == 0
    engine = open_store(f"sqlite:///{tmp_path / 'bidlens.db'}")
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, [Campaign("c1", "c1", "pets", 1000.0, 2000.0, 100.0, 0.3)])
        repo.upsert_audience_packages(conn, [AudiencePackage("pets", "宠物", "Pets")])
    for user, role in (("mia", "manager"), ("olivia", "operator")):
        assert main(["user", "add", user, "--role", role, "--password", "correct horse battery"]) == 0
    monkeypatch.setenv("BIDLENS_PASSWORD", "correct horse battery")  # how they log in from a script
    return engine


def run_cli(capsys, *argv) -> tuple[int, object]:
    """`bidlens ARGV` in process: its exit code and what it printed (parsed when --json)."""
    import json

    from cli.main import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in argv and out.strip() else out
