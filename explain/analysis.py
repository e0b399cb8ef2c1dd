"""Why did it change, and what drives a window: pure functions over explanation arrays.

Inputs are contributions already in bid units (see `explain.bid_units.to_bid_units`)
or any other unit the caller chose; outputs are tidy frames ranked by size, which
`explain.charts` draws and `explain.reasons` puts into words.

- `diff_steps`: two decisions (same slot at two times, or two slots), step by step;
  deltas sum to the change of the served bid.
- `diff_windows`: mean contribution per feature in two windows, ranked by change.
- `importance`, `importance_by_segment`, `strip_frame`, `dependence_frame`: global views.
- `attribution_drift`: which features' contributions moved between a reference
  window and now, with a z score so noise is not flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from explain.artifacts import FeatureSpec
from explain.bid_units import Step

DEFAULT_SAMPLE = 5_000      # points drawn in strip/dependence charts
DRIFT_Z = 4.0               # |z| above this is a real shift, not noise (24 features: few false alarms)
DRIFT_MIN_SHIFT = 0.01      # and the mean contribution moved at least this much (yuan per click)


def _rank(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    order = frame[by].abs().sort_values(ascending=False, kind="stable").index
    ranked = frame.loc[order].reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked


def diff_steps(before: Sequence[Step], after: Sequence[Step]) -> pd.DataFrame:
    """Step-by-step difference of two decompositions, ranked by |delta|.

    Steps are matched by (kind, name); a step present on one side only counts as
    0 on the other. The deltas sum to after's total minus before's total.
    """
    def table(steps):
        return {(s.kind, s.name): s for s in steps}

    a, b = table(before), table(after)
    keys = list(a) + [k for k in b if k not in a]
    rows = []
    for key in keys:
        sa, sb = a.get(key), b.get(key)
        ref = sb or sa
        rows.append({
            "kind": key[0], "name": key[1], "label_zh": ref.label_zh, "label_en": ref.label_en,
            "before": sa.value if sa else 0.0, "after": sb.value if sb else 0.0,
            "value_before": sa.feature_value if sa else None, "value_after": sb.feature_value if sb else None,
        })
    frame = pd.DataFrame(rows)
    frame["delta"] = frame["after"] - frame["before"]
    return _rank(frame, "delta")


def _names(features: Sequence[FeatureSpec]) -> tuple[list[str], list[str], list[str]]:
    return [f.name for f in features], [f.display_zh for f in features], [f.display_en for f in features]


def _feature_frame(features: Sequence[FeatureSpec], **columns) -> pd.DataFrame:
    names, zh, en = _names(features)
    return pd.DataFrame({"feature": names, "label_zh": zh, "label_en": en, **columns})


def diff_windows(reference: np.ndarray, current: np.ndarray, features: Sequence[FeatureSpec]) -> pd.DataFrame:
    """Mean contribution per feature in two windows ([n, f] each), ranked by |change|."""
    before = np.asarray(reference, dtype=np.float64).mean(axis=0)
    after = np.asarray(current, dtype=np.float64).mean(axis=0)
    frame = _feature_frame(features, before=before, after=after, delta=after - before)
    return _rank(frame, "delta")


def importance(contributions: np.ndarray, features: Sequence[FeatureSpec]) -> pd.DataFrame:
    """Mean |contribution| per feature over a window, ranked (the global driver ranking)."""
    c = np.asarray(contributions, dtype=np.float64)
    frame = _feature_frame(features, mean_abs=np.abs(c).mean(axis=0), mean=c.mean(axis=0))
    return _rank(frame, "mean_abs")


def importance_by_segment(contributions: np.ndarray, features: Sequence[FeatureSpec],
                          segments: Sequence[str]) -> pd.DataFrame:
    """Mean |contribution| per (segment, feature), e.g. segments = campaign or audience package per row."""
    c = np.abs(np.asarray(contributions, dtype=np.float64))
    names, _, _ = _names(features)
    wide = pd.DataFrame(c, columns=names).groupby(np.asarray(segments), sort=True).mean()
    long = wide.rename_axis("segment").reset_index().melt(id_vars="segment", var_name="feature",
                                                          value_name="mean_abs")
    labels = {f.name: (f.display_zh, f.display_en) for f in features}
    long["label_zh"] = long["feature"].map(lambda n: labels[n][0])
    long["label_en"] = long["feature"].map(lambda n: labels[n][1])
    return long.sort_values(["segment", "mean_abs"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _sample_rows(n: int, sample: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))


def _value_percentile(values: np.ndarray) -> np.ndarray:
    """Per-feature percentile rank of each value in [0, 1] (the beeswarm's colour)."""
    ranks = pd.DataFrame(values).rank(pct=True).to_numpy()
    return np.nan_to_num(ranks, nan=0.5)


def strip_frame(contributions: np.ndarray, values: np.ndarray, features: Sequence[FeatureSpec],
                rng: np.random.Generator, *, sample: int = DEFAULT_SAMPLE,
                segments: Sequence[str] | None = None, top: int | None = None) -> pd.DataFrame:
    """Long frame for a strip/beeswarm chart: one row per (sampled decision, feature).

    Columns: row, feature, label_zh, label_en, contribution, value, value_pct, segment,
    plus `sample_size` and `total_rows` so the chart can say it is sampled.
    """
    c = np.asarray(contributions, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    rows = _sample_rows(len(c), sample, rng)
    keep = list(range(len(features)))
    if top is not None:
        keep = list(np.argsort(-np.abs(c).mean(axis=0), kind="stable")[:top])
    pct = _value_percentile(x[rows])
    parts = []
    for j in keep:
        f = features[j]
        parts.append(pd.DataFrame({
            "row": rows, "feature": f.name, "label_zh": f.display_zh, "label_en": f.display_en,
            "contribution": c[rows, j], "value": x[rows, j], "value_pct": pct[:, j],
            "segment": np.asarray(segments, dtype=object)[rows] if segments is not None else "",
        }))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame["sample_size"] = len(rows)
    frame["total_rows"] = len(c)
    return frame


def dependence_frame(contributions: np.ndarray, values: np.ndarray, features: Sequence[FeatureSpec],
                     feature: str, rng: np.random.Generator, *, sample: int = DEFAULT_SAMPLE,
                     segments: Sequence[str] | None = None) -> pd.DataFrame:
    """One feature's value against its contribution (sampled), with segment and sample size."""
    names = [f.name for f in features]
    if feature not in names:
        raise KeyError(f"no feature {feature!r}; known: {names}")
    j = names.index(feature)
    frame = strip_frame(np.asarray(contributions)[:, [j]], np.asarray(values)[:, [j]], [features[j]], rng,
                        sample=sample, segments=segments)
    return frame


def attribution_drift(reference: np.ndarray, current: np.ndarray, features: Sequence[FeatureSpec], *,
                      z_threshold: float = DRIFT_Z, min_shift: float = DRIFT_MIN_SHIFT) -> pd.DataFrame:
    """Which features' contributions moved between a reference window and now.

    Per feature: the shift of the mean contribution, its z score (Welch), the change
    of mean |contribution|; `drifted` when |z| > z_threshold and |shift| >= min_shift.
    Ranked by |shift|.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if len(ref) < 2 or len(cur) < 2:
        raise ValueError(f"drift needs at least 2 decisions per window, got {len(ref)} and {len(cur)}")
    shift = cur.mean(axis=0) - ref.mean(axis=0)
    se = np.sqrt(ref.var(axis=0, ddof=1) / len(ref) + cur.var(axis=0, ddof=1) / len(cur))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, shift / se, np.where(shift == 0, 0.0, np.inf * np.sign(shift)))
    frame = _feature_frame(
        features, mean_ref=ref.mean(axis=0), mean_now=cur.mean(axis=0), shift=shift, z=z,
        mean_abs_ref=np.abs(ref).mean(axis=0), mean_abs_now=np.abs(cur).mean(axis=0))
    frame["drifted"] = (np.abs(z) > z_threshold) & (np.abs(shift) >= min_shift)
    frame["n_ref"] = len(ref)
    frame["n_now"] = len(cur)
    return _rank(frame, "shift")
