"""Explanations in the store: compact float32, keyed by decision id and model version.

The `explanations` table (store/schema.py) keeps what the model saw (feature
values) and its contributions under the model version that decided. A stored
explanation is never overwritten: `save_explanations` skips decision ids that
already have one, so an explanation always shows what that model version saw
then, whatever model is active now. Decisions written with
`store.repo.write_decisions(..., explanation=explanation_batch(...))` store
theirs in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update

from control.domain import DEFAULT_ROI_FLOOR, BidFormula, InvalidValue
from explain.artifacts import FeatureSpec, ModelArtifact, ModelMismatch, load_artifact
from explain.bid_units import Step, context_from_decision, decompose_bid, decompose_roi_decision, to_bid_units
from explain.explainer import Explainer
from store import repo
from store import schema as s
from store.repo import ExplanationBatch

_CHUNK = 500  # ids per IN (...) query
log = logging.getLogger("explain")


@dataclass(frozen=True)
class StoredExplanation:
    decision_id: int
    model_version: str
    base_value: float
    contributions: np.ndarray   # float32 [features], model output units
    feature_values: np.ndarray  # float32 [features]
    formula: BidFormula | None = None  # the bid formula it was served with (None: explained before 0006)

    @property
    def model_output(self) -> float:
        """base + contributions: the model's output for the decision, to float32 rounding."""
        return self.base_value + float(np.sum(self.contributions, dtype=np.float64))


def explanation_batch(explainer: Explainer, X: np.ndarray, formula: BidFormula | None = None) -> ExplanationBatch:
    """Explain decision rows X for `store.repo.write_decisions(..., explanation=...)`; `formula`: the bid
    formula the rows were served with, recorded with them."""
    base, contributions = explainer.explain(X)
    return ExplanationBatch(model_version=explainer.model_version,
                            base_value=np.full(len(contributions), base),
                            contributions=contributions.astype(np.float32),
                            feature_values=np.asarray(X, dtype=np.float32), formula=formula)


def explain_hook(artifacts: Iterable[ModelArtifact],
                 formulas: Mapping[str, BidFormula]) -> Callable[[object], ExplanationBatch]:
    """The live simulator's `explain` hook (sim.live.run_live): explains each bucket's feature
    matrix with the Explainer of the model version that served it, and records the bid formula the
    version bids with (`formulas`, by version). The Explainers are built here, before the day starts:
    built at the first bucket they would hold it back for seconds on a clock that does not wait."""
    explainers = {a.version: Explainer(a) for a in artifacts}
    missing = sorted(set(explainers) - set(formulas))
    if missing:
        raise InvalidValue("formulas", missing, "every model version needs the bid formula it bids with")

    def hook(result) -> ExplanationBatch:
        version = result.model_version
        return explanation_batch(explainers[version], result.features, formulas[version])

    return hook


# --- the bid formula each model version is served with -------------------------------------------
# Kept as a small document per version (control_flags), apart from the `models` row: re-registering a
# model's artefact must not forget how its bidder bids.

def _formula_key(model_version: str) -> str:
    return f"bid_formula:{model_version}"


def record_bid_formula(conn: Connection, model_version: str, formula: BidFormula, actor: str, now_ts: int) -> None:
    """Record how the bidder serving `model_version` bids; decisions explained from now on carry it."""
    repo.set_flag(conn, _formula_key(model_version), formula.to_json(), actor, now_ts)


def bid_formula(conn: Connection, model_version: str) -> BidFormula | None:
    doc, _ = repo.get_flag(conn, _formula_key(model_version))
    return None if doc is None else BidFormula.from_json(doc)


def explain_registered(engine: Engine) -> Callable[[pd.DataFrame], ExplanationBatch | None]:
    """Explain decisions that arrive from outside (the bidder API, `bidlens ingest`) at ingest.

    The hook gets rows of ONE model version (app.ingest groups them) and explains
    them with that version's registered artefact (the `models` table's path), built
    once per version; an unregistered version is looked up again with each batch, so
    registering it later needs no restart. Rows are left unexplained (None) when the version is not
    registered, its artefact is not on disk, or a row lacks one of its features:
    the decisions are stored either way, and the explorer says it has no explanation.
    """
    explainers: dict[str, Explainer] = {}
    unregistered: set[str] = set()  # warned about once; looked up again, as it may be registered later
    no_formula: set[str] = set()

    def hook(rows: pd.DataFrame) -> ExplanationBatch | None:
        version = str(rows["model_version"].iloc[0])
        if version not in explainers:
            explainer = _registered_explainer(engine, version, warn=version not in unregistered)
            if explainer is None:
                unregistered.add(version)
                return None
            explainers[version] = explainer
        explainer = explainers[version]
        if "features" not in rows:
            return None
        X = _feature_matrix(rows["features"], explainer.artifact.feature_names)
        if X is None:
            first = rows["features"].iloc[0]
            try:
                explainer.artifact.check_features(list(first) if isinstance(first, dict) else [])
            except ModelMismatch as exc:  # names the missing and extra features
                log.warning("decisions stored unexplained: %s", exc)
            return None
        with engine.connect() as conn:  # read each batch: a formula recorded later applies at once
            formula = bid_formula(conn, version)
        if formula is None and version not in no_formula:
            no_formula.add(version)
            log.warning("model %s has no recorded bid formula: its explanations cannot be shown in bid units "
                        "until one is (`bidlens explain model register ... --target-roi`)", version)
        return explanation_batch(explainer, X, formula)

    return hook


def _registered_explainer(engine: Engine, version: str, *, warn: bool) -> Explainer | None:
    with engine.connect() as conn:
        path = conn.execute(select(s.models.c.path).where(s.models.c.model_version == version)).scalar()
    if not path or not Path(path).is_dir():
        if warn:
            log.warning("model %s is not registered with an artefact on disk: its decisions are stored "
                        "unexplained (`bidlens explain model register`)", version)
        return None
    return Explainer(load_artifact(path))


def _feature_matrix(documents: pd.Series, names: list[str]) -> np.ndarray | None:
    """Rows' {feature: value} documents as a matrix in the model's feature order (None if any lacks one)."""
    try:
        return np.array([[doc[name] for name in names] for doc in documents], dtype=np.float64)
    except (KeyError, TypeError):
        return None


def _existing(conn: Connection, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = list(ids[i:i + _CHUNK])
        found.update(conn.execute(select(s.explanations.c.decision_id)
                                  .where(s.explanations.c.decision_id.in_(chunk))).scalars())
    return found


def save_explanations(conn: Connection, decision_ids: Sequence[int], model_version: str,
                      base: float | np.ndarray, contribs: np.ndarray, X: np.ndarray,
                      formula: BidFormula | None = None) -> int:
    """Store explanations for decisions that have none yet; returns how many were stored.

    Existing explanations are kept unchanged (never recomputed against a newer model).
    """
    ids = [int(i) for i in decision_ids]
    contribs = np.ascontiguousarray(contribs, dtype=np.float32)
    values = np.ascontiguousarray(X, dtype=np.float32)
    if contribs.shape != values.shape or len(ids) != len(contribs):
        raise ValueError(f"decision_ids ({len(ids)}), contribs {contribs.shape} and X {values.shape} "
                         "must be row-aligned")
    bases = np.broadcast_to(np.asarray(base, dtype=np.float64), (len(ids),))
    skip = _existing(conn, ids)
    recorded = {"target_roi": None, "min_bid": None, "max_bid": None} if formula is None else formula.to_json()
    rows = [{"decision_id": i, "model_version": model_version, "base_value": float(b),
             "contributions": c.tobytes(), "feature_values": v.tobytes(), **recorded}
            for i, b, c, v in zip(ids, bases.tolist(), contribs, values) if i not in skip]
    if rows:
        conn.execute(insert(s.explanations), rows)
    return len(rows)


def _from_row(row) -> StoredExplanation:
    formula = None if row.target_roi is None else BidFormula(row.target_roi, row.min_bid, row.max_bid)
    return StoredExplanation(decision_id=row.decision_id, model_version=row.model_version,
                             base_value=row.base_value,
                             contributions=np.frombuffer(row.contributions, dtype=np.float32),
                             feature_values=np.frombuffer(row.feature_values, dtype=np.float32),
                             formula=formula)


def load_explanation(conn: Connection, decision_id: int) -> StoredExplanation | None:
    row = conn.execute(select(s.explanations).where(s.explanations.c.decision_id == int(decision_id))).first()
    return None if row is None else _from_row(row)


def load_explanations(conn: Connection, decision_ids: Iterable[int]) -> dict[int, StoredExplanation]:
    """Stored explanations by decision id (ids without one are absent)."""
    ids = [int(i) for i in decision_ids]
    out: dict[int, StoredExplanation] = {}
    for i in range(0, len(ids), _CHUNK):
        for row in conn.execute(select(s.explanations)
                                .where(s.explanations.c.decision_id.in_(ids[i:i + _CHUNK]))):
            out[row.decision_id] = _from_row(row)
    return out


def stack(explanations: Sequence[StoredExplanation]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base [n], contributions [n, f], feature values [n, f]) as float64 arrays for window views."""
    if not explanations:
        return np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))
    return (np.array([e.base_value for e in explanations]),
            np.vstack([e.contributions for e in explanations]).astype(np.float64),
            np.vstack([e.feature_values for e in explanations]).astype(np.float64))


# --- models: the feature dictionary of every version that decided ------------------------------

def register_model(conn: Connection, artifact: ModelArtifact, path: str, now_ts: int, *,
                   active: bool = True) -> None:
    """Record a model version (its meta, with the feature dictionary); `active` makes it the only active one.

    Registering a version again keeps its launch-gate lifecycle (status, gate report) and the meta
    entries the gate added (the guard's calibration_prior)."""
    if active:
        conn.execute(update(s.models).values(active=False))
    before = conn.execute(select(s.models.c.meta).where(s.models.c.model_version == artifact.version)).scalar()
    values = {"path": str(path), "created_ts": int(now_ts), "active": active,
              "meta": {**(before or {}), **artifact.meta()}}
    if before is not None:
        conn.execute(update(s.models).where(s.models.c.model_version == artifact.version).values(values))
    else:
        conn.execute(insert(s.models).values(model_version=artifact.version, **values))


def model_features(conn: Connection, model_version: str) -> tuple[FeatureSpec, ...] | None:
    meta = conn.execute(select(s.models.c.meta).where(s.models.c.model_version == model_version)).scalar()
    return None if meta is None else tuple(FeatureSpec.from_dict(f) for f in meta["features"])


def _features_or_generic(conn: Connection, model_version: str, n: int) -> tuple[FeatureSpec, ...]:
    """The registered dictionary, or plain names when the version was never registered."""
    return model_features(conn, model_version) or tuple(
        FeatureSpec(f"f{i}", f"特征 {i}", f"feature {i}") for i in range(n))


# --- one decision, and a window of decisions, in bid units -----------------------------------------

@dataclass(frozen=True)
class DecisionBreakdown:
    decision: dict                       # the decisions row
    explanation: StoredExplanation
    features: tuple[FeatureSpec, ...]
    formula: BidFormula                  # the bid formula it was served with
    steps: list[Step]                    # sum to the served bid (explain.bid_units.decompose_bid)
    roi_steps: list[Step]                # predicted ROI, then minus the floor (audience / budget decisions)


def served_formula(conn: Connection, explanation: StoredExplanation) -> BidFormula:
    """The bid formula an explained decision was served with: recorded with it, or (explained before it
    was recorded) its model version's; InvalidValue naming the version when neither is known."""
    formula = explanation.formula or bid_formula(conn, explanation.model_version)
    if formula is None:
        raise InvalidValue("bid_formula", explanation.model_version,
                           "no bid formula recorded for this model version: its bids cannot be explained "
                           "(`bidlens explain model register ... --target-roi`)")
    return formula


def decision_breakdown(conn: Connection, decision_id: int, *,
                       roi_floor: float = DEFAULT_ROI_FLOOR) -> DecisionBreakdown | None:
    """A served bid as steps that add up to it, from the stored explanation; None without one.

    The bid formula (target ROI, caps) is the one the decision was served with (`served_formula`),
    the pacing the decision's own. `roi_steps` splits the decision's predicted ROI the same way and
    ends at its margin over `roi_floor`, what audience on/off and budget decisions compare with.
    """
    row = conn.execute(select(s.decisions).where(s.decisions.c.decision_id == int(decision_id))).mappings().first()
    explanation = load_explanation(conn, decision_id)
    if row is None or explanation is None:
        return None
    decision = dict(row)
    formula = served_formula(conn, explanation)
    features = _features_or_generic(conn, explanation.model_version, len(explanation.contributions))
    steps = decompose_bid(explanation.base_value, explanation.contributions, features,
                          explanation.feature_values, context_from_decision(decision, formula),
                          pred_value=decision["pred_value"])
    roi_steps = [] if decision["pred_value"] <= 0 else decompose_roi_decision(  # no value: no ROI to split
        explanation.base_value, explanation.contributions, features, explanation.feature_values,
        pred_value=decision["pred_value"], pred_roi=decision["pred_roi"], reference=roi_floor,
        reference_zh=f"ROI 底线 {roi_floor:g}", reference_en=f"ROI floor {roi_floor:g}")
    return DecisionBreakdown(decision, explanation, features, formula, steps, roi_steps)


@dataclass(frozen=True)
class WindowExplanations:
    """Explained decisions of a time window, row-aligned; contributions in yuan per click of bid."""

    decisions: pd.DataFrame   # decision_id, campaign_id, audience_package, bucket_ts, model_version, bid, ...
    contributions: np.ndarray  # [n, f] bid units (value contribution / the served target ROI * pacing)
    feature_values: np.ndarray
    features: tuple[FeatureSpec, ...]


def load_window(conn: Connection, start_ts: int, end_ts: int, *, campaign_id: str | None = None,
                audience_package: str | None = None, model_version: str | None = None) -> WindowExplanations:
    """Decisions with bucket_ts in [start_ts, end_ts) and their stored explanations, in bid units:
    each divided by the target ROI it was served with (`served_formula`). Decisions whose formula
    was never recorded (explained before it was kept, by an unregistered bidder) are scaled by their
    campaign's target ROI instead and marked `formula_recorded` False, so a view can say so.

    A window spans one feature layout: with several model versions in it, pass
    `model_version` (their dictionaries may differ); otherwise they must share it.
    """
    d, e, c = s.decisions, s.explanations, s.campaigns
    query = (select(d.c.decision_id, d.c.campaign_id, d.c.audience_package, d.c.bucket_ts, d.c.model_version,
                    d.c.bid, d.c.model_bid, d.c.pacing, d.c.pred_value, d.c.pred_roi, d.c.decided_by,
                    e.c.target_roi, c.c.target_roi.label("campaign_target_roi"), e.c.contributions,
                    e.c.feature_values)
             .join(e, e.c.decision_id == d.c.decision_id)
             .join(c, c.c.campaign_id == d.c.campaign_id)
             .where(d.c.bucket_ts >= start_ts, d.c.bucket_ts < end_ts)
             .order_by(d.c.bucket_ts, d.c.decision_id))
    if campaign_id is not None:
        query = query.where(d.c.campaign_id == campaign_id)
    if audience_package is not None:
        query = query.where(d.c.audience_package == audience_package)
    if model_version is not None:
        query = query.where(e.c.model_version == model_version)
    frame = pd.DataFrame(conn.execute(query).mappings().all())
    if not frame.empty:
        unrecorded = frame["target_roi"].isna()
        for version in frame.loc[unrecorded, "model_version"].unique():
            formula = bid_formula(conn, version)
            if formula is not None:
                frame.loc[unrecorded & (frame["model_version"] == version), "target_roi"] = formula.target_roi
        frame["formula_recorded"] = frame["target_roi"].notna()
        frame["target_roi"] = frame["target_roi"].fillna(frame.pop("campaign_target_roi"))
    if frame.empty:
        return WindowExplanations(frame, np.zeros((0, 0)), np.zeros((0, 0)), ())
    versions = sorted(frame["model_version"].unique())
    blobs = frame.pop("contributions").tolist()
    widths = {len(b) for b in blobs}
    features = [_features_or_generic(conn, v, max(widths) // 4) for v in versions]
    if len(widths) > 1 or any(f != features[0] for f in features):
        raise ValueError(f"window mixes model versions {versions} with different features; pass model_version")
    raw = np.vstack([np.frombuffer(b, dtype=np.float32) for b in blobs])
    values = np.vstack([np.frombuffer(b, dtype=np.float32) for b in frame.pop("feature_values")])
    bid_units = to_bid_units(raw, frame["target_roi"].to_numpy(float), frame["pacing"].to_numpy(float))
    return WindowExplanations(frame, bid_units, values.astype(np.float64), features[0])
