"""A real store with everything the panel shows: for the panel's tests, benchmark and browser test.

Users (the demo roles, one password), campaigns, audience packages, a model row,
decisions with stored explanations, outcome increments, guard states, events and
trips, an approved override, alerts and a rule pool version. Written through
store.repo and plain inserts, so the panel reads what the real writers write.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert

from app.service import Control
from control.domain import AudiencePackage, BidFormula, Campaign, GuardMode, OverrideField, Role
from explain.store import record_bid_formula
from guards.machine import MachineState
from store import repo
from store import schema as s

PROMOTION_START = 1_786_982_400  # 2026-08-18 00:00 Asia/Shanghai
PASSWORD = "demo-pass-818"
USERS = (("operator", "运营 Olivia", Role.OPERATOR), ("operator2", "运营 Oscar", Role.OPERATOR),
         ("engineer", "算法 Ethan", Role.ENGINEER), ("manager", "主管 Mia", Role.MANAGER),
         ("manager2", "主管 Max", Role.MANAGER), ("admin", "管理员 Ada", Role.ADMIN))
PACKAGES = (("parenting", "育儿", "Parenting"), ("moving", "搬家", "Moving"), ("upgrade", "换新", "Upgrade"),
            ("gifting", "送礼", "Gifting"), ("health", "健康", "Health"), ("outdoor", "户外", "Outdoor"),
            ("beauty", "美妆", "Beauty"), ("stay_home", "宅家", "Stay-home"), ("pets", "宠物", "Pets"),
            ("high_value", "高价值", "High value"), ("mid_value", "中价值", "Mid value"),
            ("new_buyer", "新客", "New buyers"))
FEATURES = (("hour", "小时", "Hour"), ("promo_intensity", "大促强度", "Promotion intensity"),
            ("ctr_7d", "7日点击率", "CTR 7d"), ("cvr_7d", "7日转化率", "CVR 7d"),
            ("aov", "客单价", "Avg order value"), ("competitor_bid", "竞品出价", "Competitor bid"),
            ("stock_days", "库存天数", "Stock days"), ("audience_affinity", "人群亲和度", "Audience affinity"))
MODEL_VERSION = "demo-roi-v1"
BID_FORMULA = BidFormula(2.0, 0.2, 60.0)  # how the seeded bidder bids (recorded with each explanation)
RULE_POOL_TOML = """[[rules]]
rule_id = "base"
action = "multiplier"
value = 0.8
note = "80% of the reference bid"
"""


@dataclass(frozen=True)
class Seeded:
    campaigns: list[str]
    packages: list[str]
    first_bucket: int
    last_bucket: int
    bucket_s: int
    tripped: list[str]
    override_id: int
    alert_ids: list[int]


def seed_store(control: Control, *, n_campaigns: int = 12, n_packages: int = 12, n_buckets: int = 24,
               bucket_s: int = 300, start_ts: int = PROMOTION_START, explain_buckets: int | None = None,
               seed: int = 7) -> Seeded:
    """Fill an empty store; `explain_buckets`: store explanations for the newest N buckets (None: all)."""
    rng = np.random.default_rng(seed)
    engine: Engine = control.engine
    for username, display, role in USERS:
        control.add_user(None, username, display, role, PASSWORD)
    campaigns = [Campaign(f"c{i:04d}", f"商品{i:04d} Item {i}", ["美妆", "家电", "母婴", "食品"][i % 4],
                          daily_budget=float(20_000 + 500 * (i % 9)), budget_cap=float(60_000),
                          avg_order_value=float(80 + 20 * (i % 7)), gross_margin=0.3)
                 for i in range(1, n_campaigns + 1)]
    packages = [AudiencePackage(code, zh, en) for code, zh, en in PACKAGES[:n_packages]]
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, campaigns)
        repo.upsert_audience_packages(conn, packages)
        conn.execute(insert(s.models).values(
            model_version=MODEL_VERSION, path="models/demo-roi-v1", created_ts=start_ts - 86_400, active=True,
            meta={"version": MODEL_VERSION, "target": "value_per_click", "variant": "roi",
                  "features": [{"name": n, "display_zh": z, "display_en": e} for n, z, e in FEATURES],
                  "metrics": {"rmse": 0.41}, "training_window": [start_ts - 30 * 86_400, start_ts - 86_400]}))
        record_bid_formula(conn, MODEL_VERSION, BID_FORMULA, "manager", start_ts - 86_400)
    ids = [c.campaign_id for c in campaigns]
    codes = [p.code for p in packages]
    tripped = ids[:max(1, n_campaigns // 10)]
    explain_from = n_buckets - (n_buckets if explain_buckets is None else explain_buckets)
    for b in range(n_buckets):
        bucket = start_ts + b * bucket_s
        frame, batch = _bucket_decisions(rng, ids, codes, bucket, tripped if b >= n_buckets // 2 else [])
        repo.write_decisions(engine, frame, received_ts=bucket + 1,
                             explanation=batch if b >= explain_from else None)
        repo.write_outcomes(engine, _outcomes(rng, frame, bucket))
    last = start_ts + (n_buckets - 1) * bucket_s
    _seed_guards(engine, tripped, start_ts + (n_buckets // 2) * bucket_s, last)
    override = control.propose_override(
        control_user(control, "operator"), campaign_id=ids[-1], audience_package=None,
        field=OverrideField.BUDGET, value=float(campaigns[-1].daily_budget * 1.5),
        reason="seeded: raise budget for the evening peak", expires_ts=control.clock() + 6 * 3600)
    control.approve_override(control_user(control, "manager"), override.override_id, override.version,
                             "seeded approval")
    alert_ids = _seed_alerts(engine, tripped, last)
    with engine.begin() as conn:
        conn.execute(insert(s.rule_pool_versions).values(version=1, created_ts=start_ts - 3600,
                                                          created_by="manager", source=RULE_POOL_TOML,
                                                          status="active"))
    return Seeded(ids, codes, start_ts, last, bucket_s, tripped, override.override_id, alert_ids)


def control_user(control: Control, username: str):
    return next(u for u in control.users() if u.username == username)


def _bucket_decisions(rng: np.random.Generator, ids: list[str], codes: list[str], bucket: int,
                      tripped: list[str]) -> tuple[pd.DataFrame, repo.ExplanationBatch]:
    n = len(ids) * len(codes)
    campaign = np.repeat(ids, len(codes))
    package = np.tile(codes, len(ids))
    base = 4.4
    contributions = rng.normal(0.0, 0.35, (n, len(FEATURES)))
    bad = np.isin(campaign, tripped)
    contributions[bad, 5] -= 1.6  # the "818" incident: competitor bids drag predicted value down
    values = rng.normal(0.0, 1.0, (n, len(FEATURES)))
    pred_value = np.maximum(base + contributions.sum(axis=1), 0.05)
    contributions[:, 0] += pred_value - (base + contributions.sum(axis=1))  # keep base + sum exact
    pacing = rng.uniform(0.7, 1.0, n)
    model_bid = np.clip(pred_value / BID_FORMULA.target_roi * pacing, BID_FORMULA.min_bid, BID_FORMULA.max_bid)
    pred_roi = pred_value / np.maximum(model_bid, 1e-9) * rng.uniform(0.75, 0.95, n)
    pred_roi[bad] *= 0.7
    pool_bid = model_bid * 0.8
    frame = pd.DataFrame({
        "campaign_id": campaign, "audience_package": package, "bucket_ts": bucket,
        "model_version": MODEL_VERSION, "model_bid": model_bid,
        "bid": np.where(bad, pool_bid, model_bid), "budget_share": 1.0 / 288,
        "audience_on": pred_roi >= 1.2, "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": pred_value,
        "pred_roi": pred_roi, "pacing": pacing, "pool_bid": pool_bid, "pool_pred_roi": pred_roi / 0.8 * 0.9,
        "decided_by": np.where(bad, "rule_pool", "model"),
        "decided_reason": np.where(bad, "guard:tripped;rule:base", "model"),
    })
    batch = repo.ExplanationBatch(MODEL_VERSION, np.full(n, base), contributions.astype(np.float32),
                                  values.astype(np.float32), BID_FORMULA)
    return frame, batch


def _outcomes(rng: np.random.Generator, decisions: pd.DataFrame, bucket: int) -> pd.DataFrame:
    n = len(decisions)
    clicks = rng.poisson(20, n)
    spend = clicks * decisions["bid"].to_numpy() * 0.9
    gmv = spend * decisions["pred_roi"].to_numpy() * rng.uniform(0.8, 1.1, n)
    half = pd.DataFrame({"campaign_id": decisions["campaign_id"], "audience_package": decisions["audience_package"],
                         "bucket_ts": bucket, "known_ts": bucket + 60, "impressions": clicks * 40,
                         "clicks": clicks, "spend": spend, "orders": (gmv // 120).astype(int), "gmv": gmv * 0.6})
    late = half.assign(known_ts=bucket + 900, impressions=0, clicks=0, spend=0.0, orders=0, gmv=gmv * 0.4)
    return pd.concat([half, late], ignore_index=True)


def _seed_guards(engine: Engine, tripped: list[str], tripped_ts: int, now_ts: int) -> None:
    with engine.begin() as conn:
        for c in tripped:
            event_id = conn.execute(insert(s.guard_events).values(
                ts=tripped_ts, guard="roi", campaign_id=c, kind="trip",
                payload={"pred_roi": 1.6, "floor": 2.0, "reason": "predicted ROI below floor"})).inserted_primary_key[0]
            state = MachineState(mode=GuardMode.TRIPPED, since_ts=tripped_ts, cause="pred_roi", cooldown_s=900,
                                 trip_ts=(tripped_ts,), figures_at_trip=(("calibrated_pred_roi", 1.6), ("floor", 2.0),
                                                                         ("pred_roi", 1.6)))
            conn.execute(insert(s.guard_states).values(
                guard="roi", campaign_id=c, mode="tripped", event_id=event_id, version=1, updated_ts=tripped_ts,
                state=state.to_json()))
            conn.execute(insert(s.guard_trips).values(
                guard="roi", campaign_id=c, tripped_ts=tripped_ts, restored_ts=None, event_id=event_id,
                roi_before=1.7, roi_after=2.3, detection_delay_s=120, loss_avoided=125_000.0,
                details={"drivers": ["competitor_bid"]}))


def _seed_alerts(engine: Engine, tripped: list[str], now_ts: int) -> list[int]:
    """One guard_tripped alert per tripped campaign (delivered / pending) and an acknowledged dead one."""
    rows = [dict(event_key=f"ev-trip-{c}", dedupe_key=f"trip:{c}:{now_ts}", group_key=f"trip:{c}",
                 condition_key=f"roi:{c}", guard="roi", channel="wecom", severity="critical", kind="guard_tripped",
                 campaign_id=c, payload={"title": f"ROI guard tripped for {c}", "pred_roi": 1.6},
                 status="delivered" if i % 2 == 0 else "pending", attempts=1, next_attempt_ts=now_ts,
                 occurred_ts=now_ts - 600, created_ts=now_ts - 600,
                 delivered_ts=now_ts - 590 if i % 2 == 0 else None)
            for i, c in enumerate(tripped)]
    rows.append(dict(event_key="ev-stale", dedupe_key="stale:data", group_key="stale", condition_key="stale",
                     guard=None, channel="wecom", severity="warning", kind="data_stale", campaign_id=None,
                     payload={"title": "outcomes late"}, status="dead", attempts=8, next_attempt_ts=now_ts,
                     occurred_ts=now_ts - 7200, created_ts=now_ts - 7200, delivered_ts=None,
                     acked_ts=now_ts - 7200 + 900, acked_by="operator", last_error="errcode 93000"))
    with engine.begin() as conn:
        return [conn.execute(insert(s.alerts).values(**row)).inserted_primary_key[0] for row in rows]
