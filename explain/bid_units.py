"""Decisions in bid units: steps that add up exactly to what was served.

The bid model predicts value per click (yuan of GMV per click) and the bidder
bids (control.domain.BidFormula, recorded with each explained decision)

    bid = clip(pred_value / target_roi * pacing, min_bid, max_bid)

A path-dependent SHAP explanation splits pred_value into base + sum(phi_i)
(yuan of value per click). `decompose_bid` turns that into steps in yuan per
click of bid, in serving order, whose running total ends at the served bid:

    base       base / target_roi                 (the model's average bid at pacing 1)
    feature i  phi_i / target_roi                (one step per feature)
    rounding   (pred_value - base - sum phi) / target_roi   (float32 storage; ~1e-7)
    floor      the same difference when the bidder floored a negative model output at 0
    pacing     unpaced * (pacing - 1)            (unpaced = pred_value / target_roi; none at pacing 1)
    cap        clip(paced) - paced               (min-bid floor or max-bid cap of the formula)
    rounding   model_bid - clip(paced)           (the bidder rounded its bid, at most half a cent)
    rule_pool / guard / override   served - model_bid   (when the served bid did not come from the model:
               the rule pool, a guard's bid cut (a pause: a step of 0, the package is off), an override)

The recorded model bid must be the formula's: a decision the formula does not
give is refused (InvalidValue naming model_bid), never explained with an
invented step.

With `pacing_as_step=False` the pacing multiplier is folded into base and
features (phi_i / target_roi * pacing) and there is no pacing step; the sum is
the same. Steps sum to the served bid to float rounding (well under 1e-6 yuan).

Budget-share and audience on/off decisions are driven by the predicted ROI;
`decompose_roi_decision` splits pred_roi into the same base + feature steps in
ROI units (pred_roi is value per click over cost per click, so each yuan of value
per click is worth pred_roi / pred_value of ROI) and ends with the comparison
against the floor or allocation reference that made the decision.

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from control.domain import BidFormula, DecidedBy, InvalidValue, require_finite
from explain.artifacts import FeatureSpec

STEP_KINDS = ("base", "feature", "rounding", "floor", "pacing", "cap", "rule_pool", "guard", "override",
              "threshold")
# A stored explanation that misses the decision's pred_value by more than this (relative)
# belongs to another model or another row: refuse rather than show a wrong waterfall.
MISMATCH_TOLERANCE = 1e-4
# Bidders round their bids (to the cent, say): up to this much (yuan) between the formula's bid and
# the recorded model bid is that rounding; more means the decision was not made with the formula.
BID_ROUNDING = 0.005


@dataclass(frozen=True, slots=True)
class Step:
    kind: str            # one of STEP_KINDS
    name: str            # feature name, rule id, override ids, or the kind
    label_zh: str
    label_en: str
    value: float         # what this step adds (yuan per click of bid, or ROI units)
    total: float         # running total after this step
    feature_value: float | None = None

    def label(self, lang: str) -> str:
        return self.label_zh if lang == "zh" else self.label_en


@dataclass(frozen=True, slots=True)
class BidContext:
    """What the bid formula and the effective policy did to the model's value for one decision."""

    formula: BidFormula
    pacing: float
    served_bid: float
    decided_by: DecidedBy = DecidedBy.MODEL
    model_bid: float | None = None   # the model's bid as recorded: checked against the formula
    reason: str = ""                 # decided_reason: why the pool or the guard decided
    rule_id: str | None = None
    override_ids: tuple[int, ...] = ()

    def __post_init__(self):
        require_finite("pacing", self.pacing)
        require_finite("served_bid", self.served_bid)
        if DecidedBy(self.decided_by) is DecidedBy.OVERRIDE and not self.override_ids:
            raise InvalidValue("override_ids", self.override_ids, "an override decision names its override")


def context_from_decision(decision: Mapping, formula: BidFormula) -> BidContext:
    """The BidContext of a stored decision row (columns of the `decisions` table) under the bid
    formula it was served with. Override ids come from decided_reason ("override:3,4"); a rule pool
    rule from a `rule_id` column or a "rule:<id>" token in decided_reason, when the bidder said it."""
    reason = str(decision.get("decided_reason") or "")
    tokens = dict(t.split(":", 1) for t in reason.split(";") if ":" in t)
    override_ids = tuple(int(i) for i in tokens.get("override", "").split(",") if i.strip())
    return BidContext(formula=formula, pacing=float(decision.get("pacing", 1.0)), served_bid=float(decision["bid"]),
                      decided_by=DecidedBy(decision["decided_by"]), model_bid=float(decision["model_bid"]),
                      reason=reason, rule_id=decision.get("rule_id") or tokens.get("rule"),
                      override_ids=override_ids)


def model_bid(pred_value: float, ctx: BidContext) -> float:
    """The bid formula: clip(pred_value / target_roi * pacing, min_bid, max_bid)."""
    return ctx.formula.bid(pred_value, ctx.pacing)


def to_bid_units(contributions: np.ndarray, target_roi: float | np.ndarray,
                 pacing: float | np.ndarray = 1.0) -> np.ndarray:
    """Contributions in yuan of value per click -> yuan per click of bid (rows broadcast)."""
    scale = np.asarray(pacing, dtype=np.float64) / np.asarray(target_roi, dtype=np.float64)
    return np.asarray(contributions, dtype=np.float64) * (scale[:, None] if scale.ndim else scale)


def _checked_residual(base: float, contributions: np.ndarray, pred_value: float | None) -> float:
    explained = base + float(np.sum(contributions, dtype=np.float64))
    if pred_value is None:
        return 0.0
    residual = pred_value - explained
    if pred_value == 0.0 and explained < 0.0:  # the bidder floors a negative value at 0
        return residual
    if abs(residual) > MISMATCH_TOLERANCE * max(1.0, abs(pred_value)):
        raise InvalidValue("pred_value", pred_value,
                           f"the explanation adds up to {explained:.6f}, not the decision's value: "
                           "another model version or another row")
    return residual


class _Steps:
    """Accumulates steps with their running total."""

    def __init__(self):
        self.steps: list[Step] = []
        self.total = 0.0

    def add(self, kind: str, name: str, zh: str, en: str, value: float, feature_value: float | None = None):
        self.total += value
        self.steps.append(Step(kind, name, zh, en, float(value), self.total, feature_value))

    def add_features(self, features: Sequence[FeatureSpec], values: np.ndarray, scaled: np.ndarray):
        for spec, x, phi in zip(features, values, scaled):
            self.add("feature", spec.name, spec.display_zh, spec.display_en, float(phi), float(x))


def _add_residual(s: _Steps, value: float, pred_value: float | None) -> None:
    if pred_value == 0.0 and value > 0:
        s.add("floor", "value_floor", "预测价值下限 0", "predicted value floored at 0", value)
    else:
        s.add("rounding", "rounding", "存储舍入", "storage rounding", value)


def _check_lengths(features: Sequence[FeatureSpec], contributions: np.ndarray, values: np.ndarray) -> None:
    if not (len(features) == len(contributions) == len(values)):
        raise ValueError(f"features ({len(features)}), contributions ({len(contributions)}) and "
                         f"feature values ({len(values)}) must have one entry per feature")


def decompose_bid(base_value: float, contributions: np.ndarray, features: Sequence[FeatureSpec],
                  feature_values: np.ndarray, ctx: BidContext, *, pred_value: float | None = None,
                  pacing_as_step: bool = True) -> list[Step]:
    """Steps from nothing to the served bid, in yuan per click (see the module docstring).

    `pred_value` is the decision's recorded model output; give it when the
    contributions come from float32 storage, so the rounding is its own step
    and a mismatched explanation is refused.
    """
    contributions = np.asarray(contributions, dtype=np.float64)
    values = np.asarray(feature_values, dtype=np.float64)
    _check_lengths(features, contributions, values)
    residual = _checked_residual(base_value, contributions, pred_value)
    value = base_value + float(np.sum(contributions)) + residual
    formula = ctx.formula
    scale = 1.0 / formula.target_roi * (1.0 if pacing_as_step else ctx.pacing)
    unpaced = value / formula.target_roi
    paced = unpaced * ctx.pacing
    capped = formula.bid(value, ctx.pacing)

    s = _Steps()
    s.add("base", "base", "模型基准出价", "model base bid", base_value * scale)
    s.add_features(features, values, contributions * scale)
    if residual:
        _add_residual(s, residual * scale, pred_value)
    if pacing_as_step and ctx.pacing != 1.0:
        s.add("pacing", "pacing", f"节奏系数 ×{ctx.pacing:.3g}", f"pacing ×{ctx.pacing:.3g}", paced - unpaced)
    if capped != paced:
        floor = paced < formula.min_bid
        s.add("cap", "min_bid" if floor else "max_bid",
              f"最低出价 {formula.min_bid:.2f} 元" if floor else f"最高出价 {formula.max_bid:.2f} 元",
              f"min bid ¥{formula.min_bid:.2f}" if floor else f"max bid ¥{formula.max_bid:.2f}", capped - paced)
    model = _recorded_model_bid(s, ctx, capped)
    served = ctx.served_bid
    decided_by = DecidedBy(ctx.decided_by)
    if decided_by is DecidedBy.RULE_POOL:
        why_zh, why_en = _pool_why(ctx)
        s.add("rule_pool", ctx.rule_id or "rule_pool", f"人工规则池出价（{why_zh}）", f"manual rule pool bid ({why_en})",
              served - model)
    elif decided_by is DecidedBy.GUARD:
        if served != model:
            factor = served / model if model else 1.0
            s.add("guard", "bid_cut", f"守护降价 ×{factor:.2f}", f"guard bid cut ×{factor:.2f}", served - model)
        else:  # a pause switches the package off; the bid itself stands
            s.add("guard", "pause", "守护暂停：人群包关闭", "guard pause: audience package off", 0.0)
    elif decided_by is DecidedBy.OVERRIDE:
        ids = ",".join(f"#{i}" for i in ctx.override_ids)
        s.add("override", ids, f"人工干预 {ids}", f"override {ids}", served - model)
    elif abs(served - model) > 1e-9 * max(1.0, abs(model)):
        raise InvalidValue("served_bid", served, f"decided by the model but the model's bid is {model:.6f}")
    return s.steps


def _recorded_model_bid(s: _Steps, ctx: BidContext, capped: float) -> float:
    """The model's bid as the decision recorded it, checked against the formula: a bidder's rounding
    (to the cent) is its own step; a larger gap means the formula is not the one that bid."""
    recorded = ctx.model_bid
    if recorded is None or abs(recorded - capped) <= 1e-9 * max(1.0, abs(capped)):
        return capped
    f = ctx.formula
    if abs(recorded - capped) > BID_ROUNDING:
        cap = "no cap" if f.max_bid is None else f"max {f.max_bid:g}"
        raise InvalidValue("model_bid", recorded,
                           f"the recorded bid formula (target ROI {f.target_roi:g}, min {f.min_bid:g}, {cap}) "
                           f"gives {capped:.4f}: the decision was not made with it")
    s.add("rounding", "bid_rounding", "出价取整", "bid rounding", recorded - capped)
    return recorded


# Why the rule pool decided, from decided_reason ("kill_switch", "guard:<mode>[:<action>]").
_POOL_WHY = {"kill_switch": ("熔断开关已开启", "kill switch on"), "tripped": ("守护熔断中", "guard tripped"),
             "probation": ("守护观察期", "guard probation"), "forced_pool": ("主管强制规则池", "forced by a manager")}


def _pool_why(ctx: BidContext) -> tuple[str, str]:
    tokens = ctx.reason.split(";")[0].split(":")
    key = tokens[0] if tokens[0] == "kill_switch" else (tokens[1] if len(tokens) > 1 else "")
    zh, en = _POOL_WHY.get(key, ("守护接管", "guard holds the campaign"))
    if ctx.rule_id:
        zh, en = f"{zh}，规则 {ctx.rule_id}", f"{en}, rule {ctx.rule_id}"
    return zh, en


def decompose_roi_decision(base_value: float, contributions: np.ndarray, features: Sequence[FeatureSpec],
                           feature_values: np.ndarray, *, pred_value: float, pred_roi: float,
                           reference: float, reference_zh: str, reference_en: str) -> list[Step]:
    """Predicted ROI split into base + features (ROI units), then minus the reference that decided.

    The last step's total is pred_roi - reference: >= 0 means the audience package
    stays on / the slot gets budget under a floor rule. `reference` is the ROI floor
    (audience on/off) or the allocation rule's reference ROI (budget share).
    """
    contributions = np.asarray(contributions, dtype=np.float64)
    values = np.asarray(feature_values, dtype=np.float64)
    _check_lengths(features, contributions, values)
    require_finite("pred_roi", pred_roi)
    require_finite("reference", reference, minimum=None)
    if pred_value <= 0:
        raise InvalidValue("pred_value", pred_value, "must be > 0 to express contributions in ROI")
    residual = _checked_residual(base_value, contributions, pred_value)
    k = pred_roi / pred_value  # ROI per yuan of value per click, at the decision's cost per click
    s = _Steps()
    s.add("base", "base", "模型基准 ROI", "model base ROI", base_value * k)
    s.add_features(features, values, contributions * k)
    if residual:
        _add_residual(s, residual * k, pred_value)
    s.add("threshold", "reference", reference_zh, reference_en, -reference)
    return s.steps


def steps_frame(steps: Sequence[Step]) -> pd.DataFrame:
    """The steps as a tidy frame (one row per step, in order, with `start` for waterfalls)."""
    frame = pd.DataFrame([asdict(s) for s in steps],
                         columns=["kind", "name", "label_zh", "label_en", "value", "total", "feature_value"])
    frame.insert(0, "order", range(len(frame)))
    frame["start"] = frame["total"] - frame["value"]
    return frame
