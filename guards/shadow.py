"""Shadow score: the manual rule pool scored next to the model all the time.

`shadow_score` fills the decisions table's pool_bid and pool_pred_roi from a model
plan and the pool (the simulator and the ingest API call it); `roi_comparison`
is the panel's "model ROI vs rule pool ROI", per campaign and overall, before
anything trips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from control.clock import PROMOTION_TZ_OFFSET_S
from control.domain import RuleAction
from guards.rule_pool import RulePool, hour_of


def shadow_score(plan: pd.DataFrame, pool: RulePool, reference_bid: np.ndarray | None = None,
                 tz_offset_s: int = PROMOTION_TZ_OFFSET_S) -> pd.DataFrame:
    """pool_bid and pool_pred_roi for every row of a model plan, and the answering rule.

    plan columns: campaign_id, audience_package, bucket_ts, model_bid (or bid), pred_roi.
    The model's predicted ROI at bid b is pred_value / (b x paid_ratio) (sim.bidder), so
    at the pool's bid it is pred_roi x model_bid / pool_bid: the same predicted value per
    click, paid in proportion to the bid. A slot the pool switches off gets NaN
    (it spends nothing). `reference_bid` (per row) is what multipliers scale;
    default: the model's bid.
    """
    model_bid = plan["model_bid" if "model_bid" in plan else "bid"].to_numpy(dtype=np.float64)
    ref = model_bid if reference_bid is None else np.asarray(reference_bid, dtype=np.float64)
    hours = hour_of(plan["bucket_ts"].to_numpy(dtype=np.int64), tz_offset_s)
    keys = pd.MultiIndex.from_arrays([plan["campaign_id"].to_numpy(dtype=object),
                                      plan["audience_package"].to_numpy(dtype=object), hours])
    codes, uniques = pd.factorize(keys)
    fixed = np.full(len(uniques), np.nan)
    mult = np.full(len(uniques), np.nan)
    on = np.ones(len(uniques), dtype=bool)
    rule_ids = np.full(len(uniques), None, dtype=object)
    for u, (campaign_id, package, hour) in enumerate(uniques):
        rule = pool.bid_rule(campaign_id, package, int(hour))
        if rule is None:
            continue
        rule_ids[u] = rule.rule_id
        if rule.action is RuleAction.FIXED_BID:
            fixed[u] = rule.value
        else:
            mult[u] = rule.value
        on[u] = pool._best(RuleAction.AUDIENCE_OFF, campaign_id, package, int(hour)) is None
    pool_bid = np.where(np.isnan(fixed[codes]), mult[codes] * ref, fixed[codes])
    with np.errstate(divide="ignore", invalid="ignore"):
        roi = plan["pred_roi"].to_numpy(dtype=np.float64) * model_bid / pool_bid
    roi = np.where(on[codes] & (pool_bid > 0), roi, np.nan)
    return pd.DataFrame({"pool_bid": pool_bid, "pool_pred_roi": roi, "pool_rule_id": rule_ids[codes]},
                        index=plan.index)


def roi_comparison(conn: Connection, since_ts: int, until_ts: int) -> pd.DataFrame:
    """Predicted ROI of the model's plan and of the rule pool on the same slots, [since_ts, until_ts).

    One row per campaign plus an "ALL" row; both weighted by the model's budget
    share (its split of the spend) over slots where the pool has a score.
    Columns: campaign_id, model_pred_roi, pool_pred_roi, slots.
    """
    rows = conn.execute(text(
        "SELECT campaign_id, SUM(budget_share * pred_roi), SUM(budget_share * pool_pred_roi), "
        "SUM(budget_share), COUNT(*) FROM decisions WHERE bucket_ts >= :a AND bucket_ts < :b "
        "AND audience_on AND pool_pred_roi IS NOT NULL GROUP BY campaign_id ORDER BY campaign_id"),
        {"a": since_ts, "b": until_ts}).all()
    frame = pd.DataFrame(rows, columns=["campaign_id", "model_w", "pool_w", "w", "slots"])
    total = pd.DataFrame([{"campaign_id": "ALL", "model_w": frame["model_w"].sum(),
                           "pool_w": frame["pool_w"].sum(), "w": frame["w"].sum(),
                           "slots": frame["slots"].sum()}])
    frame = pd.concat([frame, total], ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = frame["w"].to_numpy(dtype=np.float64)
        frame["model_pred_roi"] = np.where(w > 0, frame["model_w"].to_numpy(dtype=np.float64) / w, np.nan)
        frame["pool_pred_roi"] = np.where(w > 0, frame["pool_w"].to_numpy(dtype=np.float64) / w, np.nan)
    return frame[["campaign_id", "model_pred_roi", "pool_pred_roi", "slots"]]
