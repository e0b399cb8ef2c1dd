"""The biweekly algorithm-operations review (双周复盘): one period's figures, per promotion and campaign.

What the plan's phase 3 asks the two teams to look at together, read from the store:

- breakers: each guard's interceptions (its trips, from the ledger guard_trips), how
  many came back, were announced again (failed probations) or are still open, and the
  loss they avoided (closed trips; the ledger's estimate, its method named);
- overrides: proposed, approved, rejected, revoked and expired in the period (the audit
  trail's override.* entries), and each served override's effect against what the model
  would have served on the same slots: its stored shadow prediction (the decision row
  keeps the model's plan and pred_roi under every authority), calibrated by how far that
  model version's value predictions held over the period (GMV / the value it predicted
  for the clicks), at the spend the override had: profit effect = (served ROI - the
  model's calibrated ROI) x margin x spend;
- alerts: time to acknowledge and to resolve (median, p90) against the 30-minute target,
  per promotion and campaign (guards.alerts.metrics);
- models: the versions that served (slots, spend, ROI), their calibration, and the
  iteration cycle (days between versions' first decisions, against the plan's 14);
- authorities: realised ROI and profit of the slots each authority decided (the model
  against the manual rule pool, guards' own actions, overrides);
- the joint KPI: operations' profit (GMV x margin - spend) and the algorithm team's 30%
  share of it.

GMV counts every order of the period's clicks known by the time the review is made.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select, text

from control.clock import DAY_S, PROMOTION_TZ
from control.domain import InvalidValue
from guards.alerts import metrics
from guards.alerts.config import Promotion
from guards.alerts.outbox import current_config, list_alerts
from guards.handlers import LOSS_METHODS
from store import repo
from store import schema as s

ALGORITHM_SHARE = 0.30          # the algorithm team answers for 30% of operations' profit
ITERATION_TARGET_DAYS = 14      # the model iteration cycle the plan aims at (from 30 days)
OUTSIDE = ""                    # the promotion of a time no configured promotion covers
OVERRIDE_EVENTS = ("propose", "approve", "reject", "revoke", "expire")


@dataclass(frozen=True)
class Period:
    date_from: str      # YYYY-MM-DD, China time, inclusive
    date_to: str        # inclusive
    start_ts: int
    end_ts: int         # exclusive: the end of date_to


def period(date_from: str, date_to: str) -> Period:
    """The days [date_from, date_to] in China time; InvalidValue naming the field for a bad or reversed date."""
    days = {}
    for name, value in (("from", date_from), ("to", date_to)):
        try:
            days[name] = dt.date.fromisoformat(str(value))
        except ValueError:
            raise InvalidValue(name, value, "must be a date YYYY-MM-DD") from None
    if days["to"] < days["from"]:
        raise InvalidValue("to", date_to, f"must not be before from ({date_from})")
    start = int(dt.datetime.combine(days["from"], dt.time(), PROMOTION_TZ).timestamp())
    end = int(dt.datetime.combine(days["to"], dt.time(), PROMOTION_TZ).timestamp()) + DAY_S
    return Period(days["from"].isoformat(), days["to"].isoformat(), start, end)


def promotion_of(ts: np.ndarray, promotions: Sequence[Promotion]) -> np.ndarray:
    """Each time's promotion name (the first configured one that covers it), else OUTSIDE."""
    out = np.full(len(ts), OUTSIDE, dtype=object)
    for p in reversed(promotions):
        out[(ts >= p.start_ts) & (ts < p.end_ts)] = p.name
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(float(a) / float(b), 4) if b > 0 else None


def _money(x: float) -> float:
    return round(float(x), 2)


# --- the slots' money, by authority, model version and override --------------------------------

def _traffic(conn: Connection, p: Period, promotions: Sequence[Promotion]) -> pd.DataFrame:
    """Outcomes of the period's buckets with the decision that served them, summed per campaign, hour,
    authority, model version and (for overrides) the reason naming them."""
    rows = conn.execute(text(
        "SELECT o.campaign_id, o.bucket_ts / 3600 AS hour, COALESCE(d.decided_by, 'unknown'), "
        "COALESCE(d.model_version, ''), "
        "CASE WHEN d.decided_by = 'override' THEN d.decided_reason ELSE '' END, "
        "SUM(o.spend), SUM(o.gmv), SUM(o.clicks * COALESCE(d.pred_value, 0)), "
        "SUM(o.spend * COALESCE(d.pred_roi, 0)), SUM(o.orders) "
        "FROM outcomes o LEFT JOIN decisions d ON d.campaign_id = o.campaign_id "
        "AND d.bucket_ts = o.bucket_ts AND d.audience_package = o.audience_package "
        "WHERE o.bucket_ts >= :a AND o.bucket_ts < :b "
        "GROUP BY o.campaign_id, o.bucket_ts / 3600, d.decided_by, d.model_version, "
        "CASE WHEN d.decided_by = 'override' THEN d.decided_reason ELSE '' END"),
        {"a": p.start_ts, "b": p.end_ts}).all()
    frame = pd.DataFrame(rows, columns=["campaign_id", "hour", "decided_by", "model_version", "reason", "spend",
                                        "gmv", "pred_gmv", "pred_roi_spend", "orders"])
    for c in ("spend", "gmv", "pred_gmv", "pred_roi_spend", "orders"):
        frame[c] = pd.to_numeric(frame[c]).astype(float)
    margins = {c.campaign_id: c.gross_margin for c in repo.load_campaigns(conn).values()}
    frame["margin"] = frame["campaign_id"].map(margins).fillna(0.0)
    frame["profit"] = frame["gmv"] * frame["margin"] - frame["spend"]
    frame["promotion"] = promotion_of(frame["hour"].to_numpy(dtype=np.int64) * 3600, promotions)
    return frame


def _money_rows(frame: pd.DataFrame, by: list[str]) -> list[dict]:
    g = frame.groupby(by, sort=True)[["spend", "gmv", "profit", "orders"]].sum().reset_index()
    return [{**{k: r[k] for k in by}, "spend": _money(r.spend), "gmv": _money(r.gmv), "roi": _ratio(r.gmv, r.spend),
             "profit": _money(r.profit), "orders": int(r.orders)} for _, r in g.iterrows()]


def _kpi(traffic: pd.DataFrame) -> dict:
    total = traffic[["spend", "gmv", "profit"]].sum()
    return {"spend": _money(total.spend), "gmv": _money(total.gmv), "roi": _ratio(total.gmv, total.spend),
            "operations_profit": _money(total.profit), "algorithm_share": ALGORITHM_SHARE,
            "algorithm_profit": _money(total.profit * ALGORITHM_SHARE),
            "by_promotion": _money_rows(traffic, ["promotion"]), "by_campaign": _money_rows(traffic, ["campaign_id"])}


def _calibration(traffic: pd.DataFrame) -> dict[str, float]:
    """Per model version, GMV / the value it predicted for the clicks, over every slot carrying its prediction."""
    g = traffic[traffic["model_version"] != ""].groupby("model_version")[["gmv", "pred_gmv"]].sum()
    return {v: r.gmv / r.pred_gmv for v, r in g.iterrows() if r.pred_gmv > 0}


def _models(conn: Connection, traffic: pd.DataFrame, p: Period, calibration: dict[str, float]) -> dict:
    seen = conn.execute(text(
        "SELECT model_version, MIN(bucket_ts), MAX(bucket_ts), COUNT(*), "
        "SUM(CASE WHEN decided_by = 'model' THEN 1 ELSE 0 END) FROM decisions "
        "WHERE bucket_ts >= :a AND bucket_ts < :b GROUP BY model_version ORDER BY MIN(bucket_ts)"),
        {"a": p.start_ts, "b": p.end_ts}).all()
    served = traffic[traffic["decided_by"] == "model"].groupby("model_version")[["spend", "gmv", "profit"]].sum()
    versions = []
    for version, first, last, slots, by_model in seen:
        money = served.loc[version] if version in served.index else pd.Series({"spend": 0.0, "gmv": 0.0,
                                                                                  "profit": 0.0})
        k = calibration.get(version)
        versions.append({"model_version": version, "first_ts": int(first), "last_ts": int(last), "slots": int(slots),
                         "slots_decided": int(by_model), "spend": _money(money.spend), "gmv": _money(money.gmv),
                         "roi": _ratio(money.gmv, money.spend), "profit": _money(money.profit),
                         "calibration": None if k is None else round(k, 4)})
    firsts = [v["first_ts"] for v in versions]
    gaps = [(b - a) / DAY_S for a, b in zip(firsts, firsts[1:], strict=False)]
    return {"versions": versions, "iteration_days": [round(g, 2) for g in gaps],
            "iteration_target_days": ITERATION_TARGET_DAYS}


# --- breakers ------------------------------------------------------------------------------------

def breakers(conn: Connection, start_ts: int, end_ts: int, promotions: Sequence[Promotion] = ()) -> dict:
    """Each breaker's interceptions (ledger trips begun in [start_ts, end_ts)), restores, announcements again
    and loss avoided, by guard, by guard and promotion, by guard and campaign; and the trips themselves."""
    t = s.guard_trips.c
    trips = pd.DataFrame([r._mapping for r in conn.execute(
        select(s.guard_trips).where(t.tripped_ts >= start_ts, t.tripped_ts < end_ts))],
        columns=[c.name for c in s.guard_trips.columns])
    again = pd.DataFrame(conn.execute(text(
        "SELECT guard, campaign_id, ts FROM guard_events WHERE kind = 'probation_failed' AND ts >= :a AND ts < :b"),
        {"a": start_ts, "b": end_ts}).all(), columns=["guard", "campaign_id", "ts"])
    trips["promotion"] = promotion_of(trips["tripped_ts"].to_numpy(dtype=np.int64), promotions)
    again["promotion"] = promotion_of(again["ts"].to_numpy(dtype=np.int64), promotions)
    trips["method"] = [d.get("loss_method", "") if r is not None else "" for d, r in
                       zip(trips["details"], trips["restored_ts"], strict=True)]
    trips["action"] = [d.get("action", "") for d in trips["details"]]

    def rows(by: list[str]) -> list[dict]:
        trip_keys = pd.Series(list(zip(*(trips[c] for c in by), strict=True)), index=trips.index, dtype=object)
        again_keys = pd.Series(list(zip(*(again[c] for c in by), strict=True)), index=again.index, dtype=object)
        out = []
        for key in sorted(set(trip_keys) | set(again_keys)):
            mine = trips[trip_keys.map(key.__eq__).astype(bool)]
            theirs = again[again_keys.map(key.__eq__).astype(bool)]
            closed = mine[mine["restored_ts"].notna()]
            losses = pd.to_numeric(closed["loss_avoided"], errors="coerce")
            out.append({**dict(zip(by, key, strict=True)), "interceptions": len(mine),
                        "restored": len(closed), "open": len(mine) - len(closed), "announced_again": len(theirs),
                        "loss_avoided": _money(losses.fillna(0).sum()), "loss_estimated": int(losses.notna().sum()),
                        "methods": sorted({m for m in closed["method"] if m}),
                        "actions": sorted({a for a in mine["action"] if a})})
        return out

    return {"by_guard": rows(["guard"]), "by_promotion": rows(["guard", "promotion"]),
            "by_campaign": rows(["guard", "campaign_id"]), "methods": LOSS_METHODS,
            "trips": [{"trip_id": int(r.trip_id), "guard": r.guard, "campaign_id": r.campaign_id,
                       "tripped_ts": int(r.tripped_ts),
                       "restored_ts": None if pd.isna(r.restored_ts) else int(r.restored_ts),
                       "loss_avoided": None if pd.isna(r.loss_avoided) else _money(r.loss_avoided),
                       "method": r.method or None, "action": r.action or None, "promotion": r.promotion}
                      for r in trips.sort_values("tripped_ts").itertuples()]}


# --- overrides -----------------------------------------------------------------------------------

_IDS = re.compile(r"\d+")


def _overrides(conn: Connection, p: Period, traffic: pd.DataFrame, calibration: dict[str, float],
               promotions: Sequence[Promotion]) -> dict:
    entries = repo.load_audit(conn, since_ts=p.start_ts, entity="override")
    counts = {e: 0 for e in OVERRIDE_EVENTS}
    lifecycle: dict[int, dict] = {}
    for entry in entries:
        if entry.ts >= p.end_ts:
            continue
        event = entry.action.removeprefix("override.")
        if event in counts:
            counts[event] += 1
            lifecycle.setdefault(int(entry.entity_id), {})[event] = entry.ts
    served = traffic[traffic["decided_by"] == "override"]
    rows = []
    known = {o.override_id: o for o in repo.list_overrides(conn)}
    for oid in sorted(set(lifecycle) | {int(i) for r in served["reason"] for i in _IDS.findall(r)}):
        o = known.get(oid)
        # The slots its reason names (a slot two overrides decided together counts for each of them).
        mine = served[np.array([str(oid) in _IDS.findall(r) for r in served["reason"]], dtype=bool)]
        spend, gmv = float(mine["spend"].sum()), float(mine["gmv"].sum())
        # A version without evidence is taken at its word (1.0).
        k = np.array([calibration.get(v, 1.0) for v in mine["model_version"]], dtype=np.float64)
        model_pred = _ratio(mine["pred_roi_spend"].sum(), spend)
        model_est = _ratio((mine["pred_roi_spend"] * k).sum(), spend)
        margin = float((mine["margin"] * mine["spend"]).sum()) / spend if spend > 0 else 0.0
        served_roi = _ratio(gmv, spend)
        effect = None if model_est is None else round(served_roi - model_est, 4)
        rows.append({"override_id": oid, "campaign_id": o.scope.campaign_id if o else None,
                     "audience_package": o.scope.audience_package if o else None,
                     "field": o.field.value if o else None, "value": o.value if o else None,
                     "status": o.status.value if o else None, "proposed_by": o.proposed_by if o else None,
                     "reviewed_by": o.reviewed_by if o else None,
                     "promotion": str(promotion_of(np.array([o.proposed_ts]), promotions)[0]) if o else OUTSIDE,
                     **{f"{e}_ts": lifecycle.get(oid, {}).get(e) for e in OVERRIDE_EVENTS},
                     "served_spend": _money(spend), "served_gmv": _money(gmv), "served_roi": served_roi,
                     "model_pred_roi": model_pred, "model_calibration": _ratio((k * mine["spend"]).sum(), spend),
                     "model_roi_est": model_est, "roi_effect": effect,
                     "profit_effect": None if effect is None else _money(effect * margin * spend)})
    effects = [r["profit_effect"] for r in rows if r["profit_effect"] is not None]
    return {"counts": counts, "rows": rows, "profit_effect": _money(sum(effects)),
            "method": "served ROI against the model's stored prediction on the same slots, calibrated by the "
                      "model version's value calibration over the period, at the override's spend"}


# --- alerts --------------------------------------------------------------------------------------

def _alerts(conn: Connection, p: Period, promotions: Sequence[Promotion]) -> dict:
    records = [r for r in list_alerts(conn, since_ts=p.start_ts, limit=None) if r.occurred_ts < p.end_ts]

    def stats(key) -> list[dict]:
        return [x.as_json() for x in metrics.response_times_by(records, key)]

    def promotion(r) -> str:
        return str(promotion_of(np.array([r.occurred_ts]), promotions)[0])

    overall = stats(lambda r: "all")
    return {"target_s": metrics.ACK_TARGET_S, "overall": overall[0] if overall else None,
            "by_promotion": stats(promotion), "by_campaign": stats(lambda r: r.campaign_id),
            "by_guard": stats(lambda r: r.guard)}


# --- the whole review ------------------------------------------------------------------------------

def build_review(conn: Connection, p: Period, promotions: Sequence[Promotion]) -> dict:
    """The review of period `p` as a JSON document (the figures the CLI prints and the report draws)."""
    traffic = _traffic(conn, p, promotions)
    calibration = _calibration(traffic)
    return {
        "period": {"from": p.date_from, "to": p.date_to, "start_ts": p.start_ts, "end_ts": p.end_ts},
        "promotions": [{"name": x.name, "start_ts": x.start_ts, "end_ts": x.end_ts} for x in promotions
                       if x.start_ts < p.end_ts and x.end_ts > p.start_ts],
        "kpi": _kpi(traffic),
        "breakers": breakers(conn, p.start_ts, p.end_ts, promotions),
        "overrides": _overrides(conn, p, traffic, calibration, promotions),
        "alerts": _alerts(conn, p, promotions),
        "models": _models(conn, traffic, p, calibration),
        "authorities": _money_rows(traffic, ["decided_by"]),
    }


def load_review(engine: Engine, date_from: str, date_to: str) -> dict:
    """The review of the days [date_from, date_to] (China time) with the configured promotions."""
    window = period(date_from, date_to)
    with engine.connect() as conn:
        return build_review(conn, window, current_config().promotions)
