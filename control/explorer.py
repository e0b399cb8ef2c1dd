"""Read model for the decision explorer: one decision, its stored explanation, in bid units.

The stored explanation (table `explanations`) is what the model saw when it
decided, under that model version: base value and per-feature SHAP values in
the model's output unit (yuan of GMV per click). The bid formula is
bid = clip(pred_value / target_roi x pacing, min, max), so each contribution
maps to bid units linearly (/ target_roi x pacing); the clip is its own step,
and so is an override or a rule-pool replacement. The steps add up exactly to
the bid that was served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, select

from store import schema as s


@dataclass(frozen=True)
class StoredDecision:
    decision: dict            # the decisions row
    features: list[str]       # model feature names, in the explanation's order
    labels_zh: list[str]
    labels_en: list[str]
    base_value: float | None  # None: no stored explanation
    contributions: np.ndarray  # (features,) yuan per click
    feature_values: np.ndarray


def model_meta(conn: Connection, model_version: str) -> dict | None:
    row = conn.execute(select(s.models).where(s.models.c.model_version == model_version)).first()
    return None if row is None else dict(row._mapping)


def _feature_names(meta: dict | None, n: int) -> tuple[list[str], list[str], list[str]]:
    specs = (meta or {}).get("meta", {}).get("features") or []
    if len(specs) != n:
        names = [f"f{i}" for i in range(n)]
        return names, names, names
    return ([f["name"] for f in specs], [f.get("display_zh") or f["name"] for f in specs],
            [f.get("display_en") or f["name"] for f in specs])


def find_decision_id(conn: Connection, campaign_id: str, audience_package: str, bucket_ts: int) -> int | None:
    """The newest decision for the slot at or before `bucket_ts`."""
    d = s.decisions.c
    return conn.execute(select(d.decision_id).where(d.campaign_id == campaign_id,
                                                    d.audience_package == audience_package,
                                                    d.bucket_ts <= bucket_ts)
                        .order_by(d.bucket_ts.desc(), d.decision_id.desc()).limit(1)).scalar()


def slot_buckets(conn: Connection, campaign_id: str, audience_package: str, limit: int = 500) -> list[int]:
    d = s.decisions.c
    q = (select(d.bucket_ts).where(d.campaign_id == campaign_id, d.audience_package == audience_package)
         .order_by(d.bucket_ts.desc()).limit(limit))
    return [r[0] for r in conn.execute(q)]


def load_decision(conn: Connection, decision_id: int) -> StoredDecision | None:
    row = conn.execute(select(s.decisions).where(s.decisions.c.decision_id == decision_id)).first()
    if row is None:
        return None
    ex = conn.execute(select(s.explanations).where(s.explanations.c.decision_id == decision_id)).first()
    meta = model_meta(conn, row.model_version)
    if ex is None:
        return StoredDecision(dict(row._mapping), [], [], [], None, np.zeros(0), np.zeros(0))
    contributions = np.frombuffer(ex.contributions, dtype=np.float32).astype(np.float64)
    values = np.frombuffer(ex.feature_values, dtype=np.float32).astype(np.float64)
    names, zh, en = _feature_names(meta, len(contributions))
    return StoredDecision(dict(row._mapping), names, zh, en, float(ex.base_value), contributions, values)


def bid_waterfall(d: StoredDecision, target_roi: float) -> pd.DataFrame:
    """Steps base → features (largest first) → clip → served authority, in yuan per click.

    Columns: step (kind: base | feature | clip | override | rule_pool | bid), name,
    value (feature value, if any), delta, start, end. Sum of deltas = served bid.
    """
    row = d.decision
    scale = float(row["pacing"]) / target_roi
    steps = [("base", "base", np.nan, d.base_value * scale)]
    order = np.argsort(-np.abs(d.contributions))
    steps += [("feature", d.features[i], float(d.feature_values[i]), float(d.contributions[i]) * scale)
              for i in order]
    raw = sum(x[3] for x in steps)
    steps.append(("clip", "clip", np.nan, float(row["model_bid"]) - raw))
    served = float(row["bid"]) - float(row["model_bid"])
    if row["decided_by"] != "model" or served != 0.0:
        steps.append((row["decided_by"], row["decided_reason"] or row["decided_by"], np.nan, served))
    frame = pd.DataFrame(steps, columns=["step", "name", "value", "delta"])
    frame["end"] = frame["delta"].cumsum()
    frame["start"] = frame["end"] - frame["delta"]
    total = pd.DataFrame([{"step": "bid", "name": "bid", "value": np.nan, "delta": float(row["bid"]),
                           "start": 0.0, "end": float(row["bid"])}])
    return pd.concat([frame, total], ignore_index=True)


def compare_decisions(a: StoredDecision, b: StoredDecision, target_roi: float, top: int = 10) -> pd.DataFrame:
    """Why the bid changed from a to b: per-feature change of contribution in bid units, largest first."""
    wa = bid_waterfall(a, target_roi).set_index("name")["delta"]
    wb = bid_waterfall(b, target_roi).set_index("name")["delta"]
    joined = pd.DataFrame({"a": wa, "b": wb}).fillna(0.0).drop(index="bid", errors="ignore")
    joined["change"] = joined["b"] - joined["a"]
    joined = joined.reindex(joined["change"].abs().sort_values(ascending=False).index)
    return joined.head(top).reset_index(names="name")


def window_explanations(conn: Connection, since_ts: int, until_ts: int, campaign_id: str | None = None,
                        sample: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A sample of stored explanations in a window: long frame (decision_id, feature, value, contribution).

    Sampled by decision id so a large window stays fast; the same seed gives the same sample.
    """
    d, e = s.decisions.c, s.explanations.c
    q = (select(e.decision_id, e.model_version, e.contributions, e.feature_values)
         .join(s.decisions, s.decisions.c.decision_id == e.decision_id)
         .where(d.bucket_ts >= since_ts, d.bucket_ts <= until_ts))
    if campaign_id:
        q = q.where(d.campaign_id == campaign_id)
    rows = conn.execute(q).all()
    if not rows:
        return pd.DataFrame(columns=["decision_id", "feature", "value", "contribution"]), []
    if len(rows) > sample:
        pick = np.random.default_rng(seed).choice(len(rows), sample, replace=False)
        rows = [rows[i] for i in np.sort(pick)]
    contributions = np.stack([np.frombuffer(r.contributions, dtype=np.float32) for r in rows])
    values = np.stack([np.frombuffer(r.feature_values, dtype=np.float32) for r in rows])
    names, _, _ = _feature_names(model_meta(conn, rows[0].model_version), contributions.shape[1])
    ids = np.repeat([r.decision_id for r in rows], contributions.shape[1])
    return pd.DataFrame({"decision_id": ids, "feature": np.tile(names, len(rows)),
                         "value": values.ravel().astype(np.float64),
                         "contribution": contributions.ravel().astype(np.float64)}), names


def global_drivers(explanations: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per feature (yuan per click), largest first."""
    if explanations.empty:
        return pd.DataFrame(columns=["feature", "mean_abs", "mean"])
    g = explanations.groupby("feature")["contribution"]
    out = pd.DataFrame({"mean_abs": g.apply(lambda c: float(np.abs(c).mean())), "mean": g.mean()})
    return out.sort_values("mean_abs", ascending=False).reset_index()
