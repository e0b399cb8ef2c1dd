"""The ROI guard: takes a campaign from the model when its ROI falls below the floor, and chooses what
to do with the traffic instead (docs/GUARDS.md explains the method and its figures).

Trip rules, in MODEL (any fires):

- `cusum` (sequential evidence, guards.sequential): the realised GMV known of each bucket, as
  the conversion lag lets it arrive, is weighed against the floor by a CUSUM in bucket time of
  the log-likelihood ratio of ROI = floor x (1 - b) (a few b: cusum_below) against
  floor x (1 + cusum_above), compound Poisson; it trips when the evidence reaches
  `cusum_threshold`. Evidence adds up over the buckets since the fall instead of a fixed
  window being re-tested every minute.
- `model_calibration` (borrowed strength): the model over-promises everywhere. Pooled over every
  campaign the model serves, k = GMV / the value it predicted for the clicks; the upper end of its
  `calibration_confidence` bound scales the predicted ROI of the clicks this campaign bought. Small
  campaigns, whose own evidence takes hours, are caught by the pool's.
- `pred_roi` (the seed rule, `pred_enabled`): the model's own plan predicts ROI below the floor,
  `consecutive` evaluations in a row, with spend at risk.

None of them trips on a point estimate: the CUSUM needs its likelihood ratio, the pooled rule a
bound, and the plan's own prediction is the model saying so itself.

**What a trip does** (`action_choice`): "profit" picks, by expected profit per hour from the
evidence (spend rate x (ROI x gross margin - 1)), between the rule pool (its shadow score,
corrected by how far the model's value predictions are off, or its realised ROI once it has
served), a bid cut to the level at which the model's corrected prediction meets the floor (降价),
and a pause; a fixed choice always takes that action. While tripped, once the action has served for
`action_review_s` (the realised window then holds only its own outcomes), an action whose realised ROI
is significantly below the floor (the upper end of a `calibration_confidence` bound: the pool is no
better) gives way to the next best.

**Probation** passes when the lower end of a `restore_confidence` bound of the model's calibrated
ROI (its plan's predicted ROI x the campaign's value calibration over mature outcomes, at most the
pooled model-wide upper bound, itself at most 1) is at least floor + hysteresis, and fails when the
upper end of a `calibration_confidence` bound is below the floor: a restore needs evidence, and a
canary still losing money is sent back at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from statistics import NormalDist

import numpy as np

from control.domain import GuardAction, GuardMode
from guards.config import GuardSettings, RoiConfig
from guards.machine import Check, LazyFigures, MachineState, Signal, step
from guards.observe import Observation, Sequential

GUARD = "roi"
_CHOSEN = {"pool": GuardAction.POOL, "bid_cut": GuardAction.BID_CUT, "pause": GuardAction.PAUSE}


@functools.lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)  # the tick asks per campaign: computed once per level


def poisson_upper(n: float, confidence: float) -> float:
    """One-sided upper confidence bound of a Poisson mean, having seen n events (Wilson-Hilferty)."""
    z = _z(confidence)
    k = n + 1.0
    return k * (1.0 - 1.0 / (9.0 * k) + z / (3.0 * math.sqrt(k))) ** 3


def poisson_lower(n: float, confidence: float) -> float:
    """One-sided lower confidence bound of a Poisson mean, having seen n events (0 for none)."""
    if n <= 0:
        return 0.0
    z = _z(confidence)
    return max(0.0, n * (1.0 - 1.0 / (9.0 * n) - z / (3.0 * math.sqrt(n))) ** 3)


def effective_orders(n: float, order_value_cv: float) -> float:
    """Orders as Poisson events: GMV is a sum of a Poisson number of orders of varying value
    (compound Poisson), whose variance is that of n / (1 + cv^2) orders of one value."""
    return n / (1.0 + order_value_cv * order_value_cv)


def sequential_for(settings: GuardSettings, campaign_ids: list[str]) -> Sequential:
    """The sequential evidence's settings for a tick: each campaign's floor, the CUSUM's own (global)."""
    roi = settings.defaults["roi"]
    floors = np.array([settings.for_campaign(GUARD, c).floor for c in campaign_ids], dtype=np.float64)
    return Sequential(floors, roi.cusum_above, roi.cusum_below, roi.cusum_window_s, roi.order_value_cv)


def realised_upper(obs: Observation, config: RoiConfig, confidence: float) -> float:
    """Upper confidence bound of the realised ROI over the mature window (NaN without mature spend)."""
    if not obs.realised_spend > 0:
        return math.nan
    n = effective_orders(obs.realised_orders, config.order_value_cv)
    if n > 0:
        return obs.realised_roi * poisson_upper(n, confidence) / n
    return poisson_upper(0.0, confidence) * obs.avg_order_value / obs.realised_spend


def own_calibration(obs: Observation, config: RoiConfig) -> float:
    """The campaign's value calibration over mature outcomes (GMV known / the value the model predicted for
    the clicks, lag-corrected); NaN without enough mature spend."""
    k = obs.value_calibration
    return k if obs.realised_spend >= config.realised_min_spend and k == k else math.nan


def campaign_calibration(obs: Observation, config: RoiConfig, confidence: float) -> tuple[float, float, float]:
    """(k, lower, upper): the campaign's own calibration and its one-sided bounds at `confidence`."""
    k = own_calibration(obs, config)
    if k != k:
        return math.nan, math.nan, math.nan
    n = effective_orders(obs.realised_orders, config.order_value_cv)
    if n <= 0:
        return k, 0.0, poisson_upper(0.0, confidence) * obs.avg_order_value / max(obs.realised_spend, 1e-9)
    return k, k * poisson_lower(n, confidence) / n, k * poisson_upper(n, confidence) / n


def calibration_upper(obs: Observation, config: RoiConfig) -> float:
    """Upper confidence bound of the model-wide calibration k, at most 1 (NaN: too little evidence)."""
    n = obs.model_calibration_orders
    if not (n >= config.calibration_min_orders and math.isfinite(obs.model_calibration)):
        return math.nan
    n = effective_orders(n, config.order_value_cv)
    return min(1.0, obs.model_calibration * poisson_upper(n, config.calibration_confidence) / n)


def calibrated_bought_roi(figures: Mapping[str, float]) -> float | None:
    """From a signal's figures: the predicted ROI of the clicks bought, calibrated by the pooled k
    (its point estimate) -- what a model_calibration trip says the campaign really makes."""
    bought, k = figures.get("bought_pred_roi"), figures.get("model_calibration")
    if bought is None or k is None or bought != bought or k != k:
        return None
    return bought * min(1.0, k)


def best_calibration(obs: Observation, config: RoiConfig) -> float:
    """The point estimate of how far the model's value predictions are off for this campaign: its own
    when it has the evidence, else the pooled one, else none (1)."""
    k = own_calibration(obs, config)
    if k == k:
        return k
    pooled = obs.model_calibration
    return pooled if pooled == pooled and obs.model_calibration_orders >= config.calibration_min_orders else 1.0


def model_roi_estimate(obs: Observation, config: RoiConfig, below_floor: bool, k: float) -> float:
    """The model's ROI as the evidence has it: its predicted ROI of the clicks bought x `k`, how far its
    value predictions are off (best_calibration). When a rule has just shown it below the floor, at most
    the floor x (1 - the smallest fall the sequential evidence weighs): the estimate may not contradict
    the evidence."""
    bought = obs.bought_pred_roi if obs.bought_pred_roi == obs.bought_pred_roi else obs.pred_roi
    roi = k * bought if bought == bought else math.nan
    if below_floor and roi == roi:
        roi = min(roi, config.floor * (1.0 - min(config.cusum_below)))
    return roi


def action_values(obs: Observation, config: RoiConfig, state: MachineState,
                  below_floor: bool = False) -> dict[str, tuple[float, float, float]]:
    """Per action: (expected ROI, expected spend per hour, expected profit per hour), from the evidence.

    The model's ROI is its predicted ROI of the clicks it bought x the calibration; the pool's is its
    shadow score x the calibration, or its realised ROI once it has served the campaign; a bid cut by
    factor f pays f times less per click for the same value (ROI / f: the floor at the cut's own
    factor) and its spend falls with f^2 (fewer auctions won, each cheaper); a pause earns and spends
    nothing."""
    k = best_calibration(obs, config)
    model_roi = model_roi_estimate(obs, config, below_floor, k)
    spend = obs.spend_per_hour if obs.spend_per_hour == obs.spend_per_hour else 0.0
    margin = obs.gross_margin if obs.gross_margin == obs.gross_margin else 0.0
    pool_roi, pool_spend = math.nan, 0.0
    if obs.pool_pred_roi == obs.pool_pred_roi and obs.pred_roi == obs.pred_roi and obs.pool_pred_roi > 0:
        pool_roi = k * obs.pool_pred_roi
        pool_spend = spend * min(4.0, (obs.pred_roi / obs.pool_pred_roi) ** 2)  # bid ratio = pred / pool ROI
    served_pool = state.mode is GuardMode.TRIPPED and state.action is GuardAction.POOL
    if served_pool and obs.realised_spend >= config.realised_min_spend and obs.realised_roi == obs.realised_roi:
        pool_roi, pool_spend = obs.realised_roi, spend  # the pool's own outcomes on this campaign
    factor = min(1.0, max(config.min_bid_factor, model_roi / config.floor)) if model_roi == model_roi else 1.0
    cut_roi = model_roi / factor if model_roi == model_roi else math.nan
    cut_spend = spend * factor * factor
    values = {"model": (model_roi, spend), "pool": (pool_roi, pool_spend), "bid_cut": (cut_roi, cut_spend),
              "pause": (0.0, 0.0)}
    return {a: (roi, s, (s * (roi * margin - 1.0)) if roi == roi else -math.inf) for a, (roi, s) in values.items()}


def choose_action(obs: Observation, config: RoiConfig, state: MachineState,
                  excluded: GuardAction | None = None) -> tuple[GuardAction, float]:
    """(action, bid factor) a trip should take: the configured one, or the best expected profit among
    the pool, a bid cut and a pause (not `excluded`: the action found below the floor too)."""
    fixed = _CHOSEN.get(config.action_choice)
    values = action_values(obs, config, state, below_floor=True)
    model_roi = values["model"][0]
    factor = min(1.0, max(config.min_bid_factor, model_roi / config.floor)) if model_roi == model_roi else 1.0
    if fixed is not None and fixed is not excluded:
        return fixed, factor
    options = [a for a in (GuardAction.POOL, GuardAction.BID_CUT, GuardAction.PAUSE) if a is not excluded]
    best = max(options, key=lambda a: values[a.value][2])
    return best, factor


def roi_signal(obs: Observation, config: RoiConfig, state: MachineState) -> Signal:
    """The ROI guard's evidence for one campaign (module docstring)."""
    floor = config.floor
    held_by_model = state.mode is GuardMode.MODEL
    breached_cusum = obs.cusum >= config.cusum_threshold
    at_risk = obs.pred_spend >= config.min_pred_spend
    k, k_low, k_up = campaign_calibration(obs, config, config.restore_confidence)
    k_pool_up = calibration_upper(obs, config)
    checks: list[Check] = []
    healthy = None
    action, factor = None, 1.0
    if held_by_model:
        if config.pred_enabled:
            pred_breach = (obs.pred_roi < floor) if obs.pred_roi == obs.pred_roi and at_risk else None
            checks.append(Check("pred_roi", pred_breach, config.machine.consecutive))
        if config.cusum_enabled:
            checks.append(Check("cusum", breached_cusum, 1))
        if config.calibration_enabled:
            calibrated_breach = None
            if k_pool_up == k_pool_up and obs.bought_pred_roi == obs.bought_pred_roi and at_risk:
                # k_up = 1: no significant over-promise; the other rules judge the campaign itself.
                calibrated_breach = k_pool_up < 1.0 and obs.bought_pred_roi * k_pool_up < floor
            checks.append(Check("model_calibration", calibrated_breach, config.calibration_consecutive))
        if any(c.breached for c in checks):
            action, factor = choose_action(obs, config, state)
    elif state.mode is GuardMode.TRIPPED and state.action is not GuardAction.PAUSE \
            and obs.latest_bucket_ts is not None and obs.latest_bucket_ts - state.since_ts >= config.action_review_s \
            and realised_upper(obs, config, config.calibration_confidence) < floor:
        action, factor = choose_action(obs, config, state, excluded=state.action)  # what is served is no better
    elif state.mode is GuardMode.PROBATION and obs.pred_roi == obs.pred_roi and k == k:
        _, _, k_up_strict = campaign_calibration(obs, config, config.calibration_confidence)
        checks.append(Check("canary", obs.pred_roi * k_up_strict < floor, 1))
        # The campaign's own calibration is measured mostly on the clicks the pool bought while it held the
        # traffic; the model's own bids buy others. Where there is pooled evidence, the canary is worth at
        # most its upper bound (at most 1): while the model over-promises model-wide, a restore the
        # model_calibration rule would trip again at once is no restore.
        k_restore = min(k_low, k_pool_up) if k_pool_up == k_pool_up else k_low
        healthy = obs.pred_roi * k_restore >= floor + config.hysteresis

    def figures() -> dict[str, float]:
        values = action_values(obs, config, state)
        shown = {"floor": floor, "pred_roi": obs.pred_roi, "pred_spend": obs.pred_spend,
                 "spend_per_hour": obs.spend_per_hour, "realised_roi": obs.realised_roi,
                 "realised_spend": obs.realised_spend, "pool_pred_roi": obs.pool_pred_roi,
                 "value_calibration": obs.value_calibration, "calibration_low": k_low, "calibration_up": k_up,
                 "bought_pred_roi": obs.bought_pred_roi, "model_calibration": obs.model_calibration,
                 "model_calibration_upper": k_pool_up, "calibration_prior_share": obs.model_calibration_prior_share,
                 "cusum": obs.cusum, "cusum_threshold": config.cusum_threshold,
                 "calibrated_pred_roi": obs.pred_roi * k if k == k else math.nan,
                 **{f"{a}_expected_roi": v[0] for a, v in values.items() if a != "pause"},
                 **{f"{a}_expected_profit_per_hour": v[2] for a, v in values.items() if math.isfinite(v[2])}}
        if action is GuardAction.BID_CUT:
            shown["bid_factor"] = factor
        return shown

    return Signal(obs.latest_bucket_ts, tuple(checks), healthy, obs.data_age_s, LazyFigures(figures),
                  action=action, bid_factor=factor)


def transition(state: MachineState, observation: Observation, config: RoiConfig,
               now_ts: int) -> tuple[MachineState, list]:
    """The ROI guard's pure transition: (state, observation, config, now) -> (state, events)."""
    return step(state, roi_signal(observation, config, state), config.machine, now_ts,
                guard=GUARD, campaign_id=observation.campaign_id)
