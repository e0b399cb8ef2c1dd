"""The launch gate's verdict: what a model version's gate report found, judged against the thresholds a
manager sets (docs/LAUNCH.md has the reasoning and the figures).

Pure: the findings are measured elsewhere (app.gate: the stress arms, the calibration on held-out
history, the objective check) and handed in as frozen values; `verdict` returns pass, warn or fail
with every reason, each naming its figures, and `reason_text` says it in Chinese or English.

The gate's calibration becomes the guard's prior for the version (`calibration_prior`): a gamma prior
on the model-wide calibration k worth at most PRIOR_MAX_ORDERS effective orders (guards.observe).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from control.domain import InvalidValue

# The prior's weight, in effective orders, at most: about the pooled live evidence of the first five
# minutes of an 818-sized day (155 orders at minute 5, docs/GUARDS.md). Enough to arm the guard before
# live outcomes exist; live evidence counts as much within minutes and dominates within the hour.
PRIOR_MAX_ORDERS = 150.0


class Verdict(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_SEVERITY = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


@dataclass(frozen=True)
class GateThresholds:
    """What a gate report must show (manager-set; docs/LAUNCH.md, "Thresholds")."""

    roi_margin: float = 0.0                 # fail: a scenario's ROI below its floor + this
    max_extra_campaigns_below_floor: int = 2  # warn: this many more campaigns below the floor than the baseline
    max_profit_shortfall: float = 0.05      # warn: a scenario's profit short of the serving version's by more
    calibration_tolerance: float = 0.15     # fail: calibration's interval wholly outside 1 +- this
    calibration_min_orders: float = 100.0   # warn: held-out evidence thinner than this (effective orders)
    max_objective_share: float = 0.10       # fail: more of the bids than this at a predicted ROI below the floor
    require_stress: bool = True             # fail (else warn) when no scenario could be played

    def __post_init__(self):
        ranges = {"roi_margin": (-1.0, 10.0), "max_extra_campaigns_below_floor": (0, 10_000),
                  "max_profit_shortfall": (0.0, 10.0), "calibration_tolerance": (0.0, 1.0),
                  "calibration_min_orders": (0.0, 1e9), "max_objective_share": (0.0, 1.0)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            whole = name == "max_extra_campaigns_below_floor"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
                    or not math.isfinite(value):
                raise InvalidValue(f"gate_thresholds.{name}", value, "must be a whole number" if whole
                                   else "must be a finite number")
            if not low <= value <= high:
                raise InvalidValue(f"gate_thresholds.{name}", value, f"must be in [{low}, {high}]")
        if not isinstance(self.require_stress, bool):
            raise InvalidValue("gate_thresholds.require_stress", self.require_stress, "must be true or false")

    def as_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping | None) -> GateThresholds:
        """Thresholds from a stored or edited document; an unknown key is refused, naming it."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidValue(f"gate_thresholds.{key}", data[key], f"unknown; known: {sorted(known)}")
        return replace(cls(), **data)


@dataclass(frozen=True)
class ArmResult:
    """One arm of a stress scenario over the day (or the minutes played)."""

    roi: float | None
    profit: float
    campaigns_below_floor: int


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    seed: int
    floor: float
    version: ArmResult
    serving: ArmResult | None = None   # the serving version on the same seed (None: none serves, or unplayable)
    pool: ArmResult | None = None      # the manual rule pool alone on the same seed


@dataclass(frozen=True)
class CalibrationResult:
    """Realised GMV / the value the version predicted for the clicks of held-out history, with its
    two-sided interval and the effective orders behind it (None: no history to measure it on)."""

    k: float | None
    low: float | None
    high: float | None
    orders: float


@dataclass(frozen=True)
class ObjectiveResult:
    """The version's own bids in its stress arms: the share whose predicted ROI at the bid
    (pred_value / bid) is below the floor, and the same weighted by spend."""

    bids: int
    share_below_floor: float
    spend_share_below_floor: float


@dataclass(frozen=True)
class GateFindings:
    scenarios: tuple[ScenarioResult, ...] = ()
    stress_skipped: str = ""               # why the version could not be played (empty: it was)
    calibration: CalibrationResult | None = None
    objective: ObjectiveResult | None = None


@dataclass(frozen=True)
class Reason:
    code: str
    level: Verdict
    figures: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"code": self.code, "level": self.level.value, "figures": self.figures}

    @classmethod
    def from_json(cls, data: Mapping) -> Reason:
        return cls(data["code"], Verdict(data["level"]), dict(data.get("figures") or {}))


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def _scenario_reasons(s: ScenarioResult, t: GateThresholds) -> list[Reason]:
    out = []
    named = {"scenario": s.scenario, "seed": s.seed}
    if s.version.roi is not None and s.version.roi < s.floor + t.roi_margin:
        out.append(Reason("scenario_roi_below_floor", Verdict.FAIL,
                          {**named, "roi": _round(s.version.roi), "floor": s.floor + t.roi_margin}))
    baseline = s.serving if s.serving is not None else s.pool
    if baseline is not None:
        extra = s.version.campaigns_below_floor - baseline.campaigns_below_floor
        if extra > t.max_extra_campaigns_below_floor:
            out.append(Reason("campaigns_below_floor", Verdict.WARN,
                              {**named, "campaigns": s.version.campaigns_below_floor,
                               "baseline": baseline.campaigns_below_floor,
                               "baseline_arm": "serving" if s.serving is not None else "pool"}))
    if s.serving is not None:
        shortfall = s.serving.profit - s.version.profit
        if shortfall > t.max_profit_shortfall * abs(s.serving.profit):
            out.append(Reason("profit_below_serving", Verdict.WARN,
                              {**named, "profit": round(s.version.profit), "serving": round(s.serving.profit)}))
    return out


def _calibration_reasons(c: CalibrationResult | None, t: GateThresholds) -> list[Reason]:
    if c is None or c.k is None:
        return [Reason("calibration_not_measured", Verdict.WARN, {})]
    figures = {"k": _round(c.k), "low": _round(c.low), "high": _round(c.high), "orders": round(c.orders, 1),
               "tolerance": t.calibration_tolerance}
    if c.orders < t.calibration_min_orders:
        return [Reason("calibration_thin", Verdict.WARN, {**figures, "min_orders": t.calibration_min_orders})]
    low, high = 1.0 - t.calibration_tolerance, 1.0 + t.calibration_tolerance
    if c.high is not None and c.low is not None and (c.high < low or c.low > high):
        return [Reason("calibration_off", Verdict.FAIL, figures)]
    if not low <= c.k <= high:
        return [Reason("calibration_uncertain", Verdict.WARN, figures)]
    return []


def verdict(findings: GateFindings, thresholds: GateThresholds) -> tuple[Verdict, tuple[Reason, ...]]:
    """Pass, warn or fail, and every reason (the worst reason decides)."""
    reasons: list[Reason] = []
    if not findings.scenarios:
        reasons.append(Reason("stress_not_run", Verdict.FAIL if thresholds.require_stress else Verdict.WARN,
                              {"why": findings.stress_skipped}))
    for scenario in findings.scenarios:
        reasons += _scenario_reasons(scenario, thresholds)
    objective = findings.objective
    if objective is not None and objective.bids and objective.share_below_floor > thresholds.max_objective_share:
        reasons.append(Reason("objective_below_floor", Verdict.FAIL,
                              {"share": _round(objective.share_below_floor),
                               "spend_share": _round(objective.spend_share_below_floor),
                               "max_share": thresholds.max_objective_share}))
    reasons += _calibration_reasons(findings.calibration, thresholds)
    worst = max((r.level for r in reasons), key=_SEVERITY.__getitem__, default=Verdict.PASS)
    return worst, tuple(reasons)


def calibration_prior(calibration: CalibrationResult | None, max_orders: float = PRIOR_MAX_ORDERS) -> dict | None:
    """What the guard takes from the gate (models.meta["calibration_prior"], guards.observe): k with a
    weight of min(the held-out effective orders, max_orders). None without a measured calibration."""
    if calibration is None or calibration.k is None or not calibration.orders > 0 or not calibration.k > 0:
        return None
    return {"k": round(float(calibration.k), 6), "orders": round(min(float(calibration.orders), max_orders), 3)}


_TEXT = {
    "scenario_roi_below_floor": {
        "zh": "场景 {scenario}（种子 {seed}）的 ROI {roi} 低于底线 {floor}",
        "en": "scenario {scenario} (seed {seed}): ROI {roi} is below the floor {floor}"},
    "campaigns_below_floor": {
        "zh": "场景 {scenario}（种子 {seed}）有 {campaigns} 个计划低于底线，基线（{baseline_arm}）为 {baseline} 个",
        "en": "scenario {scenario} (seed {seed}): {campaigns} campaigns below the floor against {baseline} "
              "for the baseline ({baseline_arm})"},
    "profit_below_serving": {
        "zh": "场景 {scenario}（种子 {seed}）利润 {profit} 元，低于在线版本的 {serving} 元",
        "en": "scenario {scenario} (seed {seed}): profit {profit} yuan against {serving} for the serving version"},
    "stress_not_run": {
        "zh": "未能进行压力测试：{why}", "en": "not stress-tested: {why}"},
    "objective_below_floor": {
        "zh": "目标检查：{share:.0%} 的出价按模型自己的预测 ROI 低于底线（上限 {max_share:.0%}）；"
              "以 GMV 为目标的模型会出现在这里",
        "en": "objective check: {share:.0%} of its bids have its own predicted ROI at the bid below the floor "
              "(at most {max_share:.0%}); a GMV-maximising objective shows here"},
    "calibration_off": {
        "zh": "校准：实际/预测价值 {k}（区间 {low}–{high}），超出 1±{tolerance}",
        "en": "calibration: realised / predicted value {k} (interval {low}-{high}), outside 1 +- {tolerance}"},
    "calibration_uncertain": {
        "zh": "校准：实际/预测价值 {k} 超出 1±{tolerance}，但区间 {low}–{high} 仍包含允许范围",
        "en": "calibration: realised / predicted value {k} is outside 1 +- {tolerance}, but its interval "
              "{low}-{high} still reaches the allowed range"},
    "calibration_thin": {
        "zh": "校准证据不足：{orders} 个有效订单（至少 {min_orders}）",
        "en": "calibration evidence is thin: {orders} effective orders (at least {min_orders})"},
    "calibration_not_measured": {
        "zh": "校准未测量：存储中没有可用的留出历史数据",
        "en": "calibration not measured: no held-out history in the store"},
}


def reason_text(reason: Reason, lang: str) -> str:
    """The reason as a sentence in `lang` (zh or en)."""
    text = _TEXT.get(reason.code, {}).get(lang)
    if text is None:
        return f"{reason.code}: {reason.figures}"
    return text.format(**reason.figures)
