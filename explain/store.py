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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, insert, select

from explain.explainer import Explainer
from store import schema as s
from store.repo import ExplanationBatch

_CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True)
class StoredExplanation:
    decision_id: int
    model_version: str
    base_value: float
    contributions: np.ndarray   # float32 [features], model output units
    feature_values: np.ndarray  # float32 [features]

    @property
    def model_output(self) -> float:
        """base + contributions: the model's output for the decision, to float32 rounding."""
        return self.base_value + float(np.sum(self.contributions, dtype=np.float64))


def explanation_batch(explainer: Explainer, X: np.ndarray) -> ExplanationBatch:
    """Explain decision rows X for `store.repo.write_decisions(..., explanation=...)`."""
    base, contributions = explainer.explain(X)
    return ExplanationBatch(model_version=explainer.model_version,
                            base_value=np.full(len(contributions), base),
                            contributions=contributions.astype(np.float32),
                            feature_values=np.asarray(X, dtype=np.float32))


def _existing(conn: Connection, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = list(ids[i:i + _CHUNK])
        found.update(conn.execute(select(s.explanations.c.decision_id)
                                  .where(s.explanations.c.decision_id.in_(chunk))).scalars())
    return found


def save_explanations(conn: Connection, decision_ids: Sequence[int], model_version: str,
                      base: float | np.ndarray, contribs: np.ndarray, X: np.ndarray) -> int:
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
    rows = [{"decision_id": i, "model_version": model_version, "base_value": float(b),
             "contributions": c.tobytes(), "feature_values": v.tobytes()}
            for i, b, c, v in zip(ids, bases.tolist(), contribs, values) if i not in skip]
    if rows:
        conn.execute(insert(s.explanations), rows)
    return len(rows)


def _from_row(row) -> StoredExplanation:
    return StoredExplanation(decision_id=row.decision_id, model_version=row.model_version,
                             base_value=row.base_value,
                             contributions=np.frombuffer(row.contributions, dtype=np.float32),
                             feature_values=np.frombuffer(row.feature_values, dtype=np.float32))


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
